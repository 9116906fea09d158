package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// Request headers of stenographer's /query.
const (
	HeaderLimitPackets = "Steno-Limit-Packets"
	HeaderLimitBytes   = "Steno-Limit-Bytes"
	// TrailerDamaged is the HTTP trailer of a pcap answer that counts the
	// damaged records left out of it (0: none); TrailerDamage says what
	// was wrong with the first of them. The answer holds every other
	// matching packet, exactly.
	TrailerDamaged = "Stenod-Damaged-Records"
	TrailerDamage  = "Stenod-Damage"
)

// holdBytes is how much of an answer is held back before the status line is
// sent. A query that fails within it gets a 5xx status with the reason, and
// an answer that fits is sent whole or not at all; only a longer answer that
// then fails has to be aborted mid-stream.
const holdBytes = 256 << 10

// errQueryTimeout is the cause of a query stopped by Config.QueryTimeout.
var errQueryTimeout = errors.New("query time limit reached")

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, "query", s.cfg.MaxQueryBytes)
	if !ok {
		return
	}
	var opts engine.Options
	var err error
	if opts.LimitPackets, err = parseLimit(HeaderLimitPackets, r.Header.Get(HeaderLimitPackets)); err == nil {
		opts.LimitBytes, err = parseLimit(HeaderLimitBytes, r.Header.Get(HeaderLimitBytes))
	}
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	s.answer(w, r, string(body), "pcap", opts, "")
}

func (s *Server) handlePcap(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	format, opts, err := downloadOptions(v)
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	name := "stenod-" + time.Now().UTC().Format("20060102T150405Z") + "." + format
	s.answer(w, r, v.Get("q"), format, opts, name)
}

// readBody reads a request's body of at most limit bytes; what names it
// in the error answered (413 or 400) when it cannot.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, what string, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, http.StatusRequestEntityTooLarge, outcomeBadQuery, fmt.Sprintf("%s longer than %d bytes", what, mbe.Limit))
			return nil, false
		}
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, fmt.Sprintf("read %s: %v", what, err))
		return nil, false
	}
	return body, true
}

// downloadOptions reads a download's format (pcap, the default, or pcapng)
// and its limit_packets and limit_bytes.
func downloadOptions(v url.Values) (format string, opts engine.Options, err error) {
	format = v.Get("format")
	if format == "" {
		format = "pcap"
	}
	if format != "pcap" && format != "pcapng" {
		return "", opts, fmt.Errorf("format %q: want pcap or pcapng", format)
	}
	if opts.LimitPackets, err = parseLimit("limit_packets", v.Get("limit_packets")); err == nil {
		opts.LimitBytes, err = parseLimit("limit_bytes", v.Get("limit_bytes"))
	}
	return format, opts, err
}

// parseLimit reads a packet or byte limit: a decimal number, 0 or absent for
// none.
func parseLimit(name, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: want a number from 0 (no limit) to %d", name, v, int64(1<<63-1))
	}
	return n, nil
}

// intParam reads the integer query parameter name of v: def when absent,
// else a number from lo to hi; the error says so, with hint after it.
func intParam(v url.Values, name string, def, lo, hi int, hint string) (int, error) {
	text := v.Get(name)
	if text == "" {
		return def, nil
	}
	n, err := strconv.Atoi(text)
	if err != nil || n < lo || n > hi {
		bound := fmt.Sprintf("from %d to %d", lo, hi)
		if hi == math.MaxInt {
			bound = fmt.Sprintf("from %d", lo)
		}
		return def, fmt.Errorf("%s %q: want a number %s%s", name, text, bound, hint)
	}
	return n, nil
}

