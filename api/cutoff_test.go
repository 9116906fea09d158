//go:build linux

package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/xdp"
)

// fakeCutoff is a capture's cutoff: a connection table of canonical keys,
// the keys SuspendCutoff suspended, and fixed counters.
type fakeCutoff struct {
	mu        sync.Mutex
	conns     []flow.Key
	suspended map[flow.Key]bool
	err       error
	cut       []capture.InterfaceCutoff
	stats     capture.Stats
}

func (f *fakeCutoff) SuspendCutoff(match func(k *flow.Key) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	n := 0
	for i := range f.conns {
		if match(&f.conns[i]) {
			f.suspended[f.conns[i]] = true
			n++
		}
	}
	return n, nil
}

func (f *fakeCutoff) CutoffStats() []capture.InterfaceCutoff { return f.cut }
func (f *fakeCutoff) Stats() capture.Stats                   { return f.stats }

// connKey is a TCP or UDP key from src to dst ("10.0.0.1:443").
func connKey(t *testing.T, proto uint8, src, dst string) flow.Key {
	t.Helper()
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	k := flow.Key{SrcPort: s.Port(), DstPort: d.Port(), Proto: proto, Flags: flow.FlagPorts}
	if s.Addr().Is4() {
		k.Flags |= flow.FlagIPv4
		k.EtherType = 0x0800
		a, b := s.Addr().As4(), d.Addr().As4()
		copy(k.Src[:], a[:])
		copy(k.Dst[:], b[:])
	} else {
		k.Flags |= flow.FlagIPv6
		k.EtherType = 0x86dd
		k.Src, k.Dst = s.Addr().As16(), d.Addr().As16()
	}
	return k
}

func newFakeCutoff(t *testing.T) *fakeCutoff {
	return &fakeCutoff{
		// Canonical keys: the lower (address, port) first, so a client's
		// connection to a server may be in either orientation.
		conns: []flow.Key{
			connKey(t, 6, "10.0.0.1:51234", "10.0.0.2:443"), // client first
			connKey(t, 6, "10.0.0.3:443", "10.0.0.9:40000"), // server first
			connKey(t, 17, "10.0.0.1:53", "10.0.0.4:5353"),  // UDP
			connKey(t, 6, "[2001:db8::1]:22", "[2001:db8::2]:50000"),
		},
		suspended: map[flow.Key]bool{},
		cut: []capture.InterfaceCutoff{
			{Name: "eth1", CutoffStats: xdp.CutoffStats{Packets: 30, Bytes: 45000, Rules: []xdp.RuleCut{
				{Rule: 0, Name: "port 443", Packets: 20, Bytes: 30000},
				{Rule: 1, Name: "tcp and port 22", Packets: 0, Bytes: 0},
				{Rule: -1, Name: "", Packets: 10, Bytes: 15000},
			}}},
			{Name: "eth2", CutoffStats: xdp.CutoffStats{Packets: 10, Bytes: 15000, Rules: []xdp.RuleCut{
				{Rule: 0, Name: "port 443", Packets: 0, Bytes: 0},
				{Rule: 1, Name: "tcp and port 22", Packets: 0, Bytes: 0},
				{Rule: -1, Name: "", Packets: 10, Bytes: 15000},
			}}},
		},
		stats: capture.Stats{Interfaces: []capture.InterfaceStats{
			{Name: "eth1", Queues: []capture.QueueStats{{Packets: 100, Bytes: 10000}, {Packets: 50, Bytes: 5000}}},
			{Name: "eth2", Queues: []capture.QueueStats{{Packets: 20, Bytes: 5000}}},
		}},
	}
}

func cutoffServer(t *testing.T, cut Cutoff) (*Server, string) {
	t.Helper()
	s, err := New(DefaultConfig(), Options{Spool: importSpool(t), Registry: prometheus.NewRegistry(), Logger: testLogger(t), Cutoff: cut})
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, s)
}

