package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stenod/stenod/pcapio"
)

// Names of the HTTP headers and trailers the fleet reads from its peers and
// writes in its own answers (docs/api.md).
const (
	// TrailerSummary holds the Summary of a fleet answer as one line of
	// JSON; TrailerMissing the names of the sensors missing from it,
	// comma separated ("" when none).
	TrailerSummary = "Stenod-Fleet-Summary"
	TrailerMissing = "Stenod-Fleet-Missing"
	// peerTrailerDamaged is api.TrailerDamaged, read from each peer (the
	// api package imports this one, not the other way round).
	peerTrailerDamaged = "Stenod-Damaged-Records"
)

// Errors of Query and Stats.
var (
	// ErrNoFleet: the configuration lists no sensors.
	ErrNoFleet = errors.New("no fleet: fleet.sensors lists no sensor")
	// ErrUnknownSensor: a request names a sensor the fleet does not have.
	ErrUnknownSensor = errors.New("unknown sensor")
)

// Options are what a Fleet is built with besides its Config.
type Options struct {
	// ClientTLS loads the client side of mutual TLS from a certificates
	// directory (api.ClientTLSConfig). Required when a sensor has Certs.
	ClientTLS func(dir string) (*tls.Config, error)
	// Summarize fills a sensor's figures from its /v1/stats answer, whose
	// types the API owns (api.SummarizeStats). Nil: Stats carries the
	// answers alone.
	Summarize func(stats []byte, st *SensorStats) error
	// Logger receives a line per failed sensor. Nil: nothing is logged.
	Logger *slog.Logger
}

// Fleet asks the configured sensors. It is safe for concurrent use.
type Fleet struct {
	cfg       Config
	peers     []*peer
	log       *slog.Logger
	summarize func([]byte, *SensorStats) error
}

type peer struct {
	Sensor
	base   string
	client *http.Client
	tr     *http.Transport
}

// New checks cfg and loads every sensor's certificates, so that a missing
// file stops the daemon at start rather than failing queries later.
func New(cfg Config, opts Options) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, log: opts.Logger, summarize: opts.Summarize}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	for _, s := range cfg.Sensors {
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.StallTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: cfg.StallTimeout,
			// Below the peers' 30 s idle timeout, so a kept-alive
			// connection is not closed under a new request.
			IdleConnTimeout:     20 * time.Second,
			MaxIdleConnsPerHost: 4,
			// No proxy from the environment: packets go straight to the
			// sensor, over mutual TLS.
		}
		if s.Certs != "" {
			if opts.ClientTLS == nil {
				return nil, fmt.Errorf("fleet: sensor %s: no way to load client certificates", s.Name)
			}
			tc, err := opts.ClientTLS(s.Certs)
			if err != nil {
				return nil, fmt.Errorf("fleet: sensor %s: %w", s.Name, err)
			}
			tr.TLSClientConfig = tc
		}
		f.peers = append(f.peers, &peer{Sensor: s, base: strings.TrimRight(s.URL, "/"), client: &http.Client{Transport: tr}, tr: tr})
	}
	return f, nil
}

// Sensors returns the fleet's sensors in their configured order.
func (f *Fleet) Sensors() []Sensor { return slices.Clone(f.cfg.Sensors) }

// Close closes the idle connections to the peers.
func (f *Fleet) Close() {
	for _, p := range f.peers {
		p.tr.CloseIdleConnections()
	}
}