// answer streams the packets matching text as pcap or pcapng. filename, when
// set, makes the answer a download.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, text, format string, opts engine.Options, filename string) {
	q, err := s.parseQuery(text)
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	// cut cuts the query off when the spool revokes it (capture needs
	// the space of deleted files it reads): see onRevoke below.
	ctx, cut := context.WithCancelCause(r.Context())
	defer cut(nil)
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	if s.cfg.QueryTimeout > 0 {
		// A client that stops reading would otherwise hold the query in a
		// write past its time limit. The grace leaves time to deliver a
		// finished answer or to say that the query ran out of time.
		s.setWriteDeadline(w, s.cfg.QueryTimeout+writeGrace)
	}
	aw := &answerWriter{w: w, setHeaders: func(h http.Header) {
		switch {
		case filename == "":
			h.Set("Content-Type", "application/octet-stream") // what stenographer sends
		case format == "pcapng":
			h.Set("Content-Type", "application/x-pcapng")
		default:
			h.Set("Content-Type", "application/vnd.tcpdump.pcap")
		}
		if filename != "" {
			h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
		}
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// Known only at the end: damaged records the answer left out.
		h.Set("Trailer", TrailerDamaged+", "+TrailerDamage)
	}}
	// A revoked query may be blocked writing to a client that does not
	// read: the write deadline makes that write return now.
	opts.OnRevoke = func(err error) {
		cut(err)
		aw.cutOff()
	}
	snap := s.sp.Config().SnapLen
	var res engine.Result
	start := time.Now()
	s.metrics.running.Inc()
	err = s.lowPriority(func() error {
		var pw pcapio.PacketWriter
		var err error
		if format == "pcapng" {
			pw, err = pcapio.NewPcapngWriter(aw, snap)
		} else {
			pw, err = pcapio.NewPcapWriter(aw, snap)
		}
		if err != nil {
			return err
		}
		if s.testHookWriter != nil {
			pw = s.testHookWriter(ctx, pw)
		}
		res, err = engine.Run(ctx, s.sp, q, pw, opts)
		return err
	})
	aw.stop()
	s.metrics.running.Dec()
	s.metrics.packets.Add(float64(res.Packets))
	s.metrics.bytes.Add(float64(res.Bytes))
	attrs := []any{"query", q.String(), "packets", res.Packets, "bytes", res.Bytes, "files", res.Files,
		"limited", res.Limited, "duration", time.Since(start)}
	if res.Damaged > 0 {
		attrs = append(attrs, "damaged", res.Damaged, "first_damage", res.FirstDamage)
	}
	if err == nil {
		err = aw.finish()
	}
	if err == nil {
		// Trailers: the Trailer header announced them.
		h := w.Header()
		h.Set(TrailerDamaged, strconv.FormatInt(res.Damaged, 10))
		if res.FirstDamage != nil {
			h.Set(TrailerDamage, res.FirstDamage.Error())
		}
		if res.Damaged > 0 {
			s.log.Warn("answered without damaged records", attrs...)
		}
		outcome := outcomeComplete
		if res.Limited {
			outcome = outcomeLimited
		}
		s.metrics.queries.WithLabelValues(outcome).Inc()
		s.log.Debug("answered", attrs...)
		return
	}
	attrs = append(attrs, "err", err)
	timedOut := errors.Is(err, errQueryTimeout) || ctx.Err() != nil && errors.Is(context.Cause(ctx), errQueryTimeout)
	var revoked *spool.RevokedError
	if !errors.As(err, &revoked) && ctx.Err() != nil {
		errors.As(context.Cause(ctx), &revoked)
	}
	if !timedOut && revoked == nil && (aw.writeErr != nil || r.Context().Err() != nil) {
		s.metrics.queries.WithLabelValues(outcomeCancelled).Inc()
		s.log.Info("client went away; query stopped", attrs...)
		if aw.committed {
			panic(http.ErrAbortHandler)
		}
		return
	}
	outcome, code, msg := outcomeFailed, http.StatusInternalServerError, err.Error()
	switch {
	case revoked != nil:
		outcome, code, msg = outcomeRevoked, http.StatusServiceUnavailable, revoked.Error()
	case timedOut:
		outcome, code = outcomeTimeout, http.StatusServiceUnavailable
		msg = fmt.Sprintf("query stopped at the configured time limit of %v", s.cfg.QueryTimeout)
	}
	level := slog.LevelError
	if outcome != outcomeFailed {
		// Cut off by the operator's limits, not broken.
		level = slog.LevelWarn
	}
	if !aw.committed {
		s.log.Log(r.Context(), level, "query failed", attrs...)
		s.fail(w, code, outcome, msg)
		return
	}
	if outcome == outcomeFailed {
		outcome = outcomeAborted
	}
	s.metrics.queries.WithLabelValues(outcome).Inc()
	s.log.Log(r.Context(), level, "query failed after its answer started; aborting the stream", attrs...)
	// Ending the handler normally would send the final chunk and the client
	// would take the answer for whole. Aborting closes the connection (HTTP/1)
	// or resets the stream (HTTP/2) instead.
	panic(http.ErrAbortHandler)
}

