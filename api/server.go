package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stenod/stenod/alert"
	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/internal/fielderr"
	"github.com/stenod/stenod/internal/loopback"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// Addresses and bounds on what a request may ask for.
const (
	// DefaultSocket is the Unix socket the API listens on when no TCP
	// address is configured and there are no client certificates: only
	// root and the members of SocketGroup can connect to it.
	DefaultSocket = "/run/stenod/stenod.sock"
	// DefaultSocketGroup is the group that may connect to the socket: the
	// group that may also read the spool files (mode 0640).
	DefaultSocketGroup = "stenod"
	// DefaultListen is stenographer's default port, on loopback: the TCP
	// address used with client certificates when Listen is empty, so that
	// stenoread configured for stenographer finds stenod unchanged.
	DefaultListen = "127.0.0.1:1234"
	// DefaultMaxQueryBytes bounds a /query body; real queries are a few
	// hundred bytes.
	DefaultMaxQueryBytes = 64 << 10
	// MaxFlows bounds the limit parameter of /v1/flows; DefaultFlows is used
	// when it is absent.
	MaxFlows     = 100_000
	DefaultFlows = 1000

	// readHeaderTimeout bounds the wait for a request's headers, and so
	// (net/http takes the smallest of its timeouts) the TLS handshake: a
	// connection that says nothing gives its descriptor back within it.
	readHeaderTimeout = 5 * time.Second
	// readTimeout covers headers and body; a /query body is small, so a
	// client that trickles it is hostile.
	readTimeout = 30 * time.Second
	// idleTimeout bounds how long a kept-alive connection may wait for its
	// next request while holding a descriptor and a connection slot.
	idleTimeout    = 30 * time.Second
	maxHeaderBytes = 64 << 10
	// shutdownGrace is how long running answers may go on after Serve's
	// context ends, before their connections are closed.
	shutdownGrace = 5 * time.Second
)

// Config is where the server listens, who may connect and what a request
// may ask for.
type Config struct {
	// Listen is a TCP address to serve on. Empty (the default): the Unix
	// socket Socket without CertsDir, DefaultListen with it. A loopback
	// address without CertsDir is allowed, with a warning (any local user
	// can connect); any other address needs CertsDir.
	Listen string
	// Socket is the Unix socket's path, used when Listen is empty and
	// CertsDir is not set. Its directory is created mode 0750 when missing.
	Socket string
	// SocketGroup is the group given the socket (mode 0660) and the
	// directories created for it: its members, and root, can connect. When
	// the group does not exist, the socket keeps the daemon's own group.
	SocketGroup string
	// CertsDir, when set, holds the files of `stenod certs init`; the server
	// then speaks only TLS and requires a client certificate signed by
	// ca_cert.pem.
	CertsDir string
	// PProf mounts Go's profiler at /debug/pprof/. Off, that path is 404:
	// profiles show memory that holds packets.
	PProf bool
	// QueryTimeout stops a query that runs longer (0: no limit). An answer
	// stopped this way is aborted, never delivered as if it were whole.
	// The default bounds how long a forgotten or stuck client can keep
	// deleted spool files allocated.
	QueryTimeout time.Duration
	// MaxQueryBytes bounds the body of POST /query.
	MaxQueryBytes int64
	// MaxConns caps the connections open at once, and MaxConnsPerClient
	// those from one client address (Unix socket clients count toward
	// MaxConns only); a connection over a cap is closed at once. 0 derives
	// the cap from the file descriptor limit (see ConnLimits).
	MaxConns          int
	MaxConnsPerClient int
	// FDReserve is the number of file descriptors the connection caps
	// leave to capture: spool files, rings, BPF maps, indexes.
	FDReserve int
	// CommunityIDSeed is the seed of the Community IDs the API shows and
	// that the query primitive community-id compares: the seed of the
	// monitors whose IDs analysts bring (Zeek's and Suricata's, 0 unless
	// they were configured otherwise).
	CommunityIDSeed int
	// AlertWindow is how far before and after an event's time POST
	// /v1/alert looks for its connection's packets (clipped to the
	// connection's life when the event tells it).
	AlertWindow time.Duration
}

// DefaultQueryTimeout is the default Config.QueryTimeout.
const DefaultQueryTimeout = 10 * time.Minute

// DefaultConfig returns a server on the Unix socket DefaultSocket, without
// TLS or pprof, with a query time limit of DefaultQueryTimeout and
// connection caps derived from the file descriptor limit.
func DefaultConfig() Config {
	return Config{
		Socket:        DefaultSocket,
		SocketGroup:   DefaultSocketGroup,
		MaxQueryBytes: DefaultMaxQueryBytes,
		FDReserve:     DefaultFDReserve,
		QueryTimeout:  DefaultQueryTimeout,
		AlertWindow:   alert.DefaultWindow,
	}
}

