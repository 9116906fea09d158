package api

import (
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection caps. Every open connection holds a file descriptor, and the
// capture side needs descriptors too (a new spool file at every rotation,
// its index, sockets, rings, BPF maps): a flood of idle connections that
// used them all up would make capture lose packets. So the API never holds
// more connections than the descriptor limit leaves after a reserve for
// capture, refuses connections over its caps at once, and drops those that
// say nothing within readHeaderTimeout.
const (
	// DefaultFDReserve is the number of descriptors kept for capture.
	DefaultFDReserve = 1024
	// DefaultMaxConns is the most connections the derived cap allows, however
	// high the descriptor limit: analysts need a handful, and each
	// connection costs memory besides its descriptor.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerClient is the most connections one client address
	// holds under the derived caps, so that one client cannot take every
	// slot.
	DefaultMaxConnsPerClient = 64
	// minConns is the least the derived total cap allows, even when the
	// descriptor limit leaves less: an API that refuses everything is
	// useless, and a few descriptors do not starve capture.
	minConns = 4
	// refusalLogInterval spaces the log lines about refused connections;
	// the counter has every one.
	refusalLogInterval = time.Minute
)

// Reasons a connection is refused: the label values of
// stenod_api_connections_refused_total.
const (
	refusedTotal     = "total"
	refusedPerClient = "per_client"
)

// ConnLimits are the connection caps in force and the figures they were
// derived from.
type ConnLimits struct {
	// Total caps the connections open at once; PerClient those of one
	// client address.
	Total, PerClient int
	// FDLimit is the soft RLIMIT_NOFILE the caps were derived from (0:
	// unknown) and FDReserve what they leave to capture.
	FDLimit   uint64
	FDReserve int
	// Clipped says that the configured total cap was lowered to fit the
	// descriptor limit; Starved that the limit leaves less than minConns
	// after the reserve.
	Clipped, Starved bool
}

// ConnLimits derives the connection caps from the configuration and the
// soft limit on open files (0: unknown). Half of what the limit leaves
// after FDReserve goes to connections, since a connection's query opens
// descriptors of its own (the spool files it reads); a configured cap above
// that is lowered to it.
func (c *Config) ConnLimits(fdLimit uint64) ConnLimits {
	l := ConnLimits{FDLimit: fdLimit, FDReserve: c.FDReserve}
	// room is what the descriptor limit allows; an unknown limit does not
	// lower a configured cap.
	room := math.MaxInt32
	if fdLimit > 0 {
		free := int64(fdLimit) - int64(c.FDReserve)
		room = int(min(max(free/2, 0), 1<<30))
		if room < minConns {
			room, l.Starved = minConns, true
		}
	}
	switch {
	case c.MaxConns == 0:
		l.Total = min(room, DefaultMaxConns)
	case c.MaxConns > room:
		l.Total, l.Clipped = room, true
	default:
		l.Total = c.MaxConns
	}
	l.PerClient = c.MaxConnsPerClient
	if l.PerClient == 0 {
		l.PerClient = max(1, min(DefaultMaxConnsPerClient, l.Total/4))
	}
	l.PerClient = min(l.PerClient, l.Total)
	return l
}

// connMetrics are the listener's series.
type connMetrics struct {
	open     prometheus.Gauge
	accepted prometheus.Counter
	refused  *prometheus.CounterVec // reason
	limit    *prometheus.GaugeVec   // scope: total, per_client
}

func newConnMetrics() *connMetrics {
	m := &connMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stenod_api_connections_open", Help: "API connections open now.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stenod_api_connections_accepted_total", Help: "API connections accepted.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stenod_api_connections_refused_total",
			Help: "API connections closed at once because a cap was reached: reason total (max connections) or per_client.",
		}, []string{"reason"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stenod_api_connections_limit", Help: "The connection caps in force, by scope: total or per_client.",
		}, []string{"scope"}),
	}
	m.refused.WithLabelValues(refusedTotal)
	m.refused.WithLabelValues(refusedPerClient)
	return m
}

func (m *connMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.open, m.accepted, m.refused, m.limit}
}

// limitListener enforces ConnLimits on the connections it accepts: one over
// a cap is closed before anything is read from it (TCP: with a reset, so
// that not even a TIME_WAIT entry stays).
type limitListener struct {
	net.Listener
	limits ConnLimits
	m      *connMetrics
	log    *slog.Logger

	mu       sync.Mutex
	open     int
	byClient map[string]int
	// lastLog is when a refusal was last logged; refusedSince counts those
	// not logged since.
	lastLog      time.Time
	refusedSince int
}

func newLimitListener(ln net.Listener, limits ConnLimits, m *connMetrics, log *slog.Logger) *limitListener {
	m.limit.WithLabelValues("total").Set(float64(limits.Total))
	m.limit.WithLabelValues("per_client").Set(float64(limits.PerClient))
	return &limitListener{Listener: ln, limits: limits, m: m, log: log, byClient: map[string]int{}}
}

// Accept returns the next connection within the caps, closing those over
// them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientKey(c.RemoteAddr())
		if reason := l.admit(client); reason != "" {
			l.refuse(c, client, reason)
			continue
		}
		l.m.accepted.Inc()
		l.m.open.Inc()
		return &limitConn{Conn: c, l: l, client: client}, nil
	}
}

// admit takes a slot for client, or says which cap is full.
func (l *limitListener) admit(client string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.limits.Total {
		return refusedTotal
	}
	if client != "" && l.byClient[client] >= l.limits.PerClient {
		return refusedPerClient
	}
	l.open++
	if client != "" {
		l.byClient[client]++
	}
	return ""
}

func (l *limitListener) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if client != "" {
		if l.byClient[client]--; l.byClient[client] <= 0 {
			delete(l.byClient, client)
		}
	}
}

func (l *limitListener) refuse(c net.Conn, client, reason string) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	l.m.refused.WithLabelValues(reason).Inc()
	l.mu.Lock()
	now := time.Now()
	l.refusedSince++
	logIt := now.Sub(l.lastLog) >= refusalLogInterval
	n := l.refusedSince
	if logIt {
		l.lastLog, l.refusedSince = now, 0
	}
	l.mu.Unlock()
	if logIt {
		l.log.Warn("API connection refused: cap reached (further refusals are counted in stenod_api_connections_refused_total, logged once a minute)",
			"reason", reason, "client", client, "refused_since_last_log", n,
			"max_connections", l.limits.Total, "max_connections_per_client", l.limits.PerClient)
	}
}

// clientKey is the address a per-client cap counts: the IP of a TCP peer.
// Unix socket peers (only root and the socket's group reach them) return
// "" and count toward the total cap only.
func clientKey(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip4 := ta.IP.To4(); ip4 != nil {
			return ip4.String()
		}
		return ta.IP.String()
	}
	return ""
}

// limitConn gives its slot back when closed, once.
type limitConn struct {
	net.Conn
	l      *limitListener
	client string
	once   sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.release(c.client)
		c.l.m.open.Dec()
	})
	return err
}
