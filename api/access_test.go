package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TestConnLimits: the caps derived from the open files limit leave the
// reserve to capture, and configured caps are kept within them.
func TestConnLimits(t *testing.T) {
	for _, tc := range []struct {
		name              string
		maxConns, perConn int
		reserve           int
		fdLimit           uint64
		total, perClient  int
		clipped, starved  bool
	}{
		{"unknown limit", 0, 0, 1024, 0, 1024, 64, false, false},
		{"high limit", 0, 0, 1024, 1 << 20, 1024, 64, false, false},
		{"4096", 0, 0, 1024, 4096, 1024, 64, false, false},
		{"2048", 0, 0, 1024, 2048, 512, 64, false, false},
		{"1300", 0, 0, 1024, 1300, 138, 34, false, false},
		{"no room", 0, 0, 1024, 1024, minConns, 1, false, true},
		{"configured within", 100, 0, 1024, 1 << 20, 100, 25, false, false},
		{"configured, unknown limit", 5000, 0, 1024, 0, 5000, 64, false, false},
		{"configured above the room", 5000, 0, 1024, 4096, 1536, 64, true, false},
		{"configured per client", 0, 500, 1024, 1 << 20, 1024, 500, false, false},
		{"per client above total", 10, 50, 1024, 1 << 20, 10, 10, false, false},
		{"no reserve", 0, 0, 0, 512, 256, 64, false, false},
	} {
		cfg := DefaultConfig()
		cfg.MaxConns, cfg.MaxConnsPerClient, cfg.FDReserve = tc.maxConns, tc.perConn, tc.reserve
		l := cfg.ConnLimits(tc.fdLimit)
		if l.Total != tc.total || l.PerClient != tc.perClient || l.Clipped != tc.clipped || l.Starved != tc.starved {
			t.Errorf("%s: %+v, want total %d per client %d clipped %v starved %v", tc.name, l, tc.total, tc.perClient, tc.clipped, tc.starved)
		}
	}
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedFrom reports whether a connection from src to addr is closed by
// the server at once: reset before the dial returns, or closed right after.
func refusedFrom(t *testing.T, src, addr string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return closedBy(c, 5*time.Second)
}

// closedBy reports whether the server closed c within wait: a read then
// ends in EOF or a reset rather than the deadline.
func closedBy(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func waitMetric(t *testing.T, s *Server, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = metricValue(t, s, name, labels); err == nil && got == want {
			return
		}
	}
	t.Fatalf("%s%v = %v (%v), want %v", name, labels, got, err, want)
}

// TestConnectionCaps: connections over the per-client or the total cap are
// closed at once and counted, a client under its cap is still served
// while another holds all of its own, and connections that send nothing
// are closed after the header timeout.
func TestConnectionCaps(t *testing.T) {
	sp := importSpool(t)
	cfg := DefaultConfig()
	cfg.MaxConns, cfg.MaxConnsPerClient = 5, 2
	s := newServer(t, cfg, sp)
	base := serve(t, s)
	addr := strings.TrimPrefix(base, "http://")
	open := func(want float64) { t.Helper(); waitMetric(t, s, "stenod_api_connections_open", nil, want) }
	refused := func(reason string, want float64) {
		t.Helper()
		waitMetric(t, s, "stenod_api_connections_refused_total", map[string]string{"reason": reason}, want)
	}

	a1, a2 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)
	open(2)
	if !refusedFrom(t, "127.0.0.2", addr) {
		t.Error("a third connection from 127.0.0.2 was kept (per-client cap 2)")
	}
	refused(refusedPerClient, 1)
	dialFrom(t, "127.0.0.3", addr)
	dialFrom(t, "127.0.0.3", addr)
	dialFrom(t, "127.0.0.4", addr)
	open(5)
	if !refusedFrom(t, "127.0.0.5", addr) {
		t.Error("a sixth connection was kept (total cap 5)")
	}
	refused(refusedTotal, 1)
	if closedBy(a2, 100*time.Millisecond) {
		t.Error("a connection within the caps was closed")
	}

	// A slot given back serves another client at once.
	a1.Close()
	open(4)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := okBody(t)(postQuery(t, c, base, "port 53", nil))
	if countPcap(t, body) == 0 {
		t.Error("no packets in the answer")
	}
	tr.CloseIdleConnections()

	// The idle connections say nothing: the server drops them after the
	// header timeout, and every slot comes back.
	start := time.Now()
	if !closedBy(a2, readHeaderTimeout+5*time.Second) {
		t.Errorf("an idle connection was kept beyond the header timeout %v", readHeaderTimeout)
	}
	t.Logf("idle connection closed after %v", time.Since(start).Round(time.Millisecond))
	open(0)
	if v, _ := metricValue(t, s, "stenod_api_connections_limit", map[string]string{"scope": "per_client"}); v != 2 {
		t.Errorf("stenod_api_connections_limit{scope=per_client} = %v, want 2", v)
	}
}

