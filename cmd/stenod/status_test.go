//go:build linux

package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/api"
	"github.com/stenod/stenod/internal/demotap"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestStatusDemo runs the demo with AF_PACKET capture and generated traffic,
// as a newcomer would, and checks that stenod status reports it (method,
// packets, drops, retention) through the API named in its interface lock,
// that the demo's traffic, as captured and queried, is well formed:
// tshark's expert analysis finds nothing wrong with it, and that its
// /metrics pass promtool check metrics.
func TestStatusDemo(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	bin := buildStenod(t)
	work := reachableTempDir(t)
	sock := filepath.Join(work, "run", "demo.sock")
	cfg := filepath.Join(work, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"demo": {"captures": "generated"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := api.UnixTransport(sock)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	d := startStenod(t, bin, "run", "--demo", "--config", cfg, "--capture", "afpacket", "--spool", filepath.Join(work, "spool"),
		"--pin-root", bpffsDir(t, "stenod-status-test"), "--socket", sock)
	waitFor(t, d, "packets queryable", time.Minute, func() error {
		n, err := queryPacketsWith(client, "http://stenod", "tcp or udp")
		if err == nil && n < 500 {
			err = errors.New("fewer than 500 packets yet")
		}
		return err
	})

	out, err := exec.Command(bin, "status", demotap.HostIface).CombinedOutput()
	if err != nil {
		t.Fatalf("stenod status: %v\n%s", err, out)
	}
	// interface, sensor pid, method, packets, bytes, stored, dropped, lost, retention, API
	row := regexp.MustCompile(`(?m)^\s*` + demotap.HostIface + `\s+(\d+)\s+afpacket\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+unix:` + regexp.QuoteMeta(sock) + `\s*$`)
	m := row.FindStringSubmatch(string(out))
	if m == nil || !strings.Contains(string(out), "retention") {
		t.Fatalf("stenod status does not report the demo:\n%s", out)
	}
	if packets, _ := strconv.Atoi(m[2]); packets < 500 {
		t.Errorf("status reports %d packets:\n%s", packets, out)
	}
	if m[5] != "0" || m[6] != "0" {
		t.Errorf("status reports drops %s, lost %s:\n%s", m[5], m[6], out)
	}
	// --socket asks that sensor only; the pid is then unknown.
	out, err = exec.Command(bin, "status", "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), demotap.HostIface) || !strings.Contains(string(out), "afpacket") {
		t.Errorf("stenod status --socket: %v\n%s", err, out)
	}
	// An interface nobody captures is an error that says so.
	out, err = exec.Command(bin, "status", "eht9").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no running stenod found") {
		t.Errorf("stenod status eht9: %v\n%s", err, out)
	}

	// The generated traffic as captured is well formed.
	if _, err := exec.LookPath("tshark"); err == nil || testutil.InCI() {
		req, _ := http.NewRequest(http.MethodPost, "http://stenod/query", strings.NewReader("after 1970-01-01T00:00:00Z"))
		// The first pass of the loop only: a replayed packet would be a
		// retransmission to Wireshark.
		req.Header.Set(api.HeaderLimitPackets, "10000")
		pcap := mustDo(t, client, req)
		file := filepath.Join(work, "demo.pcap")
		if err := os.WriteFile(file, pcap, 0o644); err != nil {
			t.Fatal(err)
		}
		if p := testutil.WiresharkProblems(t, file); p != "" {
			t.Errorf("tshark finds problems in the demo's traffic:\n%s", p)
		}
	}
	// What a capturing sensor serves on /metrics passes promtool's checks,
	// the lint Prometheus's own tool runs.
	if _, err := exec.LookPath("promtool"); err == nil || testutil.InCI() {
		req, _ := http.NewRequest(http.MethodGet, "http://stenod/metrics", nil)
		body := mustDo(t, client, req)
		if !strings.Contains(string(body), "stenod_capture_") {
			t.Errorf("/metrics has no capture metrics:\n%s", body)
		}
		check := exec.Command("promtool", "check", "metrics")
		check.Stdin = strings.NewReader(string(body))
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	d.stop(t)
}

// mustDo sends req and returns the body of its 200 answer.
func mustDo(t *testing.T, client *http.Client, req *http.Request) []byte {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %v %s", req.Method, req.URL.Path, err, resp.Status)
	}
	return body
}
