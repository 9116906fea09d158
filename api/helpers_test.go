package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/certs"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// captures are the test captures the spool of most tests holds: DNS, HTTP
// over IPv4 and IPv6, ICMP; pcap and pcapng.
var captures = []string{
	"chrissanders-packets/dns.pcap",
	"chrissanders-packets/dns_query_response.pcapng",
	"chrissanders-packets/http_google.pcapng",
	"chrissanders-packets/http_ip4and6.pcapng",
	"chrissanders-packets/icmp_echo.pcapng",
}

// importSpool stores the test captures through spool.Import, one stream
// each, and seals them.
func importSpool(t *testing.T) *spool.Spool {
	t.Helper()
	return importFiles(t, testpcaps.Dir(t), captures)
}

// importFiles stores the captures names of dir, one stream each.
func importFiles(t *testing.T, dir string, names []string) *spool.Spool {
	t.Helper()
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{t.TempDir()}
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		w, err := sp.NewWriter(fmt.Sprintf("imp%d", i), fmt.Sprintf("eth%d", i))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = spool.Import(context.Background(), w, name, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	return sp
}

// Times of the synthetic streams of syntheticSpool.
var (
	synthA = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	synthB = time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC)
	synthC = time.Date(2020, 1, 3, 0, 0, 0, 0, time.UTC)
)

const synthPackets = 4000 // per stream, 600 bytes each: 2.4 MB a stream

// syntheticSpool holds three streams of UDP packets, a, b and c, a day
// apart, one sealed file each, and returns the paths of the files.
func syntheticSpool(t *testing.T) (*spool.Spool, map[string]string) {
	t.Helper()
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{t.TempDir()}
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		name  string
		start time.Time
	}{{"a", synthA}, {"b", synthB}, {"c", synthC}} {
		w, err := sp.NewWriter(st.name, st.name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range synthPackets {
			data := udpFrame(uint16(1000+i%50), 53, 600)
			var k flow.Key
			flow.Parse(data, &k)
			if err := w.Append(st.start.Add(time.Duration(i)*time.Millisecond).UnixNano(), len(data), data, &k); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range sp.Files() {
		files[f.Stream] = f.Path
	}
	if len(files) != 3 {
		t.Fatalf("want one file per stream, have %v", files)
	}
	return sp, files
}

// udpFrame builds an Ethernet/IPv4/UDP frame of size bytes.
func udpFrame(sport, dport uint16, size int) []byte {
	b := make([]byte, size)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], []byte{192, 0, 2, 1})
	copy(ip[16:20], []byte{198, 51, 100, 1})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	return b
}

// want answers text from sp with the engine directly: what the API must
// send, byte for byte.
func want(t *testing.T, sp *spool.Spool, text string, opts engine.Options) ([]byte, engine.Result) {
	t.Helper()
	q, err := query.Parse(text, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := pcapio.NewPcapWriter(&buf, sp.Config().SnapLen)
	if err != nil {
		t.Fatal(err)
	}
	res, err := engine.Run(context.Background(), sp, q, w, opts)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), res
}

// countPcap counts the records of a nanosecond pcap answer and checks that
// it ends on a record boundary.
func countPcap(t *testing.T, data []byte) int {
	t.Helper()
	rd, err := pcapio.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var p pcapio.Packet
	n := 0
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("answer record %d: %v", n, err)
		}
		n++
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newServer(t *testing.T, cfg Config, sp *spool.Spool) *Server {
	t.Helper()
	s, err := New(cfg, Options{Spool: sp, Registry: prometheus.NewRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve runs s on a real loopback listener until the test ends and returns
// its base URL.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	scheme := "http"
	if s.TLS() {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}

// makeCerts runs the code of `stenod certs init` into a new directory.
func makeCerts(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := certs.Init(dir, certs.DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tlsClient presents the client certificate of dir; h2 chooses HTTP/2.
func tlsClient(t *testing.T, dir string, h2 bool) *http.Client {
	t.Helper()
	tc, err := ClientTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: h2}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

func postQuery(t *testing.T, c *http.Client, url, text string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/query", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(c, req)
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(c, req)
}

// do returns the response and its whole body, or the error that ended it.
func do(c *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp, body, fmt.Errorf("read body: %w", err)
	}
	return resp, body, nil
}

func mustOK(t *testing.T, resp *http.Response, body []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL, resp.Status, body)
	}
	return body
}

// otherCA makes a client certificate signed by a CA the server does not
// know.
func otherCA(t *testing.T) tls.Certificate {
	t.Helper()
	dir := makeCerts(t)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.ClientCert), filepath.Join(dir, certs.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var errNotFound = errors.New("not found")

// metricValue reads a counter or gauge from the server's registry.
func metricValue(t *testing.T, s *Server, name string, labels map[string]string) (float64, error) {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), nil
			case m.Gauge != nil:
				return m.Gauge.GetValue(), nil
			}
		}
	}
	return 0, errNotFound
}

// okBody is mustOK for a call that returns a response, body and error.
func okBody(t *testing.T) func(*http.Response, []byte, error) []byte {
	return func(resp *http.Response, body []byte, err error) []byte {
		t.Helper()
		return mustOK(t, resp, body, err)
	}
}

// breakingWriter fails an answer after n packets, as a failed read of the
// spool would: the stream must be aborted, never ended as if whole.
type breakingWriter struct {
	pcapio.PacketWriter
	n int
}

func (b *breakingWriter) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	if b.n == 0 {
		return errors.New("test: the answer breaks off")
	}
	b.n--
	return b.PacketWriter.WritePacket(ts, origLen, data, iface)
}

// breakAnswers makes s's answers break off after n packets.
func breakAnswers(s *Server, n int) {
	s.testHookWriter = func(_ context.Context, w pcapio.PacketWriter) pcapio.PacketWriter {
		return &breakingWriter{PacketWriter: w, n: n}
	}
}

// exitCode is the exit status behind err (0 for nil, -1 if unknown).
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}
