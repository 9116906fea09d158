package ipfix

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/stenod/stenod/internal/fielderr"
)

// Config configures the export. The zero value exports nothing.
type Config struct {
	// Collectors are where records go: udp://HOST:PORT or tcp://HOST:PORT.
	// None: no export.
	Collectors []string
	// ActiveTimeout: a flow with packets for this long is exported and
	// its counters start again (a long flow is exported every
	// ActiveTimeout, with the packets since the last record).
	ActiveTimeout time.Duration
	// IdleTimeout: a flow without a packet for this long is exported and
	// forgotten.
	IdleTimeout time.Duration
	// TemplateRefresh is how often templates are sent again over UDP,
	// where a collector that (re)starts learns them only so. TCP sends
	// them on every connection.
	TemplateRefresh time.Duration
	// SensorID is the observation domain id of every message, 0 to
	// 4294967295 (0: IPFIX's "no particular domain").
	SensorID int64
	// EnterpriseNumber is the Private Enterprise Number of the
	// enterprise-specific fields (DefaultEnterpriseNumber), 1 to
	// 4294967295.
	EnterpriseNumber int64
	// BaseURL is the sensor's API as a collector's user reaches it, sent
	// with every record; "" lets stenod run derive it from the API's
	// configuration.
	BaseURL string
}

// Defaults, as a real exporter's (Cisco's, ipt-netflow's).
const (
	DefaultActiveTimeout   = 60 * time.Second
	DefaultIdleTimeout     = 15 * time.Second
	DefaultTemplateRefresh = 60 * time.Second
)

// DefaultConfig returns the defaults: no collector.
func DefaultConfig() Config {
	return Config{
		Collectors:       []string{},
		ActiveTimeout:    DefaultActiveTimeout,
		IdleTimeout:      DefaultIdleTimeout,
		TemplateRefresh:  DefaultTemplateRefresh,
		EnterpriseNumber: DefaultEnterpriseNumber,
	}
}

// Validate checks c, naming the field (internal/fielderr).
func (c *Config) Validate() error {
	for _, s := range c.Collectors {
		if _, _, err := ParseCollector(s); err != nil {
			return &fielderr.Error{Field: "Collectors", Err: err}
		}
	}
	switch {
	case c.ActiveTimeout < time.Second:
		return fielderr.Errorf("ActiveTimeout", "%v: at least 1s", c.ActiveTimeout)
	case c.IdleTimeout < time.Second:
		return fielderr.Errorf("IdleTimeout", "%v: at least 1s", c.IdleTimeout)
	case c.TemplateRefresh < time.Second:
		return fielderr.Errorf("TemplateRefresh", "%v: at least 1s", c.TemplateRefresh)
	case c.SensorID < 0 || c.SensorID > math.MaxUint32:
		return fielderr.Errorf("SensorID", "%d outside [0, 4294967295]", c.SensorID)
	case c.EnterpriseNumber == 0:
		return fielderr.Errorf("EnterpriseNumber", "0 is not a Private Enterprise Number (0 means IANA's own elements)")
	case c.EnterpriseNumber < 0 || c.EnterpriseNumber > math.MaxUint32:
		return fielderr.Errorf("EnterpriseNumber", "%d outside [1, 4294967295]", c.EnterpriseNumber)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fielderr.Errorf("BaseURL", "%q is not an http:// or https:// URL", c.BaseURL)
		}
	}
	return nil
}

// ParseCollector splits "udp://HOST:PORT" or "tcp://HOST:PORT" into the
// network and the address.
func ParseCollector(s string) (network, addr string, err error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
		return "", "", fmt.Errorf("collector %q: want udp://HOST:PORT or tcp://HOST:PORT", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", "", fmt.Errorf("collector %q: %w", s, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "", fmt.Errorf("collector %q: port %q", s, port)
	}
	return u.Scheme, net.JoinHostPort(host, port), nil
}

// ScanInterval is how often the exporter reads the live indexes: a
// third of the shorter timeout, within [1 s, 5 s] (5 s at the defaults).
// Records leave at most this long after their timeout; a packet reaches
// the live index within capture's flush interval (at most a second) of
// arriving. A scan reads every flow of the live indexes, busy or not
// (about 5 ms for 65,536 flows in BenchmarkCaptureExport): once a second
// that was 5% of capture's CPU at 400,000 packets a second, every 5 s it
// is 1%.
func (c *Config) ScanInterval() time.Duration {
	d := min(c.IdleTimeout, c.ActiveTimeout) / 3
	return min(max(d, minScanInterval), maxScanInterval)
}

const (
	minScanInterval = time.Second
	maxScanInterval = 5 * time.Second
)
