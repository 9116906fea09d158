//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestHealthzDetached: /healthz says ok while the XDP program is attached
// (ip link cannot detach it: the kernel refuses) and 503, naming the interface, once someone else detached it (here
// with bpftool, through the pinned link): capture has silently stopped.
func TestHealthzDetached(t *testing.T) {
	testutil.RequireRoot(t)
	bpftool := testutil.RequireCommand(t, "bpftool")
	v := testutil.NewVeth(t)
	bin := buildStenod(t)
	listen := freePort(t)
	base := "http://" + listen
	pinRoot := bpffsDir(t, "stenod-health-test")
	d := startStenod(t, bin, "run", "--iface", v.Host, "--capture", "xdp", "--user", "",
		"--listen", listen, "--spool", filepath.Join(reachableTempDir(t), "spool"), "--pin-root", pinRoot)
	healthz := func() (int, string, error) {
		resp, err := httpClient.Get(base + "/healthz")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitFor(t, d, "/healthz ok", time.Minute, func() error {
		code, body, err := healthz()
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %q", code, body)
		}
		return err
	})
	// The kernel refuses to detach a program attached through a link
	// with netlink: ip link cannot stop capture.
	id := xdpProgID(t, v.Host)
	if out, err := exec.Command("ip", "link", "set", "dev", v.Host, "xdp", "off").CombinedOutput(); err == nil || xdpProgID(t, v.Host) != id {
		t.Errorf("ip link set dev %s xdp off: %v %s: detached the program", v.Host, err, out)
	}
	if code, body, err := healthz(); err != nil || code != http.StatusOK {
		t.Errorf("/healthz %d %q (%v) while the program is attached", code, body, err)
	}
	// Whoever holds the link (its pin, as root) can.
	if out, err := exec.Command(bpftool, "link", "detach", "pinned", filepath.Join(pinRoot, v.Host, "link")).CombinedOutput(); err != nil {
		t.Fatalf("bpftool link detach: %v\n%s", err, out)
	}
	if id := xdpProgID(t, v.Host); id != 0 {
		t.Fatalf("XDP program %d still attached", id)
	}
	code, body, err := healthz()
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, v.Host) || !strings.Contains(body, "detached") {
		t.Errorf("/healthz after the detach: %d %q (%v), want 503 naming %s", code, body, err, v.Host)
	}
	t.Logf("/healthz: %d %s", code, strings.TrimSpace(body))
	d.stop(t)
}
