package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		listen, certs string
		ok            bool
	}{
		{"127.0.0.1:1234", "", true},
		{"127.0.0.2:1234", "", true},
		{"[::1]:1234", "", true},
		{"localhost:1234", "", true},
		{"0.0.0.0:1234", "", false},
		{":1234", "", false},
		{"[::]:1234", "", false},
		{"192.0.2.1:1234", "", false},
		{"sensor.example:1234", "", false},
		{"0.0.0.0:1234", "/etc/stenod/certs", true},
		{"127.0.0.1", "", false},
	} {
		cfg := DefaultConfig()
		cfg.Listen, cfg.CertsDir = tc.listen, tc.certs
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Listen %q CertsDir %q: %v", tc.listen, tc.certs, err)
		}
		if err != nil && !tc.ok && tc.certs == "" && strings.Contains(tc.listen, ":1234") && !strings.Contains(err.Error(), "certs init") {
			t.Errorf("refusal does not say what to do: %v", err)
		}
	}
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	cfg.QueryTimeout = -time.Second
	if cfg.Validate() == nil {
		t.Error("negative timeout accepted")
	}
	cfg = DefaultConfig()
	cfg.MaxQueryBytes = 1 << 30
	if cfg.Validate() == nil {
		t.Error("1 GiB query body accepted")
	}
}

func TestNewNeedsFreshRegistry(t *testing.T) {
	sp := importSpool(t)
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), Options{Spool: sp, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(DefaultConfig(), Options{Spool: sp, Registry: reg}); err == nil {
		t.Fatal("second server on the same registry accepted")
	}
	if _, err := New(DefaultConfig(), Options{}); err == nil {
		t.Fatal("server without spool accepted")
	}
}

func TestQuery(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := ts.Client()

	for _, text := range []string{"port 53", "tcp", "ip6", "icmp", "after 2000-01-01T00:00:00Z", "host 1.2.3.4"} {
		exp, res := want(t, sp, text, engine.Options{})
		resp, body, err := postQuery(t, c, ts.URL, text, nil)
		body = mustOK(t, resp, body, err)
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("%q: Content-Type %q", text, ct)
		}
		if !bytes.Equal(body, exp) {
			t.Errorf("%q: answer of %d bytes differs from the engine's %d", text, len(body), len(exp))
		}
		if n := countPcap(t, body); int64(n) != res.Packets {
			t.Errorf("%q: %d packets, want %d", text, n, res.Packets)
		}
		t.Logf("%q: %d packets", text, res.Packets)
	}
}

func TestLimits(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := ts.Client()
	const text = "tcp"
	_, all := want(t, sp, text, engine.Options{})
	if all.Packets < 10 {
		t.Fatalf("only %d tcp packets in the test spool", all.Packets)
	}

	for _, opts := range []engine.Options{{LimitPackets: 3}, {LimitBytes: 2000}, {LimitPackets: 5, LimitBytes: 100000}, {LimitPackets: all.Packets + 10}} {
		exp, res := want(t, sp, text, opts)
		hdr := map[string]string{}
		params := url.Values{"q": {text}}
		if opts.LimitPackets > 0 {
			hdr[HeaderLimitPackets] = strconv.FormatInt(opts.LimitPackets, 10)
			params.Set("limit_packets", strconv.FormatInt(opts.LimitPackets, 10))
		}
		if opts.LimitBytes > 0 {
			hdr[HeaderLimitBytes] = strconv.FormatInt(opts.LimitBytes, 10)
			params.Set("limit_bytes", strconv.FormatInt(opts.LimitBytes, 10))
		}
		resp, body, err := postQuery(t, c, ts.URL, text, hdr)
		body = mustOK(t, resp, body, err)
		if !bytes.Equal(body, exp) {
			t.Errorf("/query %+v: answer differs from the engine's", opts)
		}
		n := countPcap(t, body)
		if int64(n) != res.Packets || opts.LimitPackets > 0 && int64(n) > opts.LimitPackets {
			t.Errorf("/query %+v: %d packets, engine %d", opts, n, res.Packets)
		}
		if opts.LimitBytes > 0 && int64(len(body)-pcapio.PcapHeaderSize) > opts.LimitBytes {
			t.Errorf("/query %+v: %d record bytes", opts, len(body)-pcapio.PcapHeaderSize)
		}
		resp, body, err = get(t, c, ts.URL+"/v1/pcap?"+params.Encode())
		body = mustOK(t, resp, body, err)
		if !bytes.Equal(body, exp) {
			t.Errorf("/v1/pcap %+v: answer differs from the engine's", opts)
		}
	}

	for _, bad := range []string{"-1", "ten", "1e3", "99999999999999999999"} {
		resp, body, err := postQuery(t, c, ts.URL, text, map[string]string{HeaderLimitPackets: bad})
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), HeaderLimitPackets) {
			t.Errorf("%s %q: %v %v %q", HeaderLimitPackets, bad, err, resp.Status, body)
		}
		resp, body, err = get(t, c, ts.URL+"/v1/pcap?q=tcp&limit_bytes="+url.QueryEscape(bad))
		if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "limit_bytes") {
			t.Errorf("limit_bytes %q: %v %v %q", bad, err, resp.Status, body)
		}
	}
}