func postSuspend(t *testing.T, base, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(base+"/v1/cutoff/suspend", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestCutoffSuspend: a query suspends the connections it matches in
// either orientation, and only those; a query with time, or one that does
// not parse, is refused with the reason.
func TestCutoffSuspend(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  []int // indexes in newFakeCutoff's conns
	}{
		{"port 443", []int{0, 1}},
		// The connection's other orientation: the server's side.
		{"src host 10.0.0.2 and src port 443", []int{0}},
		{"dst host 10.0.0.3", []int{1}},
		{"src host 10.0.0.9 and dst port 443", []int{1}},
		{"udp and host 10.0.0.4", []int{2}},
		{"ip6 and tcp and port 22", []int{3}},
		{"host 10.0.0.1 and not udp", []int{0}},
		{"port 8080", nil},
	} {
		f := newFakeCutoff(t)
		_, base := cutoffServer(t, f)
		code, body := postSuspend(t, base, tc.query)
		if code != http.StatusOK {
			t.Errorf("%q: %d %s", tc.query, code, body)
			continue
		}
		var ans SuspendAnswer
		if err := json.Unmarshal([]byte(body), &ans); err != nil || ans.Suspended != len(tc.want) {
			t.Errorf("%q: answer %s (%v), want %d suspended", tc.query, body, err, len(tc.want))
		}
		for _, i := range tc.want {
			if !f.suspended[f.conns[i]] {
				t.Errorf("%q: %v not suspended", tc.query, f.conns[i])
			}
		}
		if len(f.suspended) != len(tc.want) {
			t.Errorf("%q: suspended %v, want %d connections", tc.query, f.suspended, len(tc.want))
		}
	}

	f := newFakeCutoff(t)
	_, base := cutoffServer(t, f)
	for _, tc := range []struct {
		query string
		code  int
		msg   string
	}{
		{"port 443 and after 1h ago", http.StatusBadRequest, "has before or after: a connection is suspended as a whole"},
		{"before 2024-01-01T00:00:00Z", http.StatusBadRequest, "has before or after"},
		{"port 443 or not (tcp and before 1h ago)", http.StatusBadRequest, "has before or after"},
		{"portt 443", http.StatusBadRequest, `query: at 0 ("portt")`},
		{"", http.StatusBadRequest, "query"},
		{strings.Repeat("port 1 or ", 10000) + "port 2", http.StatusRequestEntityTooLarge, "longer than"},
	} {
		code, body := postSuspend(t, base, tc.query)
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%.40q: %d %q, want %d with %q", tc.query, code, body, tc.code, tc.msg)
		}
	}
	if len(f.suspended) != 0 {
		t.Errorf("refused queries suspended %v", f.suspended)
	}
	resp, err := http.Get(base + "/v1/cutoff/suspend")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}

	// The capture failing: 500 with its error.
	f.err = errors.New("update conns map: permission denied")
	if code, body := postSuspend(t, base, "port 443"); code != http.StatusInternalServerError || !strings.Contains(body, "permission denied") {
		t.Errorf("failing capture: %d %q", code, body)
	}

	// Without the cutoff: 503, saying so.
	_, base = cutoffServer(t, nil)
	if code, body := postSuspend(t, base, "port 443"); code != http.StatusServiceUnavailable || !strings.Contains(body, "cutoff is off") {
		t.Errorf("no cutoff: %d %q", code, body)
	}
}

