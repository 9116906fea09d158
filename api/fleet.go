package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/stenod/stenod/capture"
	"github.com/stenod/stenod/fleet"
	"github.com/stenod/stenod/pcapio"
)

// Trailers and parameters of the fleet endpoints (docs/api.md, Fleet).
const (
	TrailerFleetSummary = fleet.TrailerSummary
	TrailerFleetMissing = fleet.TrailerMissing
)

// newFleet builds the fleet of opts, nil when it has no sensors.
func newFleet(s *Server, cfg fleet.Config) (*fleet.Fleet, error) {
	if len(cfg.Sensors) == 0 {
		return nil, nil
	}
	return fleet.New(cfg, fleet.Options{ClientTLS: ClientTLSConfig, Summarize: SummarizeStats, Logger: s.log})
}

// PeerStats is a /v1/stats answer as a client decodes it: Stats with the
// capture counters' own type (stenod status, the fleet's statistics).
type PeerStats struct {
	Spool   SpoolStats     `json:"spool"`
	Capture *capture.Stats `json:"capture"`
}

// SummarizeStats fills a fleet sensor's figures from its /v1/stats
// answer: the spool's span, the directories' disks and shortest expected
// retention, and what capture dropped and lost.
func SummarizeStats(stats []byte, st *fleet.SensorStats) error {
	var ps PeerStats
	if err := json.Unmarshal(stats, &ps); err != nil {
		return err
	}
	sp := &ps.Spool
	st.Files, st.Bytes, st.Packets = sp.Files, sp.Bytes, sp.Packets
	st.Oldest, st.Newest, st.RetentionSeconds, st.Retention = sp.Oldest, sp.Newest, sp.RetentionSeconds, sp.Retention
	for i, d := range sp.Dirs {
		st.DiskBytes += d.DiskBytes
		st.DiskAvailableBytes += d.DiskAvailable
		if i == 0 || d.ExpectedRetentionSeconds < st.ExpectedRetentionSeconds {
			st.ExpectedRetentionSeconds = d.ExpectedRetentionSeconds
		}
	}
	if ps.Capture != nil {
		for _, ifc := range ps.Capture.Interfaces {
			for _, q := range ifc.Queues {
				st.SpoolWriteLost += q.SpoolWriteLost
				st.Drops += q.Dropped()
			}
		}
	}
	return nil
}

