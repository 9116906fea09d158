package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestIPFIXNfcapd replays the test captures into a veth that stenod
// captures with IPFIX export to nfcapd (nfdump's collector) on loopback,
// and checks with nfdump that every IP flow /v1/flows lists arrived with
// the same addresses, ports, protocol, VLAN, MPLS label, packet and octet
// counts and first and last times (to nfdump's millisecond).
func TestIPFIXNfcapd(t *testing.T) {
	testutil.RequireRoot(t)
	nfcapd := testutil.RequireCommand(t, "nfcapd")
	nfdump := testutil.RequireCommand(t, "nfdump")

	// The collector, on a free UDP port.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close()
	nfDir := t.TempDir()
	var nfLog testutil.SyncBuffer
	// -B: every flow of the test goes idle at the same moment, and the
	// burst of records overflows the default socket buffer when the
	// machine is busy (kernel drops at the end of a burst show as no
	// sequence error). nfcapd asks for 4 MiB; net.core.rmem_max caps it.
	nf := exec.Command(nfcapd, "-b", "127.0.0.1", "-p", port, "-w", nfDir, "-B", "4194304")
	nf.Stdout, nf.Stderr = &nfLog, &nfLog
	nf.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := nf.Start(); err != nil {
		t.Fatal(err)
	}
	nfDone := make(chan error, 1)
	go func() { nfDone <- nf.Wait() }()
	t.Cleanup(func() {
		if nf.ProcessState == nil {
			_ = nf.Process.Kill()
			<-nfDone
		}
		if t.Failed() {
			t.Logf("nfcapd log:\n%s", nfLog.String())
		}
	})
	waitUntil(t, "nfcapd listening", 10*time.Second, func() bool { return strings.Contains(nfLog.String(), "Startup") })

	v := testutil.NewVeth(t)
	testutil.Run(t, "ip", "link", "set", v.Host, "mtu", "9000")
	v.InNS(t, "ip", "link", "set", v.Peer, "mtu", "9000")
	bin := buildStenod(t)
	addr := freePort(t)
	base := "http://" + addr
	d := startStenod(t, bin, "run", "--iface", v.Host, "--spool", t.TempDir(), "--pin-root", bpffsDir(t, "ipfix"),
		"--listen", addr, "--capture", "afpacket", "--user", "",
		"--ipfix", "udp://127.0.0.1:"+port, "--ipfix-idle", "2s", "--ipfix-active", "60s", "--sensor-id", "7")
	waitHealthy(t, d, httpClient, base)

	s := testutil.NewSender(t, v)
	sent := 0
	for _, c := range testpcaps.Ethernet(t, "") {
		for _, p := range c.Packets {
			if len(p.Data) < 14 || len(p.Data) > 9000+14 {
				continue
			}
			s.Send(t, p.Data)
			sent++
		}
	}

	// Every packet in the index, then every IP flow exported.
	var flows []apiFlow
	waitFor(t, d, "every packet in /v1/flows", 30*time.Second, func() error {
		var err error
		if flows, err = getFlows(base); err != nil {
			return err
		}
		n := 0
		for _, f := range flows {
			n += f.Packets
		}
		if n != sent {
			return fmt.Errorf("%d of %d packets", n, sent)
		}
		return nil
	})
	want := nfAggs{}
	for _, f := range flows {
		if f.Src == "" {
			continue // not IP: not exported
		}
		want.add(f.key(), f.Packets, f.Bytes, f.First.UnixMilli(), f.Last.UnixMilli())
	}
	waitFor(t, d, "the records exported", 30*time.Second, func() error {
		n, err := metricValue(base, `stenod_ipfix_records_exported_total{collector="udp://127.0.0.1:`+port+`"}`)
		if err == nil && n < float64(len(want)) {
			err = fmt.Errorf("%v records exported, at least %d flows", n, len(want))
		}
		return err
	})
	// Stopped, nfcapd writes its file.
	_ = nf.Process.Signal(syscall.SIGTERM)
	select {
	case <-nfDone:
	case <-time.After(30 * time.Second):
		t.Fatal("nfcapd did not stop")
	}
	out, err := nfdumpJSON(nfdump, nfDir)
	if err != nil {
		t.Fatal(err)
	}
	got := nfAggs{}
	for _, r := range out {
		got.add(r.key(), r.Packets, r.Bytes, r.first(t), r.last(t))
	}
	bad := 0
	for k, w := range want {
		g := got[k]
		if g == nil || *g != *w {
			if bad++; bad <= 20 {
				t.Errorf("flow %+v: nfdump %+v, /v1/flows %+v", k, g, w)
			}
		}
	}
	for k, g := range got {
		if want[k] == nil {
			t.Errorf("nfdump has %+v %+v, which /v1/flows does not", k, g)
		}
	}
	t.Logf("%d frames sent, %d flows in /v1/flows, %d IP flow keys, %d nfdump records", sent, len(flows), len(want), len(out))
	if len(want) < 100 {
		t.Errorf("only %d IP flows: the captures changed?", len(want))
	}
}