// Network returns where the server listens: "unix" and the socket's path,
// or "tcp" and an address.
func (c *Config) Network() (network, address string) {
	switch {
	case c.Listen != "":
		return "tcp", c.Listen
	case c.CertsDir != "":
		return "tcp", DefaultListen
	}
	return "unix", c.Socket
}

// maxSocketPath is the longest path a Unix socket address holds
// (sun_path's 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// Validate reports the first impossible or unsafe setting (fielderr.Field(err)
// names the Config field). Serving packets
// on a reachable address without client certificates is refused: a
// full-packet capture holds every password and session cookie that crossed
// the wire.
func (c *Config) Validate() error {
	network, addr := c.Network()
	if network == "tcp" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fielderr.Errorf("Listen", "api: listen address %q: %w", addr, err)
		}
		if c.CertsDir == "" && !loopback.Host(host) {
			return fielderr.Errorf("Listen", "api: refusing to listen on %s without TLS: "+
				"any address but loopback (127.0.0.1, ::1, localhost) needs client certificates "+
				"(create them with 'stenod certs init DIR' and set the certs directory)", addr)
		}
	} else {
		switch {
		case !filepath.IsAbs(addr):
			return fielderr.Errorf("Socket", "api: socket %q: want an absolute path", addr)
		case len(addr) > maxSocketPath:
			return fielderr.Errorf("Socket", "api: socket %q: longer than the %d bytes a Unix socket path may have", addr, maxSocketPath)
		}
	}
	switch {
	case c.QueryTimeout < 0:
		return fielderr.Errorf("QueryTimeout", "api: query timeout %v is negative", c.QueryTimeout)
	case c.MaxQueryBytes < 1<<10 || c.MaxQueryBytes > 16<<20:
		return fielderr.Errorf("MaxQueryBytes", "api: max query bytes %d outside [1 KiB, 16 MiB]", c.MaxQueryBytes)
	case c.MaxConns < 0:
		return fielderr.Errorf("MaxConns", "api: max connections %d is negative (0: derived from the file descriptor limit)", c.MaxConns)
	case c.MaxConnsPerClient < 0:
		return fielderr.Errorf("MaxConnsPerClient", "api: max connections per client %d is negative (0: derived)", c.MaxConnsPerClient)
	case c.FDReserve < 0:
		return fielderr.Errorf("FDReserve", "api: file descriptor reserve %d is negative", c.FDReserve)
	case c.AlertWindow <= 0 || c.AlertWindow > MaxAlertWindow:
		return fielderr.Errorf("AlertWindow", "api: alert window %v outside (0, %v]", c.AlertWindow, MaxAlertWindow)
	case c.CommunityIDSeed < 0 || c.CommunityIDSeed > 0xffff:
		return fielderr.Errorf("CommunityIDSeed", "api: community id seed %d outside [0, 65535]", c.CommunityIDSeed)
	}
	return nil
}

// Options are what the server serves from.
type Options struct {
	// Spool answers the queries. Required.
	Spool *spool.Spool
	// Registry receives the API's metrics and is what /metrics serves. When
	// nil, a private registry holds only the API's metrics.
	Registry *prometheus.Registry
	// Stats returns the capture side's figures for /v1/stats, as any value
	// encoding/json can encode. May be nil.
	Stats func() any
	// Logger receives request and error logs. When nil, nothing is logged.
	Logger *slog.Logger
	// FDLimit is the process's soft limit on open files (RLIMIT_NOFILE),
	// which the connection caps are derived from; 0: unknown.
	FDLimit uint64
	// Health reports whether the capture side still works; a non-nil
	// error makes /healthz answer 503 with its text. May be nil.
	Health func() error
	// Config is the daemon's effective configuration as JSON, served at
	// /debug/config (stenographer serves its own there). Nil: 404.
	Config []byte
	// Fleet lists the sensors /v1/fleet/ asks; without sensors those
	// endpoints answer 404.
	Fleet fleet.Config
	// Cutoff is the capture's per-connection cutoff, nil when it is off:
	// POST /v1/cutoff/suspend then answers 503, and /metrics and
	// /v1/stats have no cutoff figures.
	Cutoff Cutoff
}

