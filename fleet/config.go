package fleet

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/stenod/stenod/internal/fielderr"
	"github.com/stenod/stenod/internal/loopback"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds one peer's whole answer: long enough for a
	// large pull over a WAN, short enough that a hung peer does not hold
	// the fleet answer for the daemon's whole query time limit.
	DefaultTimeout = 5 * time.Minute
	// DefaultStallTimeout is how long the merge waits for a peer that
	// sends nothing before it drops the peer. A peer holds back the first
	// 256 KiB of its answer (or all of a shorter one) until its query has
	// found them, which takes milliseconds on a healthy sensor.
	DefaultStallTimeout = 30 * time.Second
)

// Sensor is one peer of the fleet.
type Sensor struct {
	// Name names the sensor in answers ("name/iface" interfaces), trailers
	// and summaries: letters, digits, '.', '_' and '-', at most 64.
	Name string `json:"name"`
	// URL is the peer's API: https://host:port (http:// only for a
	// loopback address: packets never cross a network in clear).
	URL string `json:"url"`
	// Certs is a directory with ca_cert.pem, client_cert.pem and
	// client_key.pem (from 'stenod certs init'); required for https.
	Certs string `json:"certs,omitempty"`
}

// Config is the fleet: its peers and how long each may take.
type Config struct {
	// Sensors are the peers a fleet query asks, in the order ties in time
	// are broken. Empty: no fleet; the fleet endpoints answer 404.
	Sensors []Sensor
	// Timeout bounds each peer's answer, from request to last byte.
	Timeout time.Duration
	// StallTimeout drops a peer that sends nothing for this long while the
	// merge waits for its next packet; it also bounds /v1/fleet/stats.
	StallTimeout time.Duration
}

// DefaultConfig is an empty fleet with the default timeouts.
func DefaultConfig() Config {
	return Config{Sensors: []Sensor{}, Timeout: DefaultTimeout, StallTimeout: DefaultStallTimeout}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate reports the first impossible setting; fielderr.Field(err) names
// the Config field.
func (c *Config) Validate() error {
	switch {
	case c.Timeout <= 0:
		return fielderr.Errorf("Timeout", "fleet: timeout %v: want more than 0", c.Timeout)
	case c.StallTimeout <= 0:
		return fielderr.Errorf("StallTimeout", "fleet: stall timeout %v: want more than 0", c.StallTimeout)
	}
	seen := map[string]bool{}
	for i, s := range c.Sensors {
		if err := s.validate(); err != nil {
			return fielderr.Errorf("Sensors", "fleet: sensor %d: %w", i, err)
		}
		if seen[s.Name] {
			return fielderr.Errorf("Sensors", "fleet: sensor %d: name %q given twice", i, s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

func (s *Sensor) validate() error {
	if !nameRE.MatchString(s.Name) {
		// '/' would make "sensor/iface" ambiguous; the rest keeps names
		// safe in trailers, logs and file names.
		return fmt.Errorf("name %q: want 1 to 64 letters, digits, '.', '_' or '-'", s.Name)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return fmt.Errorf("%s: url %q: %w", s.Name, s.URL, err)
	}
	switch {
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return fmt.Errorf("%s: url %q: want https://host:port", s.Name, s.URL)
	case u.Scheme == "https" && s.Certs == "":
		return fmt.Errorf("%s: url %q is https: give certs, the directory with ca_cert.pem, client_cert.pem and client_key.pem", s.Name, s.URL)
	case u.Scheme == "http" && !loopback.Host(u.Hostname()):
		return fmt.Errorf("%s: url %q: plain http only to a loopback address; packets cross a network only over TLS", s.Name, s.URL)
	case u.Scheme == "http" && s.Certs != "":
		return fmt.Errorf("%s: url %q is plain http but certs are given: use https", s.Name, s.URL)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%s: url %q: want https://host:port", s.Name, s.URL)
	}
	return nil
}