// apiFlow is a flow of /v1/flows.
type apiFlow struct {
	Src, Dst     string
	Sport, Dport int
	Proto        int
	VLAN         []int `json:"vlan"`
	MPLS         int   `json:"mpls"`
	ICMPType     *int  `json:"icmp_type"`
	ICMPCode     *int  `json:"icmp_code"`
	First, Last  time.Time
	Packets      int
	Bytes        int
}

// nfKey is what nfdump shows of a flow key: the outer VLAN tag, the
// outer MPLS label; for ICMP and ICMPv6 the type and code, kept in the
// ports (sport type, dport code).
type nfKey struct {
	src, dst     string
	sport, dport int
	proto, vlan  int
	mpls         int
}

func (f *apiFlow) key() nfKey {
	k := nfKey{src: f.Src, dst: f.Dst, sport: f.Sport, dport: f.Dport, proto: f.Proto, mpls: f.MPLS}
	if len(f.VLAN) > 0 {
		k.vlan = f.VLAN[0]
	}
	if f.ICMPType != nil {
		k.sport, k.dport = *f.ICMPType, *f.ICMPCode
	}
	return k
}

// nfAgg sums the records (or flows) of one nfKey.
type nfAgg struct {
	packets, bytes int
	first, last    int64 // unix ms
}

// nfAggs are the sums by key.
type nfAggs map[nfKey]*nfAgg

func (m nfAggs) add(k nfKey, packets, bytes int, first, last int64) {
	a := m[k]
	if a == nil {
		m[k] = &nfAgg{packets, bytes, first, last}
		return
	}
	a.packets += packets
	a.bytes += bytes
	a.first, a.last = min(a.first, first), max(a.last, last)
}

func getFlows(base string) ([]apiFlow, error) {
	resp, err := httpClient.Get(base + "/v1/flows?limit=100000&q=" + url.QueryEscape("after 1h ago"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ans struct {
		Flows     []apiFlow
		Truncated bool
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return nil, err
	}
	if ans.Truncated {
		return nil, fmt.Errorf("/v1/flows truncated at %d flows", len(ans.Flows))
	}
	return ans.Flows, nil
}

// metricValue returns the value of one series of /metrics.
func metricValue(base, series string) (float64, error) {
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("/metrics has no %s", series)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// nfRecord is a record of nfdump -o json.
type nfRecord struct {
	First, Last string
	Packets     int    `json:"in_packets"`
	Bytes       int    `json:"in_bytes"`
	Proto       int    `json:"proto"`
	Sport       int    `json:"src_port"`
	Dport       int    `json:"dst_port"`
	Src4        string `json:"src4_addr"`
	Dst4        string `json:"dst4_addr"`
	Src6        string `json:"src6_addr"`
	Dst6        string `json:"dst6_addr"`
	SrcVLAN     int    `json:"src_vlan"`
	MPLS1       string `json:"mpls_1"`
	ICMPType    *int   `json:"icmp_type"`
	ICMPCode    *int   `json:"icmp_code"`
}

func (r *nfRecord) key() nfKey {
	k := nfKey{src: r.Src4 + r.Src6, dst: r.Dst4 + r.Dst6, sport: r.Sport, dport: r.Dport, proto: r.Proto, vlan: r.SrcVLAN}
	if r.ICMPType != nil {
		k.sport, k.dport = *r.ICMPType, *r.ICMPCode
	}
	if l, _, ok := strings.Cut(r.MPLS1, "-"); ok {
		k.mpls, _ = strconv.Atoi(l)
	}
	return k
}

// nfdump prints local time, with milliseconds; the test runs it in UTC.
const nfTime = "2006-01-02T15:04:05.000"

func (r *nfRecord) first(t *testing.T) int64 { return nfMillis(t, r.First) }
func (r *nfRecord) last(t *testing.T) int64  { return nfMillis(t, r.Last) }

func nfMillis(t *testing.T, s string) int64 {
	tm, err := time.ParseInLocation(nfTime, s, time.UTC)
	if err != nil {
		t.Fatalf("nfdump time %q: %v", s, err)
	}
	return tm.UnixMilli()
}

func nfdumpJSON(nfdump, dir string) ([]nfRecord, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.*"))
	files = slices.DeleteFunc(files, func(f string) bool { return strings.Contains(f, "current") })
	if len(files) == 0 {
		return nil, fmt.Errorf("nfcapd wrote no file in %s", dir)
	}
	var all []nfRecord
	for _, f := range files {
		cmd := exec.Command(nfdump, "-r", f, "-o", "json")
		cmd.Env = append(os.Environ(), "TZ=UTC")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("nfdump -r %s: %v\n%s", f, err, stderr.String())
		}
		if d := os.Getenv("STENOD_TEST_NFDUMP_OUT"); d != "" {
			_ = os.WriteFile(filepath.Join(d, filepath.Base(f)+".json"), out, 0o644)
		}
		var rs []nfRecord
		if err := json.Unmarshal(out, &rs); err != nil {
			return nil, fmt.Errorf("nfdump -r %s -o json: %v\n%.2000s", f, err, out)
		}
		all = append(all, rs...)
	}
	return all, nil
}

// waitUntil polls ok until it holds or the time is up.
func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