// Server serves the HTTP API. It owns no listener until Serve is called.
type Server struct {
	cfg     Config
	sp      *spool.Spool
	reg     *prometheus.Registry
	stats   func() any
	health  func() error
	config  []byte
	log     *slog.Logger
	tls     *tls.Config
	metrics *metrics
	conns   *connMetrics
	limits  ConnLimits
	handler http.Handler
	fleet   *fleet.Fleet // nil without fleet sensors
	cutoff  Cutoff       // nil without the cutoff
	// priorityWarn says once that query threads cannot be lowered.
	priorityWarn sync.Once

	// Test hooks, nil outside tests: called on a query's thread once its
	// priority is lowered, and wrapping a query's packet writer.
	testHookQueryThread func()
	testHookWriter      func(ctx context.Context, w pcapio.PacketWriter) pcapio.PacketWriter
}

// New checks cfg, loads the TLS files if cfg.CertsDir is set and registers
// the API's metrics in opts.Registry (an error if they are already there).
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Spool == nil {
		return nil, errors.New("api: no spool")
	}
	s := &Server{cfg: cfg, sp: opts.Spool, reg: opts.Registry, stats: opts.Stats, health: opts.Health, log: opts.Logger,
		config: opts.Config, cutoff: opts.Cutoff}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.CertsDir != "" {
		var err error
		if s.tls, err = ServerTLSConfig(cfg.CertsDir); err != nil {
			return nil, err
		}
	}
	var err error
	if s.metrics, err = newMetrics(s.reg); err != nil {
		return nil, err
	}
	s.conns = newConnMetrics()
	for _, c := range s.conns.collectors() {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register connection metrics: %w", err)
		}
	}
	s.limits = cfg.ConnLimits(opts.FDLimit)
	if err := s.reg.Register(newSpoolCollector(s.sp)); err != nil {
		return nil, fmt.Errorf("api: register spool metrics: %w", err)
	}
	if s.cutoff != nil {
		if err := s.reg.Register(newCutoffCollector(s.cutoff)); err != nil {
			return nil, fmt.Errorf("api: register cutoff metrics: %w", err)
		}
	}
	if s.fleet, err = newFleet(s, opts.Fleet); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// parseQuery parses an analyst's query with the sensor's options.
func (s *Server) parseQuery(text string) (*query.Query, error) {
	return query.ParseWith(text, time.Now(), query.Options{CommunityIDSeed: uint16(s.cfg.CommunityIDSeed)})
}

// Handler returns the API's routes, without TLS: for tests and for callers
// that run their own http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// TLS reports whether the server requires TLS client certificates.
func (s *Server) TLS() bool { return s.tls != nil }

// Limits returns the connection caps Serve enforces.
func (s *Server) Limits() ConnLimits { return s.limits }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.observe)
	r.Post("/query", s.handleQuery)
	r.Get("/v1/pcap", s.handlePcap)
	r.Get("/v1/flows", s.handleFlows)
	r.Post("/v1/alert", s.handleAlert)
	r.Get("/v1/stats", s.handleStats)
	r.Post("/v1/cutoff/suspend", s.handleCutoffSuspend)
	r.Post("/v1/fleet/query", s.handleFleetQuery)
	r.Get("/v1/fleet/stats", s.handleFleetStats)
	s.webRoutes(r)
	// stenographer's debugging pages, as stenocurl asks for them.
	r.Get("/debug/stats", s.handleDebugStats)
	r.Get("/debug/config", s.handleDebugConfig)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		Registry: s.reg,
	}))
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		body := "ok\n"
		if s.health != nil {
			if err := s.health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				body = err.Error() + "\n"
			}
		}
		if _, err := w.Write([]byte(body)); err != nil {
			s.log.Debug("write healthz", "err", err)
		}
	})
	if !s.cfg.PProf {
		return r
	}
	// Mounted explicitly: importing net/http/pprof registers on
	// http.DefaultServeMux, which stenod never serves.
	r.HandleFunc("/debug/pprof/", pprof.Index)
	r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	r.HandleFunc("/debug/pprof/profile", pprof.Profile)
	r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	r.HandleFunc("/debug/pprof/trace", pprof.Trace)
	r.HandleFunc("/debug/pprof/{name}", pprof.Index)
	return r
}