// TestCutoffMetrics: the counters per interface and rule, the default's
// as rule="default", pass promtool check metrics (promlint).
func TestCutoffMetrics(t *testing.T) {
	_, base := cutoffServer(t, newFakeCutoff(t))
	resp, body, err := get(t, http.DefaultClient, base+"/metrics")
	text := string(mustOK(t, resp, body, err))
	for _, line := range []string{
		"# HELP stenod_cutoff_cut_packets_total ", "# TYPE stenod_cutoff_cut_packets_total counter",
		"# HELP stenod_cutoff_cut_bytes_total ", "# TYPE stenod_cutoff_cut_bytes_total counter",
		`stenod_cutoff_cut_packets_total{iface="eth1",rule="port 443"} 20`,
		`stenod_cutoff_cut_bytes_total{iface="eth1",rule="port 443"} 30000`,
		`stenod_cutoff_cut_packets_total{iface="eth1",rule="default"} 10`,
		`stenod_cutoff_cut_bytes_total{iface="eth2",rule="default"} 15000`,
		`stenod_cutoff_cut_packets_total{iface="eth2",rule="tcp and port 22"} 0`,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	// What promtool check metrics runs, on what /metrics served.
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "stenod_cutoff_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}

	// Without the cutoff: no series, and no error.
	s, _ := cutoffServer(t, nil)
	if _, err := metricValue(t, s, "stenod_cutoff_cut_packets_total", nil); !errors.Is(err, errNotFound) {
		t.Errorf("metrics without the cutoff: %v", err)
	}
}

// TestCutoffStats: /v1/stats says what the cutoff kept and cut, and the
// expected retention without it: the shortest directory's, times the
// share of the bytes kept.
func TestCutoffStats(t *testing.T) {
	_, base := cutoffServer(t, newFakeCutoff(t))
	resp, body, err := get(t, http.DefaultClient, base+"/v1/stats")
	body = mustOK(t, resp, body, err)
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	c := st.Cutoff
	if c == nil {
		t.Fatalf("no cutoff in %s", body)
	}
	// Kept 20000 bytes in 170 packets, cut 60000 in 40: a quarter kept.
	if c.KeptPackets != 170 || c.KeptBytes != 20000 || c.CutPackets != 40 || c.CutBytes != 60000 || c.KeptShare != 0.25 {
		t.Errorf("cutoff %+v", c)
	}
	want := st.Spool.Dirs[0].ExpectedRetentionSeconds
	if want == 0 || c.ExpectedRetentionSeconds != want || c.ExpectedRetention != st.Spool.Dirs[0].ExpectedRetention {
		t.Errorf("expected retention %v (%s), want the directory's %v", c.ExpectedRetentionSeconds, c.ExpectedRetention, want)
	}
	if c.ExpectedRetentionWithoutCutoffSeconds != want/4 || c.ExpectedRetentionWithoutCutoff != formatDays(secondsDuration(want/4)) {
		t.Errorf("without the cutoff %v (%s), want %v", c.ExpectedRetentionWithoutCutoffSeconds, c.ExpectedRetentionWithoutCutoff, want/4)
	}
	for _, k := range []string{`"kept_share"`, `"cut_bytes"`, `"expected_retention_without_cutoff_seconds"`, `"expected_retention_without_cutoff"`} {
		if !strings.Contains(string(body), k) {
			t.Errorf("/v1/stats lacks %s", k)
		}
	}

	// Before any packet: everything kept, no division by zero.
	f := newFakeCutoff(t)
	f.cut, f.stats = nil, capture.Stats{}
	s, _ := cutoffServer(t, f)
	if c := s.statsAnswer().Cutoff; c.KeptShare != 1 || c.ExpectedRetentionWithoutCutoffSeconds != c.ExpectedRetentionSeconds {
		t.Errorf("no packets: %+v", c)
	}
	// Without the cutoff: no cutoff part.
	s, _ = cutoffServer(t, nil)
	if c := s.statsAnswer().Cutoff; c != nil {
		t.Errorf("cutoff off: %+v", c)
	}
}

// TestReversedKey: the other direction of a TCP, UDP or ICMP key
// (flow.Key.Reversed, as the suspension matches it).
func TestReversedKey(t *testing.T) {
	k := connKey(t, 6, "10.0.0.1:1", "10.0.0.2:2")
	if r := k.Reversed(); r != connKey(t, 6, "10.0.0.2:2", "10.0.0.1:1") {
		t.Errorf("reversed %v: %v", k, r)
	}
	icmp := flow.Key{Src: [16]byte{10, 0, 0, 1}, Dst: [16]byte{10, 0, 0, 2}, SrcPort: 8, Proto: 1, Flags: flow.FlagIPv4 | flow.FlagICMP}
	if r := icmp.Reversed(); r.Src != icmp.Dst || r.Dst != icmp.Src || r.SrcPort != 8 || r.DstPort != 0 {
		t.Errorf("reversed %v: %v", icmp, r)
	}
}