func TestBadRequests(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := ts.Client()

	for _, text := range []string{"host 1.2.3", "port", "tcp and", "", "port http", "(tcp"} {
		_, perr := query.Parse(text, time.Now())
		if perr == nil {
			t.Fatalf("%q parses", text)
		}
		msg := perr.Error() + "\n"
		resp, body, err := postQuery(t, c, ts.URL, text, nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest || string(body) != msg {
			t.Errorf("/query %q: %v %v %q, want 400 %q", text, err, resp.Status, body, msg)
		}
		for _, path := range []string{"/v1/pcap", "/v1/flows"} {
			resp, body, err = get(t, c, ts.URL+path+"?q="+url.QueryEscape(text))
			if err != nil || resp.StatusCode != http.StatusBadRequest || string(body) != msg {
				t.Errorf("%s %q: %v %v %q, want 400 %q", path, text, err, resp.Status, body, msg)
			}
		}
	}

	// A body past MaxQueryBytes is refused before it is parsed.
	resp, body, err := postQuery(t, c, ts.URL, strings.Repeat("tcp or ", DefaultMaxQueryBytes/7+1)+"tcp", nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized query: %v %v %q", err, resp.Status, body)
	}
	resp, _, err = get(t, c, ts.URL+"/v1/pcap?q=tcp&format=json")
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("format=json: %v %v", err, resp.Status)
	}
	for _, l := range []string{"0", "-5", "x", strconv.Itoa(MaxFlows + 1)} {
		resp, _, err = get(t, c, ts.URL+"/v1/flows?q=tcp&limit="+l)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("flows limit %s: %v %v", l, err, resp.Status)
		}
	}
	resp, _, err = get(t, c, ts.URL+"/query")
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /query: %v %v", err, resp.Status)
	}
	if v, _ := metricValue(t, s, "stenod_api_queries_total", map[string]string{"outcome": outcomeBadQuery}); v < 10 {
		t.Errorf("bad queries counted %v", v)
	}
}

func TestPcapng(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	const text = "port 53 or icmp"
	exp, res := want(t, sp, text, engine.Options{})
	resp, body, err := get(t, ts.Client(), ts.URL+"/v1/pcap?format=pcapng&q="+url.QueryEscape(text))
	body = mustOK(t, resp, body, err)
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="stenod-`) || !strings.HasSuffix(cd, `.pcapng"`) {
		t.Errorf("Content-Disposition %q", cd)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-pcapng" {
		t.Errorf("Content-Type %q", ct)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(body), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := pcapio.NewReader(bytes.NewReader(exp))
	if err != nil {
		t.Fatal(err)
	}
	var p pcapio.Packet
	n := int64(0)
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("pcapng packet %d: %v", n, err)
		}
		if err := ref.Next(&p); err != nil {
			t.Fatalf("pcapng has more packets than the pcap answer: %v", err)
		}
		if !bytes.Equal(data, p.Data) || ci.Timestamp.UnixNano() != p.Timestamp || ci.Length != p.OrigLen {
			t.Fatalf("packet %d differs: %v/%d vs %d/%d", n, ci.Timestamp, ci.Length, p.Timestamp, p.OrigLen)
		}
		n++
	}
	if n != res.Packets || n == 0 {
		t.Fatalf("pcapng has %d packets, want %d", n, res.Packets)
	}

	resp, body, err = get(t, ts.Client(), ts.URL+"/v1/pcap?q="+url.QueryEscape(text))
	body = mustOK(t, resp, body, err)
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasSuffix(cd, `.pcap"`) || !bytes.Equal(body, exp) {
		t.Errorf("pcap download: Content-Disposition %q, %d bytes", cd, len(body))
	}
}