// ListenAndServe listens where cfg says (Listen, with KeepOwner) and serves
// until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := s.Listen(ctx, KeepOwner())
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then stops accepting, gives running
// answers a few seconds and closes what is left; it closes ln. It returns
// nil after such a shutdown. Without TLS it refuses a listener that is not
// on a loopback address, whatever cfg.Listen said, and warns about one
// that is. It enforces the connection caps of Limits on ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.tls == nil {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			if !ta.IP.IsLoopback() {
				return errors.Join(fmt.Errorf("api: refusing to serve on %v without TLS client certificates", ta), ln.Close())
			}
			s.log.Warn("API on loopback TCP without client certificates: any local user can read every captured packet; "+
				"leave the listen address empty for the Unix socket (root and the socket group only), or set a certs directory",
				"addr", ta.String())
		}
	}
	l := s.limits
	if l.Clipped {
		s.log.Warn("API max connections lowered to what the file descriptor limit leaves after the reserve for capture",
			"configured", s.cfg.MaxConns, "max_connections", l.Total, "fd_limit", l.FDLimit, "fd_reserve", l.FDReserve)
	}
	if l.Starved {
		s.log.Warn("the file descriptor limit leaves almost nothing for API connections after the reserve for capture: raise it (LimitNOFILE, ulimit -n)",
			"fd_limit", l.FDLimit, "fd_reserve", l.FDReserve, "max_connections", l.Total)
	}
	ln = newLimitListener(ln, l, s.conns, s.log)
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tls,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// No WriteTimeout: an answer may stream for as long as the query
		// runs; Config.QueryTimeout bounds that when wanted.
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	s.log.Info("API listening", "network", ln.Addr().Network(), "addr", ln.Addr().String(), "tls", s.tls != nil, "pprof", s.cfg.PProf,
		"max_connections", l.Total, "max_connections_per_client", l.PerClient, "fd_limit", l.FDLimit, "fd_reserve", l.FDReserve,
		"header_timeout", readHeaderTimeout, "idle_timeout", idleTimeout)
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Closing the connections cancels the queries still running.
		s.log.Warn("API shutdown: closing connections of unfinished answers", "err", err)
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// metrics are the API's own series.
type metrics struct {
	requests *prometheus.CounterVec   // route, code
	duration *prometheus.HistogramVec // route
	queries  *prometheus.CounterVec   // outcome
	packets  prometheus.Counter
	bytes    prometheus.Counter
	running  prometheus.Gauge
}

// Query outcomes, the label values of stenod_api_queries_total.
const (
	outcomeComplete  = "complete"
	outcomeLimited   = "limited"
	outcomeBadQuery  = "bad_request"
	outcomeFailed    = "failed"    // error before the answer started: 5xx with a message
	outcomeAborted   = "aborted"   // error after the answer started: stream aborted
	outcomeCancelled = "cancelled" // the client went away
	outcomeTimeout   = "timeout"   // Config.QueryTimeout
	outcomeRevoked   = "revoked"   // cut off: capture needed the space of deleted files it read (spool.ErrRevoked)
)

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stenod_api_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stenod_api_request_duration_seconds", Help: "Time from request to the end of the answer, by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stenod_api_queries_total", Help: "Packet and flow queries by outcome.",
		}, []string{"outcome"}),
		packets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stenod_api_answer_packets_total", Help: "Packets sent in query answers.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stenod_api_answer_record_bytes_total", Help: "Pcap record bytes (headers included) sent in query answers.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stenod_api_queries_running", Help: "Queries being answered now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.queries, m.packets, m.bytes, m.running} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	for _, o := range []string{outcomeComplete, outcomeLimited, outcomeBadQuery, outcomeFailed, outcomeAborted, outcomeCancelled, outcomeTimeout, outcomeRevoked} {
		m.queries.WithLabelValues(o)
	}
	return m, nil
}

// recorder notes the status and size of a response for logs and metrics.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and friends.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// observe logs and counts every request. It records in a defer so that an
// aborted answer (a panic with http.ErrAbortHandler) is counted too.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			p := recover()
			route := "other"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			code := strconv.Itoa(rec.status)
			if p != nil {
				code = "aborted"
			} else if rec.status == 0 {
				code = "200"
			}
			d := time.Since(start)
			s.metrics.requests.WithLabelValues(route, code).Inc()
			s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
			level := slog.LevelInfo
			if route == "/metrics" || route == "/healthz" {
				level = slog.LevelDebug
			}
			attrs := []any{"method", r.Method, "path", r.URL.Path, "code", code, "bytes", rec.bytes,
				"duration", d, "remote", r.RemoteAddr}
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				attrs = append(attrs, "client", r.TLS.PeerCertificates[0].Subject.CommonName)
			}
			s.log.Log(r.Context(), level, "request", attrs...)
			if p != nil {
				// Re-panic: net/http closes the connection without ending the
				// answer, which is what tells the client it is incomplete.
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}
