package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/query"
)

// Cutoff is the capture side of the per-connection cutoff, as
// *capture.Capture provides it (docs/operations.md, Per-connection
// cutoff).
type Cutoff interface {
	// SuspendCutoff stops cutting every connection for whose key (the
	// canonical connection key, one orientation) match reports true, on
	// every interface, and returns how many it suspended.
	SuspendCutoff(match func(k *flow.Key) bool) (int, error)
	// CutoffStats returns what the cutoff did not store, per interface
	// and rule, since capture started.
	CutoffStats() []capture.InterfaceCutoff
	// Stats returns the capture counters: the bytes received are those
	// the cutoff kept.
	Stats() capture.Stats
}

// SuspendAnswer is the answer of POST /v1/cutoff/suspend.
type SuspendAnswer struct {
	// Suspended is the number of connections whose packets are stored
	// again from now on, over every interface.
	Suspended int `json:"suspended"`
}

// handleCutoffSuspend suspends the cutoff for the connections a query
// matches: the query's flow matcher, on each connection's key in both
// orientations. A query with time is refused: a connection is suspended
// as a whole.
func (s *Server) handleCutoffSuspend(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxQueryBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("query longer than %d bytes", mbe.Limit))
			return
		}
		s.fail(w, http.StatusBadRequest, "", fmt.Sprintf("read query: %v", err))
		return
	}
	if s.cutoff == nil {
		s.fail(w, http.StatusServiceUnavailable, "", "cutoff: the per-connection cutoff is off on this sensor (capture.cutoff, capture.cutoff_rules): nothing to suspend")
		return
	}
	q, err := s.parseQuery(string(body))
	if err != nil {
		s.fail(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if q.HasTime() {
		s.fail(w, http.StatusBadRequest, "", fmt.Sprintf("cutoff: query %q has before or after: a connection is suspended as a whole, "+
			"by what its key says (addresses, ports, protocol, VLAN, MPLS); leave the time out", q))
		return
	}
	n, err := s.cutoff.SuspendCutoff(connMatcher(q))
	if err != nil {
		s.log.Error("suspend the cutoff", "query", q.String(), "err", err)
		s.fail(w, http.StatusInternalServerError, "", fmt.Sprintf("cutoff: suspend: %v", err))
		return
	}
	s.log.Info("cutoff suspended", "query", q.String(), "connections", n)
	s.writeJSON(w, &SuspendAnswer{Suspended: n})
}

// connMatcher returns whether q matches a connection: its key in either
// orientation, as a query matches either direction's flow. q has no time
// primitive, so its verdict on a key is Yes or No.
func connMatcher(q *query.Query) func(k *flow.Key) bool {
	return func(k *flow.Key) bool {
		if q.MatchFlow(k) == query.Yes {
			return true
		}
		r := k.Reversed()
		return q.MatchFlow(&r) == query.Yes
	}
}

// CutoffStats is the cutoff's part of /v1/stats: what it kept and cut
// since capture started, and the retention it gives against what the
// same disks would hold without it.
type CutoffStats struct {
	// KeptPackets and KeptBytes (wire bytes) are what capture received:
	// the packets the cutoff let through. CutPackets and CutBytes are
	// those it did not store.
	KeptPackets uint64 `json:"kept_packets"`
	KeptBytes   uint64 `json:"kept_bytes"`
	CutPackets  uint64 `json:"cut_packets"`
	CutBytes    uint64 `json:"cut_bytes"`
	// KeptShare is KeptBytes / (KeptBytes + CutBytes); 1 before any
	// packet.
	KeptShare float64 `json:"kept_share"`
	// ExpectedRetention is the shortest expected retention of the spool
	// directories (the disk budget full, at the rate the stored data
	// came in); ExpectedRetentionWithoutCutoff is the same disks without
	// the cutoff, estimated as ExpectedRetention times KeptShare. Absent
	// when no directory has an expected retention yet.
	ExpectedRetentionSeconds              float64 `json:"expected_retention_seconds,omitempty"`
	ExpectedRetention                     string  `json:"expected_retention,omitempty"`
	ExpectedRetentionWithoutCutoffSeconds float64 `json:"expected_retention_without_cutoff_seconds,omitempty"`
	ExpectedRetentionWithoutCutoff        string  `json:"expected_retention_without_cutoff,omitempty"`
}

// cutoffStats gathers the cutoff's part of /v1/stats; dirs are the
// spool's.
func (s *Server) cutoffStats(dirs []DirStats) *CutoffStats {
	out := &CutoffStats{KeptShare: 1}
	for _, ifc := range s.cutoff.Stats().Interfaces {
		for _, q := range ifc.Queues {
			out.KeptPackets += q.Packets
			out.KeptBytes += q.Bytes
		}
	}
	for _, ifc := range s.cutoff.CutoffStats() {
		out.CutPackets += ifc.Packets
		out.CutBytes += ifc.Bytes
	}
	if total := out.KeptBytes + out.CutBytes; total > 0 {
		out.KeptShare = float64(out.KeptBytes) / float64(total)
	}
	var shortest float64
	for _, d := range dirs {
		if d.ExpectedRetentionSeconds > 0 && (shortest == 0 || d.ExpectedRetentionSeconds < shortest) {
			shortest = d.ExpectedRetentionSeconds
		}
	}
	if shortest > 0 {
		without := shortest * out.KeptShare
		out.ExpectedRetentionSeconds, out.ExpectedRetention = shortest, formatDays(secondsDuration(shortest))
		out.ExpectedRetentionWithoutCutoffSeconds, out.ExpectedRetentionWithoutCutoff = without, formatDays(secondsDuration(without))
	}
	return out
}

// secondsDuration converts seconds to a Duration, saturating.
func secondsDuration(sec float64) time.Duration {
	if sec >= float64(1<<63-1)/1e9 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(sec * 1e9)
}

// cutoffRuleDefault is the rule label of what connections no rule matched
// had cut (capture.cutoff); no query is written so.
const cutoffRuleDefault = "default"

// cutoffCollector exports the cutoff's counters, read at each scrape.
type cutoffCollector struct {
	src            Cutoff
	packets, bytes *prometheus.Desc
}

func newCutoffCollector(src Cutoff) *cutoffCollector {
	labels := []string{"iface", "rule"}
	return &cutoffCollector{
		src: src,
		packets: prometheus.NewDesc("stenod_cutoff_cut_packets_total",
			"Packets not stored because their connection had reached its cutoff, by interface and rule (the rule's query; \"default\": capture.cutoff).", labels, nil),
		bytes: prometheus.NewDesc("stenod_cutoff_cut_bytes_total",
			"Wire bytes of the packets not stored because their connection had reached its cutoff, by interface and rule.", labels, nil),
	}
}

func (c *cutoffCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
}

func (c *cutoffCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ifc := range c.src.CutoffStats() {
		for _, r := range ifc.Rules {
			rule := r.Name
			if r.Rule < 0 {
				rule = cutoffRuleDefault
			}
			ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(r.Packets), ifc.Name, rule)
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(r.Bytes), ifc.Name, rule)
		}
	}
}