func TestFlows(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	q, _ := query.Parse("tcp or udp or icmp", time.Now())
	exp, err := engine.Flows(context.Background(), sp, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(exp) < 3 {
		t.Fatalf("only %d flows", len(exp))
	}
	resp, body, err := get(t, ts.Client(), ts.URL+"/v1/flows?q="+url.QueryEscape("tcp or udp or icmp"))
	body = mustOK(t, resp, body, err)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got Flows
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Truncated || len(got.Flows) != len(exp) {
		t.Fatalf("%d flows (truncated %v), want %d", len(got.Flows), got.Truncated, len(exp))
	}
	v6 := 0
	for i, f := range got.Flows {
		e := exp[i]
		k := &e.Key
		first, err1 := time.Parse(time.RFC3339Nano, f.First)
		last, err2 := time.Parse(time.RFC3339Nano, f.Last)
		if err1 != nil || err2 != nil || first.UnixNano() != e.First || last.UnixNano() != e.Last {
			t.Errorf("flow %d: first %q last %q, want %d %d", i, f.First, f.Last, e.First, e.Last)
		}
		if f.Src != k.SrcAddr().String() || f.Dst != k.DstAddr().String() || f.Proto == nil || *f.Proto != k.Proto ||
			f.EtherType != k.EtherType || f.Packets != e.Packets || f.Bytes != e.Bytes || f.Key != k.String() {
			t.Errorf("flow %d: %+v, want %v %+v", i, f, k, e)
		}
		if (k.Proto == 6 || k.Proto == 17) && (f.SrcPort == nil || *f.SrcPort != k.SrcPort || f.DstPort == nil || *f.DstPort != k.DstPort) {
			t.Errorf("flow %d: ports %v %v, want %d %d", i, f.SrcPort, f.DstPort, k.SrcPort, k.DstPort)
		}
		if k.Proto == 1 && (f.SrcPort != nil || f.DstPort != nil) {
			t.Errorf("ICMP flow %d has ports", i)
		}
		// Endpoints with ports are written as address:port, IPv6
		// addresses in brackets.
		if f.SrcPort != nil {
			src := net.JoinHostPort(f.Src, strconv.Itoa(int(*f.SrcPort)))
			dst := net.JoinHostPort(f.Dst, strconv.Itoa(int(*f.DstPort)))
			if !strings.Contains(f.Key, " "+src+" > "+dst) {
				t.Errorf("flow %d: key %q, want %s > %s", i, f.Key, src, dst)
			}
			if k.SrcAddr().Is6() {
				v6++
			}
		}
	}
	if v6 == 0 {
		t.Error("no IPv6 flow with ports in the answer")
	}
	// The raw JSON uses the documented names.
	for _, name := range []string{`"src"`, `"dst"`, `"sport"`, `"dport"`, `"proto"`, `"ethertype"`, `"first"`, `"last"`, `"packets"`, `"bytes"`} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("JSON lacks %s", name)
		}
	}

	resp, body, err = get(t, ts.Client(), ts.URL+"/v1/flows?limit=2&q=tcp")
	body = mustOK(t, resp, body, err)
	got = Flows{}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Flows) != 2 || !got.Truncated {
		t.Errorf("limit=2: %d flows, truncated %v", len(got.Flows), got.Truncated)
	}
}