// writeGrace is how long past Config.QueryTimeout a response may take to
// write.
const writeGrace = 10 * time.Second

func (s *Server) setWriteDeadline(w http.ResponseWriter, d time.Duration) {
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d)); err != nil {
		s.log.Debug("set write deadline", "err", err)
	}
}

// queryContext bounds a query by Config.QueryTimeout, when set.
func (s *Server) queryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.cfg.QueryTimeout > 0 {
		return context.WithTimeoutCause(ctx, s.cfg.QueryTimeout, errQueryTimeout)
	}
	return context.WithCancel(ctx)
}

// lowPriority runs fn on an OS thread of its own with lowered CPU and I/O
// priority (see lowerPriority) and returns its error, so that queries take
// what capture leaves over. A panic in fn becomes an error: it would
// otherwise kill the daemon, capture included.
func (s *Server) lowPriority(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine and its
		// lowered priority with it.
		runtime.LockOSThread()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("query panicked", "panic", p, "stack", string(debug.Stack()))
				done <- fmt.Errorf("api: query panicked: %v", p)
			}
		}()
		if err := lowerPriority(); err != nil {
			s.priorityWarn.Do(func() {
				s.log.Warn("cannot lower the priority of query threads; queries compete with capture", "err", err)
			})
		}
		if s.testHookQueryThread != nil {
			s.testHookQueryThread()
		}
		done <- fn()
	}()
	return <-done
}

// answerWriter sits between the packet writer and the response. It holds
// back the first holdBytes of the answer before committing to status 200,
// and remembers a failed write, which means the client went away.
type answerWriter struct {
	w          http.ResponseWriter
	setHeaders func(http.Header)
	pending    []byte
	committed  bool
	writeErr   error

	// mu orders cutOff, which runs on a goroutine of the spool's, with
	// the start of the answer and the end of the query.
	mu      sync.Mutex
	cut     bool // cutOff was called: write nothing more
	stopped bool // the query is over: w is the handler's again
}

// errCut: the query was revoked; the answer gets no more bytes.
var errCut = errors.New("write answer: query cut off")

// cutOff makes a write blocked on a client that does not read return now
// (its write deadline), and any later one fail. Before the answer has
// started it writes nothing: the handler still sends the error status.
func (a *answerWriter) cutOff() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	a.cut = true
	if a.committed {
		// Safe beside a Write in progress: it sets the connection's
		// deadline.
		_ = http.NewResponseController(a.w).SetWriteDeadline(time.Now())
	}
}

// stop says the query is over: cutOff must no longer touch w.
func (a *answerWriter) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
}

func (a *answerWriter) Write(p []byte) (int, error) {
	if a.writeErr != nil {
		return 0, a.writeErr
	}
	a.mu.Lock()
	cut := a.cut
	a.mu.Unlock()
	if cut {
		return 0, errCut
	}
	if !a.committed {
		if len(a.pending)+len(p) <= holdBytes {
			a.pending = append(a.pending, p...)
			return len(p), nil
		}
		if err := a.commit(); err != nil {
			return 0, err
		}
	}
	n, err := a.w.Write(p)
	if err != nil {
		a.writeErr = fmt.Errorf("write answer: %w", err)
		return n, a.writeErr
	}
	return n, nil
}

func (a *answerWriter) commit() error {
	a.mu.Lock()
	cut := a.cut
	if !cut {
		a.committed = true
	}
	a.mu.Unlock()
	if cut {
		return errCut
	}
	a.setHeaders(a.w.Header())
	a.w.WriteHeader(http.StatusOK)
	if len(a.pending) == 0 {
		return nil
	}
	_, err := a.w.Write(a.pending)
	a.pending = nil
	if err != nil {
		a.writeErr = fmt.Errorf("write answer: %w", err)
	}
	return a.writeErr
}

// finish sends whatever is held and pushes it to the connection, so that a
// client that went away at the very end is noticed.
func (a *answerWriter) finish() error {
	if !a.committed {
		if err := a.commit(); err != nil {
			return err
		}
	}
	if err := http.NewResponseController(a.w).Flush(); err != nil {
		a.writeErr = fmt.Errorf("write answer: %w", err)
		return a.writeErr
	}
	return nil
}