// pick returns the peers named (all of them for none), in configured order.
func (f *Fleet) pick(names []string) ([]*peer, error) {
	if len(f.peers) == 0 {
		return nil, ErrNoFleet
	}
	if len(names) == 0 {
		return f.peers, nil
	}
	var out []*peer
	for _, n := range names {
		if !slices.ContainsFunc(f.peers, func(p *peer) bool { return p.Name == n }) {
			return nil, fmt.Errorf("%w %q (the fleet has %s)", ErrUnknownSensor, n, strings.Join(f.names(), ", "))
		}
	}
	for _, p := range f.peers {
		if slices.Contains(names, p.Name) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *Fleet) names() []string {
	out := make([]string, len(f.peers))
	for i, p := range f.peers {
		out[i] = p.Name
	}
	return out
}

// Request is a fleet query.
type Request struct {
	// Query is sent to every sensor as it is: give it with absolute times
	// (query.Query.String) so that every sensor looks at the same span.
	Query string
	// LimitPackets and LimitBytes bound the merged answer as Steno-Limit-*
	// bound one sensor's (bytes: pcap records, 16-byte headers included);
	// 0: no limit. Each sensor is asked for no more than the whole.
	LimitPackets, LimitBytes int64
	// Sensors restricts the query to these sensors; empty: all.
	Sensors []string
}

// Summary says what a fleet answer holds, per sensor.
type Summary struct {
	Query   string `json:"query"`
	Packets int64  `json:"packets"`
	Bytes   int64  `json:"bytes"`
	// Limited: the answer stopped at LimitPackets or LimitBytes.
	Limited      bool  `json:"limited"`
	Milliseconds int64 `json:"ms"`
	// Missing names the sensors whose answers are not whole in it
	// (status failed), in configured order; empty when none.
	Missing []string       `json:"missing"`
	Sensors []SensorResult `json:"sensors"`
}

// SensorResult is one sensor's part of a fleet answer.
type SensorResult struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Status string `json:"status"` // StatusComplete, StatusLimited or StatusFailed
	// Packets and Bytes (pcap records, headers included) went into the
	// fleet answer.
	Packets int64 `json:"packets"`
	Bytes   int64 `json:"bytes"`
	// FirstMilliseconds is when its first packets arrived (absent when
	// none did), Milliseconds when its answer ended or it was dropped,
	// both from the start of the fleet query.
	FirstMilliseconds *int64 `json:"first_ms,omitempty"`
	Milliseconds      int64  `json:"ms"`
	// Damaged is the sensor's own Stenod-Damaged-Records.
	Damaged int64  `json:"damaged,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Query sends req to the sensors in parallel and merges their answers into
// out. flush, when set, is called after out.Flush whenever the merge waits
// for a sensor with nothing ready, so that the client gets what is merged
// so far; at the end, out is left for the caller to flush. The Summary is returned in every case but a bad request; the
// error is that of out or ctx, never a sensor's: a failed sensor is in
// Summary.Missing.
func (f *Fleet) Query(ctx context.Context, req Request, out pcapio.PacketWriter, flush func() error) (*Summary, error) {
	peers, err := f.pick(req.Sensors)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sum := &Summary{Query: req.Query, Missing: []string{}, Sensors: make([]SensorResult, len(peers))}
	srcs := make([]*source, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		sum.Sensors[i] = SensorResult{Name: p.Name, URL: p.URL}
		pctx, cancel := context.WithCancelCause(ctx)
		pctx, cancelT := context.WithTimeoutCause(pctx, f.cfg.Timeout, fmt.Errorf("deadline of %v passed (fleet.timeout)", f.cfg.Timeout))
		src, ch := newSource(i, &sum.Sensors[i], func(err error) { cancel(err) }, start)
		srcs[i] = src
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancelT()
			defer close(ch)
			damaged, err := p.fetch(pctx, req, ch, src.free)
			select {
			case ch <- batch{end: true, err: err, damaged: damaged}:
			case <-pctx.Done():
			}
		}()
	}
	res, err := merge(ctx, srcs, out, mergeOptions{LimitPackets: req.LimitPackets, LimitBytes: req.LimitBytes, Stall: f.cfg.StallTimeout, Idle: flush})
	// Every source is ended or cancelled now: the readers return soon.
	wg.Wait()
	sum.Packets, sum.Bytes, sum.Limited = res.Packets, res.Bytes, res.Limited
	sum.Milliseconds = time.Since(start).Milliseconds()
	for _, s := range sum.Sensors {
		if s.Status == StatusFailed {
			sum.Missing = append(sum.Missing, s.Name)
			if err == nil {
				f.log.Warn("fleet query: sensor missing from the answer", "sensor", s.Name, "url", s.URL,
					"packets", s.Packets, "err", s.Error)
			}
		}
	}
	return sum, err
}

// fetch asks p for req's packets as pcapng and pumps them to ch. It
// returns the peer's damaged-record count and nil when the answer was
// whole.
func (p *peer) fetch(ctx context.Context, req Request, ch chan<- batch, free <-chan []byte) (int64, error) {
	v := url.Values{"q": {req.Query}, "format": {"pcapng"}}
	// No sensor need send more than the whole answer may hold.
	if req.LimitPackets > 0 {
		v.Set("limit_packets", strconv.FormatInt(req.LimitPackets, 10))
	}
	if req.LimitBytes > 0 {
		v.Set("limit_bytes", strconv.FormatInt(req.LimitBytes, 10))
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v1/pcap?"+v.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.client.Do(hr)
	if err != nil {
		return 0, requestError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return 0, fmt.Errorf("answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := pump(ctx, p.Name, resp.Body, ch, free); err != nil {
		return 0, err
	}
	// The trailers arrive with the body's end.
	damaged, _ := strconv.ParseInt(resp.Trailer.Get(peerTrailerDamaged), 10, 64)
	return damaged, nil
}

// requestError is the reason a request failed, without the URL that
// url.Error repeats (the summary names the sensor and its URL already).
func requestError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
