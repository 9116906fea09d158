package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// maxStatsBytes bounds a peer's /v1/stats answer; a real one is a few KiB
// per interface.
const maxStatsBytes = 4 << 20

// Stats is the /v1/fleet/stats answer.
type Stats struct {
	Now string `json:"now"`
	// Missing names the sensors that did not answer, in configured order.
	Missing []string      `json:"missing"`
	Sensors []SensorStats `json:"sensors"`
}

// SensorStats is one sensor's figures, taken from its /v1/stats by
// Options.Summarize: the ones an operator compares across a fleet, and the
// whole answer in Stats.
type SensorStats struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	Error        string `json:"error,omitempty"`
	Milliseconds int64  `json:"ms"`
	// What the spool holds and how far back it reaches.
	Files            int     `json:"files"`
	Bytes            int64   `json:"bytes"`
	Packets          uint64  `json:"packets"`
	Oldest           string  `json:"oldest,omitempty"`
	Newest           string  `json:"newest,omitempty"`
	RetentionSeconds float64 `json:"retention_seconds"`
	Retention        string  `json:"retention,omitempty"`
	// Over the spool directories: the file systems' size and free bytes,
	// and the shortest expected retention.
	DiskBytes                int64   `json:"disk_bytes"`
	DiskAvailableBytes       int64   `json:"disk_available_bytes"`
	ExpectedRetentionSeconds float64 `json:"expected_retention_seconds,omitempty"`
	// Drops are the packets the kernel dropped before capture took them
	// (AF_XDP rx_dropped and rx_ring_full, AF_PACKET ring drops), as
	// stenod status counts them; SpoolWriteLost those lost to write
	// errors after.
	Drops          uint64 `json:"drops"`
	SpoolWriteLost uint64 `json:"spool_write_lost"`
	// Stats is the sensor's /v1/stats answer as it sent it.
	Stats json.RawMessage `json:"stats,omitempty"`
}

// Stats asks every sensor (or those named) for its /v1/stats in parallel,
// each within Config.StallTimeout. A sensor that fails is in the answer
// with its error and in Missing.
func (f *Fleet) Stats(ctx context.Context, names []string) (*Stats, error) {
	peers, err := f.pick(names)
	if err != nil {
		return nil, err
	}
	out := &Stats{Now: time.Now().UTC().Format(time.RFC3339Nano), Missing: []string{}, Sensors: make([]SensorStats, len(peers))}
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			st := &out.Sensors[i]
			*st = SensorStats{Name: p.Name, URL: p.URL}
			if err := p.stats(ctx, f.cfg.StallTimeout, f.summarize, st); err != nil {
				st.Error = err.Error()
			}
			st.Milliseconds = time.Since(start).Milliseconds()
		}()
	}
	wg.Wait()
	for _, s := range out.Sensors {
		if s.Error != "" {
			out.Missing = append(out.Missing, s.Name)
		}
	}
	return out, ctx.Err()
}

// stats fetches the peer's /v1/stats into st.Stats, and lets summarize
// (Options.Summarize) take st's figures from it.
func (p *peer) stats(ctx context.Context, d time.Duration, summarize func([]byte, *SensorStats) error, st *SensorStats) error {
	ctx, cancel := context.WithTimeoutCause(ctx, d, fmt.Errorf("no answer within %v (fleet.stall_timeout)", d))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v1/stats", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return requestError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatsBytes+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return context.Cause(ctx)
	case err != nil:
		return fmt.Errorf("read stats: %w", err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("answered %s: %.200s", resp.Status, strings.TrimSpace(string(body)))
	case len(body) > maxStatsBytes:
		return fmt.Errorf("stats longer than %d bytes", maxStatsBytes)
	}
	st.Stats = json.RawMessage(body)
	if summarize != nil {
		if err := summarize(body, st); err != nil {
			return fmt.Errorf("decode stats: %w", err)
		}
	}
	return nil
}