// fleetSensors reads what both fleet endpoints share: the sensors asked
// (?sensors=a,b), after checking that there is a fleet at all.
func (s *Server) fleetSensors(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	if s.fleet == nil {
		s.fail(w, http.StatusNotFound, "", fleet.ErrNoFleet.Error())
		return nil, false
	}
	var names []string
	for _, n := range strings.Split(r.URL.Query().Get("sensors"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return names, true
}

// handleFleetQuery answers POST /v1/fleet/query: the body is the query,
// the answer the sensors' packets merged into one pcapng, the summary in
// the trailers (or, with ?summary=json, as the answer).
func (s *Server) handleFleetQuery(w http.ResponseWriter, r *http.Request) {
	names, ok := s.fleetSensors(w, r)
	if !ok {
		return
	}
	body, ok := s.readBody(w, r, "query", s.cfg.MaxQueryBytes)
	if !ok {
		return
	}
	req := fleet.Request{Sensors: names}
	var err error
	if req.LimitPackets, err = parseLimit(HeaderLimitPackets, r.Header.Get(HeaderLimitPackets)); err == nil {
		req.LimitBytes, err = parseLimit(HeaderLimitBytes, r.Header.Get(HeaderLimitBytes))
	}
	summaryOnly := false
	switch v := r.URL.Query().Get("summary"); v {
	case "":
	case "json":
		summaryOnly = true
	default:
		err = fmt.Errorf("summary %q: want json (or leave it out for the packets)", v)
	}
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	q, err := s.parseQuery(string(body))
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	// Relative times ("2h ago") are fixed here, so that every sensor looks
	// at the same span whatever its clock says now.
	req.Query = q.String()

	ctx, cancel := s.queryContext(r.Context())
	defer cancel()
	if s.cfg.QueryTimeout > 0 {
		s.setWriteDeadline(w, s.cfg.QueryTimeout+writeGrace)
	}
	fw := &fleetWriter{w: w}
	var out pcapio.PacketWriter = discard{}
	flush := func() error { return nil }
	if !summaryOnly {
		if out, err = pcapio.NewPcapngWriter(fw, s.sp.Config().SnapLen); err != nil {
			s.fail(w, http.StatusInternalServerError, outcomeFailed, err.Error())
			return
		}
		flush = fw.flush
	}
	var sum *fleet.Summary
	s.metrics.running.Inc()
	err = s.lowPriority(func() error {
		var err error
		sum, err = s.fleet.Query(ctx, req, out, flush)
		return err
	})
	s.metrics.running.Dec()
	if errors.Is(err, fleet.ErrUnknownSensor) {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	if sum != nil {
		s.metrics.packets.Add(float64(sum.Packets))
		s.metrics.bytes.Add(float64(sum.Bytes))
	}
	if err != nil {
		outcome, code, msg := outcomeCancelled, http.StatusServiceUnavailable, err.Error()
		switch {
		case r.Context().Err() != nil || fw.writeErr != nil:
		case errors.Is(err, errQueryTimeout):
			outcome, msg = outcomeTimeout, fmt.Sprintf("query stopped at the configured time limit of %v", s.cfg.QueryTimeout)
		default:
			outcome, code = outcomeFailed, http.StatusInternalServerError
		}
		s.log.Warn("fleet query failed", "query", req.Query, "err", err)
		if fw.committed() {
			s.metrics.queries.WithLabelValues(outcome).Inc()
			// Never end a broken answer as if it were whole.
			panic(http.ErrAbortHandler)
		}
		s.fail(w, code, outcome, msg)
		return
	}
	line, jerr := json.Marshal(sum)
	if jerr != nil {
		s.fail(w, http.StatusInternalServerError, outcomeFailed, jerr.Error())
		return
	}
	var damaged int64
	for _, sr := range sum.Sensors {
		damaged += sr.Damaged
	}
	s.log.Info("fleet query answered", "query", req.Query, "packets", sum.Packets, "bytes", sum.Bytes,
		"limited", sum.Limited, "missing", strings.Join(sum.Missing, ","), "ms", sum.Milliseconds)
	outcome := outcomeComplete
	if sum.Limited {
		outcome = outcomeLimited
	}
	if !fw.committed() && (summaryOnly || sum.Packets == 0 && len(sum.Missing) == len(sum.Sensors)) {
		// Nothing sent yet: the summary is the answer. Every sensor failed:
		// 502, as a gateway whose upstreams all failed.
		code := http.StatusOK
		if len(sum.Missing) == len(sum.Sensors) {
			outcome, code = outcomeFailed, http.StatusBadGateway
		}
		s.metrics.queries.WithLabelValues(outcome).Inc()
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		if _, err := w.Write(append(line, '\n')); err != nil {
			s.log.Info("write fleet summary", "err", err)
		}
		return
	}
	err = fw.commit()
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		// The client went away at the very end: the answer is not whole.
		s.metrics.queries.WithLabelValues(outcomeCancelled).Inc()
		s.log.Info("client went away; fleet answer stopped", "query", req.Query, "err", err)
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	h.Set(TrailerFleetSummary, string(line))
	h.Set(TrailerFleetMissing, strings.Join(sum.Missing, ","))
	h.Set(TrailerDamaged, strconv.FormatInt(damaged, 10))
	s.metrics.queries.WithLabelValues(outcome).Inc()
}

// fleetWriter starts the fleet answer at its first byte: the merge writes
// only once it has packets, so a fleet whose every sensor fails can still
// be answered with an error status.
type fleetWriter struct {
	w        http.ResponseWriter
	mu       sync.Mutex
	started  bool
	writeErr error
}

func (f *fleetWriter) committed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

func (f *fleetWriter) commit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return f.writeErr
	}
	f.started = true
	h := f.w.Header()
	h.Set("Content-Type", "application/x-pcapng")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// Known only at the end.
	h.Set("Trailer", TrailerFleetSummary+", "+TrailerFleetMissing+", "+TrailerDamaged)
	f.w.WriteHeader(http.StatusOK)
	return nil
}

func (f *fleetWriter) Write(p []byte) (int, error) {
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	if err := f.commit(); err != nil {
		return 0, err
	}
	n, err := f.w.Write(p)
	if err != nil {
		f.writeErr = fmt.Errorf("write answer: %w", err)
	}
	return n, f.writeErr
}

// flush pushes what the answer has to the client: the merge calls it
// before it waits for a sensor.
func (f *fleetWriter) flush() error {
	if !f.committed() {
		return nil
	}
	if err := http.NewResponseController(f.w).Flush(); err != nil {
		f.writeErr = fmt.Errorf("write answer: %w", err)
	}
	return f.writeErr
}

// discard is the packet writer of ?summary=json.
type discard struct{}

func (discard) WritePacket(int64, int, []byte, string) error { return nil }
func (discard) Flush() error                                 { return nil }

// handleFleetStats answers GET /v1/fleet/stats: every sensor's /v1/stats,
// summed up, fetched in parallel.
func (s *Server) handleFleetStats(w http.ResponseWriter, r *http.Request) {
	names, ok := s.fleetSensors(w, r)
	if !ok {
		return
	}
	st, err := s.fleet.Stats(r.Context(), names)
	switch {
	case errors.Is(err, fleet.ErrUnknownSensor):
		s.fail(w, http.StatusBadRequest, "", err.Error())
		return
	case err != nil:
		s.log.Info("fleet stats: client went away", "err", err)
		return
	}
	s.writeJSON(w, st)
}
