package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/query"
)

// Bounds of the JSON endpoints the web page uses.
const (
	// DefaultHistogramBuckets is /v1/histogram's bucket count when none is
	// asked for; engine.MaxHistogramBuckets the most it gives.
	DefaultHistogramBuckets = 100
	// MaxPackets bounds the limit of /v1/packets, MaxPacketsData that
	// limit when the packets' bytes are asked for too; DefaultPackets is
	// used when it is absent.
	MaxPackets     = 1000
	MaxPacketsData = 100
	DefaultPackets = 100
	// MaxPacketOffset bounds /v1/packets' offset: a page is found by
	// reading every packet before it, so deep pages cost what a download
	// of as many packets does. Narrow the query to see further.
	MaxPacketOffset = 1_000_000
)

// QueryError is the answer to a bad query for a client that asks for JSON
// (Accept: application/json), and always /v1/parse's: the message of the
// plain-text answer, and where in the query the parser stopped.
type QueryError struct {
	Error string `json:"error"` // as the plain-text answer has it
	// Message says what is wrong, without the position.
	Message string `json:"message,omitempty"`
	// Offset is the byte offset of Token in the query; OffsetUTF16 the same
	// place in UTF-16 code units, as a JavaScript string indexes it.
	Offset      *int   `json:"offset,omitempty"`
	OffsetUTF16 *int   `json:"offset_utf16,omitempty"`
	Token       string `json:"token,omitempty"` // the offending token, "" at the end of the query
}

// queryError describes a query.Parse error of text.
func queryError(text string, err error) QueryError {
	qe := QueryError{Error: err.Error()}
	var se *query.SyntaxError
	if errors.As(err, &se) {
		pos := min(max(se.Pos, 0), len(text))
		u := len(utf16.Encode([]rune(text[:pos])))
		qe.Message, qe.Offset, qe.OffsetUTF16, qe.Token = se.Msg, &pos, &u, se.Token
	}
	return qe
}

// wantsJSON reports whether the client prefers a JSON error to plain text.
// Plain text stays the default: stenoread and scripts print it.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

// badQuery answers a query that does not parse: 400 with the parser's
// message, as JSON (QueryError) when the client asks for it.
func (s *Server) badQuery(w http.ResponseWriter, r *http.Request, text string, err error) {
	if !wantsJSON(r) {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	s.metrics.queries.WithLabelValues(outcomeBadQuery).Inc()
	qe := queryError(text, err)
	s.writeJSONStatus(w, http.StatusBadRequest, &qe)
}

// Parsed is /v1/parse's answer to a good query.
type Parsed struct {
	Query string `json:"query"` // canonical: relative times resolved
	// From and To are the query's time bounds (RFC 3339, UTC), absent
	// where it has none: packets at or after From and before To.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// TimeOnly: the query has only time primitives.
	TimeOnly bool `json:"time_only"`
}

func (s *Server) handleParse(w http.ResponseWriter, r *http.Request) {
	text := r.URL.Query().Get("q")
	q, err := s.parseQuery(text)
	if err != nil {
		qe := queryError(text, err)
		s.writeJSONStatus(w, http.StatusBadRequest, &qe)
		return
	}
	out := Parsed{Query: q.String(), TimeOnly: q.TimeOnly()}
	lo, hi := q.TimeRange()
	if lo > minTime && lo < hi {
		out.From = formatNS(lo)
	}
	if hi < maxTime && lo < hi {
		out.To = formatNS(hi)
	}
	s.writeJSON(w, &out)
}

// The bounds of an unbounded query's time range (query.TimeRange).
const (
	minTime = -1 << 63
	maxTime = 1<<63 - 1
)

// HistogramAnswer is /v1/histogram's answer: packets and bytes matching
// the query per time bucket, from the index (see docs/api.md on precision).
type HistogramAnswer struct {
	Query string `json:"query"`
	// Start is the first bucket's start, StartNS the same in unix ns; each
	// bucket is WidthNS long ("width" as text). Empty when nothing matched.
	Start   string   `json:"start,omitempty"`
	StartNS int64    `json:"start_ns"`
	WidthNS int64    `json:"width_ns"`
	Width   string   `json:"width"`
	Packets []uint64 `json:"packets"`
	Bytes   []uint64 `json:"bytes"`
	// TotalPackets and TotalBytes add up the buckets; EstimatedPackets
	// of the packets were spread over several buckets rather than
	// placed exactly.
	TotalPackets     uint64 `json:"total_packets"`
	TotalBytes       uint64 `json:"total_bytes"`
	EstimatedPackets uint64 `json:"estimated_packets"`
}

// indexQuery parses the request's q and runs fn with it, at low priority
// and under the query time limit. A bad query or a failure of fn is
// answered here (what names it in logs); ok says whether fn succeeded.
func (s *Server) indexQuery(w http.ResponseWriter, r *http.Request, what string, fn func(ctx context.Context, q *query.Query) error) (q *query.Query, ok bool) {
	text := r.URL.Query().Get("q")
	q, err := s.parseQuery(text)
	if err != nil {
		s.badQuery(w, r, text, err)
		return nil, false
	}
	ctx, cancel := s.queryContext(r.Context())
	defer cancel()
	s.metrics.running.Inc()
	err = s.lowPriority(func() error { return fn(ctx, q) })
	s.metrics.running.Dec()
	if err != nil {
		s.queryFailed(w, r, what, q, err)
		return nil, false
	}
	return q, true
}

func (s *Server) handleHistogram(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	n, err := intParam(v, "buckets", DefaultHistogramBuckets, 1, engine.MaxHistogramBuckets, "")
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	var h engine.TimeHistogram
	q, ok := s.indexQuery(w, r, "histogram", func(ctx context.Context, q *query.Query) (err error) {
		h, err = engine.Histogram(ctx, s.sp, q, n)
		return err
	})
	if !ok {
		return
	}
	out := HistogramAnswer{Query: q.String(), StartNS: h.Start, WidthNS: h.Width, Width: formatDays(time.Duration(h.Width)),
		Packets: h.Packets, Bytes: h.Bytes, EstimatedPackets: h.Estimated}
	if out.Packets == nil {
		out.Packets, out.Bytes, out.Width = []uint64{}, []uint64{}, "0s"
	} else {
		out.Start = formatNS(h.Start)
	}
	for i := range h.Packets {
		out.TotalPackets += h.Packets[i]
		out.TotalBytes += h.Bytes[i]
	}
	s.metrics.queries.WithLabelValues(outcomeComplete).Inc()
	s.writeJSON(w, &out)
}