func TestStatsMetricsHealthPprof(t *testing.T) {
	sp := importSpool(t)
	reg := prometheus.NewRegistry()
	mine := prometheus.NewCounter(prometheus.CounterOpts{Name: "stenod_capture_test_total", Help: "a capture-side metric"})
	reg.MustRegister(mine)
	mine.Add(7)
	s, err := New(DefaultConfig(), Options{Spool: sp, Registry: reg, Logger: testLogger(t),
		Stats: func() any { return map[string]int{"rx_packets": 42} }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := ts.Client()

	resp, body, err := get(t, c, ts.URL+"/v1/stats")
	body = mustOK(t, resp, body, err)
	var st struct {
		Stats
		Capture map[string]int `json:"capture"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	var wantPackets uint64
	var lo, hi int64
	for _, u := range sp.Usage() {
		wantPackets += u.Packets
		if lo == 0 || u.Oldest < lo {
			lo = u.Oldest
		}
		hi = max(hi, u.Newest)
	}
	sum := st.Spool
	if sum.Packets != wantPackets || sum.Packets == 0 || sum.Files != len(captures) || len(sum.Dirs) != 1 {
		t.Errorf("stats %+v, want %d packets in %d files", sum, wantPackets, len(captures))
	}
	if sum.Oldest != formatNS(lo) || sum.Newest != formatNS(hi) || sum.RetentionSeconds != time.Duration(hi-lo).Seconds() ||
		sum.Retention == "" || !strings.Contains(sum.Retention, "d") {
		t.Errorf("span %q..%q = %v s (%s), want %s..%s", sum.Oldest, sum.Newest, sum.RetentionSeconds, sum.Retention, formatNS(lo), formatNS(hi))
	}
	if d := sum.Dirs[0]; d.Dir != sp.Config().Dirs[0] || d.DiskBytes == 0 || d.Packets != wantPackets ||
		d.FileBytes == 0 || d.BudgetBytes == 0 || d.ExpectedRetention == "" {
		t.Errorf("dir stats %+v", d)
	}
	if st.Capture["rx_packets"] != 42 {
		t.Errorf("capture stats %v", st.Capture)
	}

	okBody(t)(postQuery(t, c, ts.URL, "tcp", nil))
	resp, body, err = get(t, c, ts.URL+"/metrics")
	body = mustOK(t, resp, body, err)
	for _, line := range []string{"stenod_capture_test_total 7", `stenod_api_queries_total{outcome="complete"} 1`,
		`stenod_api_requests_total{code="200",route="/query"} 1`, "stenod_api_answer_packets_total ",
		"stenod_spool_packets{dir=", "stenod_spool_expected_retention_seconds{dir=", "stenod_spool_deleted_files_total 0",
		"stenod_spool_filesystem_size_bytes{dir=", "stenod_spool_filesystem_free_bytes{dir="} {
		if !bytes.Contains(body, []byte(line)) {
			t.Errorf("/metrics lacks %q", line)
		}
	}

	resp, body, err = get(t, c, ts.URL+"/healthz")
	if body = mustOK(t, resp, body, err); string(body) != "ok\n" {
		t.Errorf("healthz %q", body)
	}
	// The profiler is off by default: its profiles show memory that holds
	// packets.
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		resp, _, err := get(t, c, ts.URL+path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s without pprof: %s, want 404", path, resp.Status)
		}
	}
	cfg := DefaultConfig()
	cfg.PProf = true
	ts2 := httptest.NewServer(newServer(t, cfg, sp).Handler())
	defer ts2.Close()
	resp, body, err = get(t, c, ts2.URL+"/debug/pprof/")
	if body = mustOK(t, resp, body, err); !bytes.Contains(body, []byte("goroutine")) {
		t.Errorf("pprof index: %.200s", body)
	}
	resp, body, err = get(t, c, ts2.URL+"/debug/pprof/goroutine?debug=1")
	if body = mustOK(t, resp, body, err); !bytes.Contains(body, []byte("goroutine profile")) {
		t.Errorf("pprof goroutine: %.200s", body)
	}
	resp, body, err = get(t, c, ts2.URL+"/debug/pprof/cmdline")
	mustOK(t, resp, body, err)
}

func TestFormatDays(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                    "0s",
		90 * time.Minute:                     "1h30m0s",
		72 * time.Hour:                       "3d",
		50*time.Hour + 1500*time.Millisecond: "2d2h0m2s",
	} {
		if got := formatDays(d); got != want {
			t.Errorf("formatDays(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTLSClientCertificates(t *testing.T) {
	sp := importSpool(t)
	dir := makeCerts(t)
	cfg := DefaultConfig()
	cfg.CertsDir = dir
	s := newServer(t, cfg, sp)
	base := serve(t, s)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("TLS server at %s", base)
	}

	exp, _ := want(t, sp, "port 53", engine.Options{})
	for _, h2 := range []bool{false, true} {
		c := tlsClient(t, dir, h2)
		resp, body, err := postQuery(t, c, base, "port 53", nil)
		body = mustOK(t, resp, body, err)
		if !bytes.Equal(body, exp) {
			t.Errorf("h2 %v: answer differs", h2)
		}
		if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
			t.Errorf("h2 %v: protocol %s", h2, resp.Proto)
		}
		for _, path := range []string{"/healthz", "/v1/stats", "/v1/flows?q=udp", "/metrics", "/v1/pcap?q=tcp"} {
			okBody(t)(get(t, c, base+path))
		}
	}

	good, err := ClientTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*tls.Config){
		"no client certificate":            func(c *tls.Config) { c.Certificates = nil },
		"client certificate of another CA": func(c *tls.Config) { c.Certificates = []tls.Certificate{otherCA(t)} },
		"TLS 1.1":                          func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 },
	} {
		tc := good.Clone()
		mod(tc)
		tr := &http.Transport{TLSClientConfig: tc}
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		resp, body, err := postQuery(t, c, base, "port 53", nil)
		if err == nil {
			t.Errorf("%s: accepted: %s, %d bytes", name, resp.Status, len(body))
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
		tr.CloseIdleConnections()
	}
	// Plain HTTP to the TLS port gets no packets.
	resp, body, err := postQuery(t, http.DefaultClient, "http"+strings.TrimPrefix(base, "https"), "port 53", nil)
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("plain HTTP answered: %d bytes", len(body))
	}
}

func TestServeRefusesNonLoopbackWithoutTLS(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	ln := fakeListener{addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1234}}
	err := s.Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("Serve on 192.0.2.1 without TLS: %v", err)
	}
}

type fakeListener struct{ addr net.Addr }

func (fakeListener) Accept() (net.Conn, error) { return nil, errors.New("fake") }
func (fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr          { return l.addr }

// TestDamagedAnswer damages spool files after their indexes are sealed and
// checks that clients get every intact matching packet, none of the damaged
// ones, and the count of those left out in the answer's trailer.
func TestDamagedAnswer(t *testing.T) {
	sp, files := syntheticSpool(t)
	dir := makeCerts(t)
	plain := newServer(t, DefaultConfig(), sp)
	cfg := DefaultConfig()
	cfg.CertsDir = dir
	secure := newServer(t, cfg, sp)
	plainURL, secureURL := serve(t, plain), serve(t, secure)

	// Before: the whole answer streams, chunked, without Content-Length.
	exp, res := want(t, sp, "udp", engine.Options{})
	resp, body, err := postQuery(t, http.DefaultClient, plainURL, "udp", nil)
	body = mustOK(t, resp, body, err)
	if !bytes.Equal(body, exp) || res.Packets != 3*synthPackets {
		t.Fatalf("answer of %d bytes, want %d (%d packets)", len(body), len(exp), res.Packets)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("long answer: Content-Length %d, Transfer-Encoding %v", resp.ContentLength, resp.TransferEncoding)
	}
	if got := resp.Trailer.Get(TrailerDamaged); got != "0" {
		t.Errorf("intact answer: trailer %s %q, want 0", TrailerDamaged, got)
	}

	// Spoil b in its middle and c from its first record on: 4096 bytes
	// touch 7 records of 616 bytes from a record's start.
	const spoiled = 7
	spoil(t, files["b"], 24+synthPackets/2*(16+600), 4096)
	spoil(t, files["c"], 24, 4096)
	beforeC := "udp and before " + synthC.Format(time.RFC3339)
	onlyC := "after " + synthC.Format(time.RFC3339)
	clients := map[string]struct {
		c   *http.Client
		url string
	}{
		"http/1.1":  {http.DefaultClient, plainURL},
		"https/1.1": {tlsClient(t, dir, false), secureURL},
		"https/2":   {tlsClient(t, dir, true), secureURL},
	}
	for name, cl := range clients {
		for _, tc := range []struct {
			q    string
			want int
		}{{beforeC, 2*synthPackets - spoiled}, {onlyC, synthPackets - spoiled}} {
			resp, body, err := postQuery(t, cl.c, cl.url, tc.q, nil)
			body = mustOK(t, resp, body, err)
			if n := countPcap(t, body); n != tc.want {
				t.Errorf("%s: %q: %d packets, want %d", name, tc.q, n, tc.want)
			}
			if got := resp.Trailer.Get(TrailerDamaged); got != strconv.Itoa(spoiled) {
				t.Errorf("%s: %q: trailer %s %q, want %d (%s: %q)", name, tc.q, TrailerDamaged, got, spoiled, TrailerDamage, resp.Trailer.Get(TrailerDamage))
			}
			if got := resp.Trailer.Get(TrailerDamage); !strings.Contains(got, "damaged record") {
				t.Errorf("%s: %q: trailer %s %q does not say what is wrong", name, tc.q, TrailerDamage, got)
			}
		}
		// The same through /v1/pcap in pcapng.
		resp, _, err := get(t, cl.c, cl.url+"/v1/pcap?format=pcapng&q="+url.QueryEscape(beforeC))
		if err != nil || resp.Trailer.Get(TrailerDamaged) != strconv.Itoa(spoiled) {
			t.Errorf("%s: pcapng download: %v, trailer %q", name, err, resp.Trailer.Get(TrailerDamaged))
		}
	}
	if got := sp.Counters().DamagedRecordsSkipped; got == 0 {
		t.Errorf("spool counted %d damaged records", got)
	}
	if v, _ := metricValue(t, plain, "stenod_spool_damaged_records_skipped_total", nil); v == 0 {
		t.Errorf("metric stenod_spool_damaged_records_skipped_total = %v", v)
	}
}

// spoil overwrites n bytes of a sealed spool file at off with 0xff, which
// makes every record header there claim an impossible length.
func spoil(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, n), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTruncatedSpoolFile cuts a sealed spool file in half (a disk error, an
// operator's mistake) and checks that a query over it returns every packet
// still there and counts the rest, that the file's index is rebuilt at once
// so that the next query finds nothing missing, and that the daemon
// survives. It runs in a child process because a crash (SIGBUS from a
// mapped file that shrank) would otherwise take every other test down with
// it.
func TestTruncatedSpoolFile(t *testing.T) {
	if os.Getenv("STENOD_API_TRUNCATION_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTruncatedSpoolFile$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "STENOD_API_TRUNCATION_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("query over a truncated spool file: %v\n%s", err, tail(out, 40))
		}
		return
	}
	sp, files := syntheticSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	base := serve(t, s)
	if err := os.Truncate(files["b"], 24+synthPackets/2*(16+600)+300); err != nil {
		t.Fatal(err)
	}
	q := "udp and before " + synthC.Format(time.RFC3339)
	resp, body, err := postQuery(t, http.DefaultClient, base, q, nil)
	body = mustOK(t, resp, body, err)
	left := synthPackets / 2 // the records of b past the cut
	if n := countPcap(t, body); n != 2*synthPackets-left {
		t.Errorf("answer over a cut file: %d packets, want %d", n, 2*synthPackets-left)
	}
	if got := resp.Trailer.Get(TrailerDamaged); got != strconv.Itoa(left) {
		t.Errorf("trailer %s %q, want %d", TrailerDamaged, got, left)
	}
	// The index is rebuilt in the background: soon a query misses nothing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body, err = postQuery(t, http.DefaultClient, base, q, nil)
		body = mustOK(t, resp, body, err)
		if resp.Trailer.Get(TrailerDamaged) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index of the cut file not rebuilt: trailer %s %q", TrailerDamaged, resp.Trailer.Get(TrailerDamaged))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := countPcap(t, body); n != 2*synthPackets-left {
		t.Errorf("answer after the repair: %d packets, want %d", n, 2*synthPackets-left)
	}
	if got := sp.Counters().FilesRepaired; got != 1 {
		t.Errorf("files repaired %d, want 1", got)
	}
	okBody(t)(get(t, http.DefaultClient, base+"/healthz"))
}

// tail returns the last n lines of out.
func tail(out []byte, n int) []byte {
	lines := bytes.Split(out, []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}

// blockingWriter stops a query after its first packet until its context
// ends, and says so.
type blockingWriter struct {
	pcapio.PacketWriter
	ctx     context.Context
	n       int
	started chan struct{}
	ended   chan error
}

func (b *blockingWriter) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	b.n++
	if b.n == 2 {
		close(b.started)
		select {
		case <-b.ctx.Done():
			b.ended <- context.Cause(b.ctx)
		case <-time.After(20 * time.Second):
			b.ended <- errors.New("query context never ended")
		}
	}
	if b.n >= 2 {
		// As the engine would on its next look at the context.
		return context.Cause(b.ctx)
	}
	return b.PacketWriter.WritePacket(ts, origLen, data, iface)
}

func blockQueries(s *Server) *blockingWriter {
	b := &blockingWriter{started: make(chan struct{}), ended: make(chan error, 1)}
	s.testHookWriter = func(ctx context.Context, w pcapio.PacketWriter) pcapio.PacketWriter {
		b.ctx, b.PacketWriter = ctx, w
		return b
	}
	return b
}

func TestClientGoingAwayCancelsQuery(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	base := serve(t, s)
	b := blockQueries(s)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/query", strings.NewReader("tcp"))
	errc := make(chan error, 1)
	go func() {
		_, _, err := do(http.DefaultClient, req)
		errc <- err
	}()
	<-b.started
	cancel()
	if err := <-b.ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("query context: %v", err)
	}
	if err := <-errc; err == nil {
		t.Fatal("cancelled request succeeded")
	}
	waitFor(t, "the query to stop", func() bool {
		v, _ := metricValue(t, s, "stenod_api_queries_total", map[string]string{"outcome": outcomeCancelled})
		r, _ := metricValue(t, s, "stenod_api_queries_running", nil)
		return v == 1 && r == 0
	})
}

func TestQueryTimeout(t *testing.T) {
	sp := importSpool(t)
	cfg := DefaultConfig()
	cfg.QueryTimeout = 100 * time.Millisecond
	s := newServer(t, cfg, sp)
	base := serve(t, s)
	b := blockQueries(s)
	resp, body, err := postQuery(t, http.DefaultClient, base, "tcp", nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "100ms") {
		t.Fatalf("timed-out query: %v %v %q", err, resp, body)
	}
	if err := <-b.ended; !errors.Is(err, errQueryTimeout) {
		t.Fatalf("query context ended with %v", err)
	}
}

// TestHostile sends what a hostile client might: slow headers are cut off by
// the server's timeouts, huge headers are refused.
func TestHostile(t *testing.T) {
	sp := importSpool(t)
	s := newServer(t, DefaultConfig(), sp)
	base := serve(t, s)
	req, _ := http.NewRequest(http.MethodPost, base+"/query", strings.NewReader("tcp"))
	req.Header.Set("X-Junk", strings.Repeat("a", 2*maxHeaderBytes))
	resp, _, err := do(http.DefaultClient, req)
	if err == nil && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("huge header: %v", resp.Status)
	}
	if readHeaderTimeout > 30*time.Second || readTimeout > time.Minute {
		t.Errorf("timeouts too long: %v %v", readHeaderTimeout, readTimeout)
	}
}