// TestServeWarnsOnLoopbackTCP: plain HTTP on loopback is served, with a
// warning that every local user can read the packets.
func TestServeWarnsOnLoopbackTCP(t *testing.T) {
	var logs testutil.SyncBuffer
	s, err := New(DefaultConfig(), Options{Spool: importSpool(t), Registry: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)
	okBody(t)(get(t, http.DefaultClient, base+"/healthz"))
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "any local user can read every captured packet") {
		t.Errorf("no warning about loopback TCP without certificates:\n%s", logs.String())
	}
}

// serveUnix listens with s.Listen and serves until stop is called.
func serveUnix(t *testing.T, s *Server) (stop func()) {
	t.Helper()
	ln, err := s.Listen(context.Background(), KeepOwner())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestUnixSocket: the socket and the directory made for it let only the
// owner and the group in; a stale socket is replaced, a live one or a file
// that is not a socket is not; the socket goes when the server stops; Unix
// clients count toward the total cap only.
func TestUnixSocket(t *testing.T) {
	sp := importSpool(t)
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("own group: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "stenod.sock")
	cfg := DefaultConfig()
	cfg.Socket, cfg.SocketGroup = path, g.Name
	cfg.MaxConns, cfg.MaxConnsPerClient = 3, 1
	s := newServer(t, cfg, sp)
	stop := serveUnix(t, s)

	for p, want := range map[string]os.FileMode{dir: 0o750 | os.ModeDir, path: 0o660 | os.ModeSocket} {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), want)
		}
		if gid := st.Sys().(*syscall.Stat_t).Gid; int(gid) != os.Getgid() {
			t.Errorf("%s: group %d, want %s (%d)", p, gid, g.Name, os.Getgid())
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%s holds %v, want the socket alone", dir, ents)
	}
	tr := UnixTransport(path)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := okBody(t)(postQuery(t, c, "http://stenod", "port 53", nil))
	if countPcap(t, body) == 0 {
		t.Error("no packets over the socket")
	}
	tr.CloseIdleConnections()
	waitMetric(t, s, "stenod_api_connections_open", nil, 0)

	// Per-client cap 1, total 3: Unix clients count toward the total only.
	var conns []net.Conn
	for range 4 {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	waitMetric(t, s, "stenod_api_connections_open", nil, 3)
	waitMetric(t, s, "stenod_api_connections_refused_total", map[string]string{"reason": refusedTotal}, 1)
	for _, conn := range conns {
		conn.Close()
	}

	// A second server on a live socket is refused, and leaves it alone.
	s2 := newServer(t, cfg, sp)
	if _, err := s2.Listen(context.Background(), KeepOwner()); err == nil || !strings.Contains(err.Error(), "another process answers") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the live socket is gone: %v", err)
	}

	stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the server stopped: %v", err)
	}

	// A stale socket (no one answers) is replaced.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	var logs testutil.SyncBuffer
	s3, err := New(cfg, Options{Spool: sp, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop3 := serveUnix(t, s3)
	okBody(t)(get(t, &http.Client{Transport: UnixTransport(path), Timeout: 30 * time.Second}, "http://stenod/healthz"))
	if !strings.Contains(logs.String(), "removed a stale API socket") {
		t.Errorf("the stale socket's removal was not logged:\n%s", logs.String())
	}
	stop3()

	// Anything but a socket is not ours to remove.
	if err := os.WriteFile(path, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newServer(t, cfg, sp).Listen(context.Background(), KeepOwner()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listener over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "not a socket" {
		t.Errorf("the regular file was touched: %q %v", b, err)
	}
}

// TestTLSHandshakeTimeout: a connection to the TLS server that never starts
// its handshake is closed after the header timeout, its slot given back.
func TestTLSHandshakeTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CertsDir = makeCerts(t)
	s := newServer(t, cfg, importSpool(t))
	base := serve(t, s)
	c := dialFrom(t, "127.0.0.1", strings.TrimPrefix(base, "https://"))
	waitMetric(t, s, "stenod_api_connections_open", nil, 1)
	start := time.Now()
	if !closedBy(c, readHeaderTimeout+5*time.Second) {
		t.Fatalf("a connection without a TLS handshake was kept beyond %v", readHeaderTimeout+5*time.Second)
	}
	if d := time.Since(start); d < readHeaderTimeout-time.Second {
		t.Errorf("closed after %v, before the header timeout %v", d, readHeaderTimeout)
	}
	waitMetric(t, s, "stenod_api_connections_open", nil, 0)
}
