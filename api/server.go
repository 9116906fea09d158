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
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// Bounds on what a request may ask for.
const (
	// DefaultListen is stenographer's default port, on loopback, so that
	// stenoread configured for stenographer finds stenod unchanged.
	DefaultListen = "127.0.0.1:1234"
	// DefaultMaxQueryBytes bounds a /query body; real queries are a few
	// hundred bytes.
	DefaultMaxQueryBytes = 64 << 10
	// MaxFlows bounds the limit parameter of /v1/flows; DefaultFlows is used
	// when it is absent.
	MaxFlows     = 100_000
	DefaultFlows = 1000

	readHeaderTimeout = 10 * time.Second
	// readTimeout covers headers and body; a /query body is small, so a
	// client that trickles it is hostile.
	readTimeout    = 30 * time.Second
	idleTimeout    = 2 * time.Minute
	maxHeaderBytes = 64 << 10
	// shutdownGrace is how long running answers may go on after Serve's
	// context ends, before their connections are closed.
	shutdownGrace = 5 * time.Second
)

// Config is the server's listening address and query bounds.
type Config struct {
	// Listen is the TCP address to serve on. Anything but a loopback
	// address needs CertsDir.
	Listen string
	// CertsDir, when set, holds the files of `stenod certs init`; the server
	// then speaks only TLS and requires a client certificate signed by
	// ca_cert.pem.
	CertsDir string
	// QueryTimeout stops a query that runs longer (0: no limit). An answer
	// stopped this way is aborted, never delivered as if it were whole.
	// The default bounds how long a forgotten or stuck client can keep
	// deleted spool files allocated.
	QueryTimeout time.Duration
	// MaxQueryBytes bounds the body of POST /query.
	MaxQueryBytes int64
}

// DefaultQueryTimeout is the default Config.QueryTimeout.
const DefaultQueryTimeout = 10 * time.Minute

// DefaultConfig returns a loopback-only server without TLS and with a
// query time limit of DefaultQueryTimeout.
func DefaultConfig() Config {
	return Config{Listen: DefaultListen, MaxQueryBytes: DefaultMaxQueryBytes, QueryTimeout: DefaultQueryTimeout}
}

// Validate reports the first impossible or unsafe setting. Serving packets
// on a reachable address without client certificates is refused: a
// full-packet capture holds every password and session cookie that crossed
// the wire.
func (c *Config) Validate() error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("api: listen address %q: %w", c.Listen, err)
	}
	switch {
	case c.CertsDir == "" && !isLoopbackHost(host):
		return fmt.Errorf("api: refusing to listen on %s without TLS: "+
			"any address but loopback (127.0.0.1, ::1, localhost) needs client certificates "+
			"(create them with 'stenod certs init DIR' and set the certs directory)", c.Listen)
	case c.QueryTimeout < 0:
		return fmt.Errorf("api: query timeout %v is negative", c.QueryTimeout)
	case c.MaxQueryBytes < 1<<10 || c.MaxQueryBytes > 16<<20:
		return fmt.Errorf("api: max query bytes %d outside [1 KiB, 16 MiB]", c.MaxQueryBytes)
	}
	return nil
}

// isLoopbackHost reports whether host names only loopback addresses. An
// empty host means every address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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
}

// Server serves the HTTP API. It owns no listener until Serve is called.
type Server struct {
	cfg     Config
	sp      *spool.Spool
	reg     *prometheus.Registry
	stats   func() any
	log     *slog.Logger
	tls     *tls.Config
	metrics *metrics
	handler http.Handler
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
	s := &Server{cfg: cfg, sp: opts.Spool, reg: opts.Registry, stats: opts.Stats, log: opts.Logger}
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
	if err := s.reg.Register(newSpoolCollector(s.sp)); err != nil {
		return nil, fmt.Errorf("api: register spool metrics: %w", err)
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the API's routes, without TLS: for tests and for callers
// that run their own http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// TLS reports whether the server requires TLS client certificates.
func (s *Server) TLS() bool { return s.tls != nil }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.observe)
	r.Post("/query", s.handleQuery)
	r.Get("/v1/pcap", s.handlePcap)
	r.Get("/v1/flows", s.handleFlows)
	r.Get("/v1/stats", s.handleStats)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		Registry: s.reg,
	}))
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if _, err := w.Write([]byte("ok\n")); err != nil {
			s.log.Debug("write healthz", "err", err)
		}
	})
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

// ListenAndServe listens on cfg.Listen and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then stops accepting, gives running
// answers a few seconds and closes what is left; it closes ln. It returns
// nil after such a shutdown. Without TLS it refuses a listener that is not
// on a loopback address, whatever cfg.Listen said.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.tls == nil {
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			return errors.Join(fmt.Errorf("api: refusing to serve on %v without TLS client certificates", ta), ln.Close())
		}
	}
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
	s.log.Info("API listening", "addr", ln.Addr().String(), "tls", s.tls != nil)
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