// fail answers with an error status and msg as plain text, and counts the
// query outcome unless it is "".
func (s *Server) fail(w http.ResponseWriter, code int, outcome, msg string) {
	if outcome != "" {
		s.metrics.queries.WithLabelValues(outcome).Inc()
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if _, err := io.WriteString(w, msg+"\n"); err != nil {
		s.log.Debug("write error answer", "err", err)
	}
}

// Flow is one flow of a /v1/flows answer. Fields a flow does not have (ports
// of ICMP, addresses of ARP) are left out.
type Flow struct {
	Src     string  `json:"src,omitempty"`
	Dst     string  `json:"dst,omitempty"`
	SrcPort *uint16 `json:"sport,omitempty"`
	DstPort *uint16 `json:"dport,omitempty"`
	Proto   *uint8  `json:"proto,omitempty"`
	// ICMPType and ICMPCode: the message of an ICMP or ICMPv6 flow.
	ICMPType  *uint16  `json:"icmp_type,omitempty"`
	ICMPCode  *uint16  `json:"icmp_code,omitempty"`
	VLAN      []uint16 `json:"vlan,omitempty"` // outer tag first
	MPLS      *uint32  `json:"mpls,omitempty"` // outermost label
	EtherType uint16   `json:"ethertype"`
	Fragment  bool     `json:"fragment,omitempty"`
	Key       string   `json:"key"` // the whole key, for people
	First     string   `json:"first"`
	Last      string   `json:"last"`
	Packets   uint64   `json:"packets"`
	Bytes     uint64   `json:"bytes"` // wire bytes
	// CommunityID is the Community ID v1 (api.community_id_seed); absent
	// where the specification defines none (docs/flow-key.md).
	CommunityID string `json:"community_id,omitempty"`
	// Cut: the per-connection cutoff kept CutPackets packets and CutBytes
	// wire bytes of the flow out of the spool; Packets and Bytes count
	// only the stored ones.
	Cut        bool   `json:"cut"`
	CutPackets uint64 `json:"cut_packets"`
	CutBytes   uint64 `json:"cut_bytes"`
}

func flowJSON(rec *engine.FlowRecord, seed uint16) Flow {
	k := &rec.Key
	f := Flow{
		CommunityID: k.CommunityID(seed),
		EtherType:   k.EtherType,
		Fragment:    k.Flags&flow.FlagFragment != 0,
		Key:         k.String(),
		First:       formatNS(rec.First),
		Last:        formatNS(rec.Last),
		Packets:     rec.Packets,
		Bytes:       rec.Bytes,
		Cut:         rec.CutPackets > 0,
		CutPackets:  rec.CutPackets,
		CutBytes:    rec.CutBytes,
	}
	if k.IsIP() {
		f.Src, f.Dst = k.SrcAddr().String(), k.DstAddr().String()
		f.Proto = &k.Proto
	}
	if k.Flags&flow.FlagPorts != 0 {
		f.SrcPort, f.DstPort = &k.SrcPort, &k.DstPort
	}
	if k.Flags&flow.FlagICMP != 0 {
		f.ICMPType, f.ICMPCode = &k.SrcPort, &k.DstPort
	}
	if k.Flags&flow.FlagVLAN0 != 0 {
		f.VLAN = append(f.VLAN, k.VLAN[0])
	}
	if k.Flags&flow.FlagVLAN1 != 0 {
		f.VLAN = append(f.VLAN, k.VLAN[1])
	}
	if k.Flags&flow.FlagMPLS != 0 {
		f.MPLS = &k.MPLS
	}
	return f
}

// Stats is the /v1/stats answer.
type Stats struct {
	Now   string     `json:"now"`
	Spool SpoolStats `json:"spool"`
	// Capture is what Options.Stats returned; absent without it.
	Capture any `json:"capture,omitempty"`
	// Cutoff is what the per-connection cutoff kept and cut, and the
	// retention with and without it; absent when the cutoff is off.
	Cutoff *CutoffStats `json:"cutoff,omitempty"`
}

// SpoolStats answers "how far back can I query": the span from the oldest
// to the newest stored packet, over all directories and per directory, and
// what the disk budget has deleted and writes have lost.
type SpoolStats struct {
	SpanStats
	Dirs     []DirStats     `json:"dirs"`
	Counters spool.Counters `json:"counters"`
}

// SpanStats are the packets in a set of spool files.
type SpanStats struct {
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
	Packets uint64 `json:"packets"`
	Oldest  string `json:"oldest,omitempty"`
	Newest  string `json:"newest,omitempty"`
	// Retention is Newest minus Oldest, in seconds and as text ("12d3h4m5s").
	RetentionSeconds float64 `json:"retention_seconds"`
	Retention        string  `json:"retention"`
}

// DirStats is one spool directory and the file system it is on.
type DirStats struct {
	Dir string `json:"dir"`
	SpanStats
	// FileBytes is what the spool files take on disk (pcap and index);
	// BudgetBytes the most the directory may hold under the disk budget.
	FileBytes int64 `json:"file_bytes"`
	// HeldBytes: deleted spool files that queries still hold open.
	HeldBytes     int64 `json:"held_bytes"`
	BudgetBytes   int64 `json:"budget_bytes,omitempty"`
	DiskBytes     int64 `json:"disk_bytes,omitempty"`
	DiskAvailable int64 `json:"disk_available_bytes,omitempty"`
	// ExpectedRetention: the packet time the directory will hold once its
	// budget is full, at the rate the data it holds came in.
	ExpectedRetentionSeconds float64 `json:"expected_retention_seconds,omitempty"`
	ExpectedRetention        string  `json:"expected_retention,omitempty"`
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	out := s.statsAnswer()
	s.writeJSON(w, &out)
}

// statsAnswer gathers the /v1/stats answer.
func (s *Server) statsAnswer() Stats {
	out := Stats{Now: formatNS(time.Now().UnixNano())}
	var lo, hi int64
	for _, u := range s.sp.Usage() {
		d := DirStats{Dir: u.Dir, SpanStats: span(u.Files, u.Bytes, u.Packets, u.Oldest, u.Newest),
			FileBytes: u.FileBytes, HeldBytes: u.HeldBytes, BudgetBytes: u.BudgetBytes, DiskBytes: u.TotalBytes, DiskAvailable: u.FreeBytes}
		if r := u.Retention(); r > 0 {
			d.ExpectedRetentionSeconds, d.ExpectedRetention = r.Seconds(), formatDays(r)
		}
		out.Spool.Dirs = append(out.Spool.Dirs, d)
		out.Spool.Files += u.Files
		out.Spool.Bytes += u.Bytes
		out.Spool.Packets += u.Packets
		if u.Packets > 0 {
			if lo == 0 || u.Oldest < lo {
				lo = u.Oldest
			}
			hi = max(hi, u.Newest)
		}
	}
	out.Spool.SpanStats = span(out.Spool.Files, out.Spool.Bytes, out.Spool.Packets, lo, hi)
	out.Spool.Counters = s.sp.Counters()
	if s.stats != nil {
		out.Capture = s.stats()
	}
	if s.cutoff != nil {
		out.Cutoff = s.cutoffStats(out.Spool.Dirs)
	}
	return out
}

func span(files int, bytes int64, packets uint64, oldest, newest int64) SpanStats {
	st := SpanStats{Files: files, Bytes: bytes, Packets: packets, Retention: "0s"}
	if packets == 0 {
		return st
	}
	st.Oldest, st.Newest = formatNS(oldest), formatNS(newest)
	d := time.Duration(newest - oldest)
	st.RetentionSeconds = d.Seconds()
	st.Retention = formatDays(d)
	return st
}

// formatDays writes d with a day unit, which time.Duration lacks and
// retention needs: "12d3h4m5s" reads better than "291h4m5s".
func formatDays(d time.Duration) string {
	day := 24 * time.Hour
	if d < day {
		return d.Round(time.Second).String()
	}
	days := d / day
	rest := (d % day).Round(time.Second)
	if rest == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%v", days, rest)
}

func formatNS(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func (s *Server) writeJSON(w http.ResponseWriter, v any) { s.writeJSONStatus(w, http.StatusOK, v) }

// writeJSONStatus answers v as JSON with status code.
func (s *Server) writeJSONStatus(w http.ResponseWriter, code int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		s.log.Error("encode JSON answer", "err", err)
		s.fail(w, http.StatusInternalServerError, "", fmt.Sprintf("encode answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if _, err := w.Write(append(data, '\n')); err != nil {
		s.log.Info("write JSON answer", "err", err)
	}
}
