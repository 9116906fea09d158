package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// FlowRow is one flow of a /v1/flows answer: Flow (the key and counts,
// whose fields it shares in JSON) and the capture interface it was seen
// on. A key seen on two interfaces is two rows.
type FlowRow struct {
	Flow
	Iface string `json:"iface,omitempty"`
}

// Flows is the /v1/flows answer: one page of the matching flows, sorted.
type Flows struct {
	Query string    `json:"query"`
	Flows []FlowRow `json:"flows"`
	// Truncated: more flows matched than this page holds after Offset.
	Truncated bool `json:"truncated"`
	// Total is how many flows matched in all; Offset, Limit, Sort and
	// Order are the page's, defaults filled in.
	Total  int    `json:"total"`
	Offset int    `json:"offset"`
	Limit  int    `json:"limit"`
	Sort   string `json:"sort"`
	Order  string `json:"order"`
}

// flowsRequest reads the paging and sorting parameters of /v1/flows.
func flowsRequest(v url.Values) (engine.FlowPageOptions, error) {
	opts := engine.FlowPageOptions{Sort: engine.SortBytes}
	var err error
	if opts.Limit, err = intParam(v, "limit", DefaultFlows, 1, MaxFlows, ""); err != nil {
		return opts, err
	}
	if opts.Offset, err = intParam(v, "offset", 0, 0, math.MaxInt, ""); err != nil {
		return opts, err
	}
	if s := v.Get("sort"); s != "" {
		var err error
		if opts.Sort, err = engine.ParseFlowSort(s); err != nil {
			return opts, err
		}
	}
	// Counts read best largest first, everything else in its natural
	// order.
	opts.Desc = opts.Sort == engine.SortBytes || opts.Sort == engine.SortPackets
	switch o := v.Get("order"); o {
	case "":
	case "asc":
		opts.Desc = false
	case "desc":
		opts.Desc = true
	default:
		return opts, fmt.Errorf("order %q: want asc or desc", o)
	}
	return opts, nil
}

func (s *Server) handleFlows(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	opts, err := flowsRequest(v)
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	var page engine.FlowPageResult
	q, ok := s.indexQuery(w, r, "flow query", func(ctx context.Context, q *query.Query) (err error) {
		page, err = engine.FlowPage(ctx, s.sp, q, opts)
		return err
	})
	if !ok {
		return
	}
	order := "asc"
	if opts.Desc {
		order = "desc"
	}
	out := Flows{Query: q.String(), Flows: make([]FlowRow, 0, len(page.Flows)), Total: page.Total,
		Offset: opts.Offset, Limit: opts.Limit, Sort: string(opts.Sort), Order: order,
		Truncated: opts.Offset+len(page.Flows) < page.Total}
	for i := range page.Flows {
		f := &page.Flows[i]
		out.Flows = append(out.Flows, FlowRow{Flow: flowJSON(&f.FlowRecord, uint16(s.cfg.CommunityIDSeed)), Iface: f.Iface})
	}
	s.metrics.queries.WithLabelValues(outcomeComplete).Inc()
	s.writeJSON(w, &out)
}

// queryFailed answers a flow, histogram or packet list query that failed
// before anything was written: 503 for the time limit and for a query cut
// off for capture, 500 for anything else; nothing when the client went
// away.
func (s *Server) queryFailed(w http.ResponseWriter, r *http.Request, what string, q *query.Query, err error) {
	switch {
	case r.Context().Err() != nil:
		s.metrics.queries.WithLabelValues(outcomeCancelled).Inc()
		s.log.Info("client went away; "+what+" stopped", "query", q.String(), "err", err)
	case errors.Is(err, errQueryTimeout):
		s.fail(w, http.StatusServiceUnavailable, outcomeTimeout,
			fmt.Sprintf("query stopped at the configured time limit of %v", s.cfg.QueryTimeout))
	case errors.Is(err, spool.ErrRevoked):
		s.log.Warn(what+" cut off", "query", q.String(), "err", err)
		s.fail(w, http.StatusServiceUnavailable, outcomeRevoked, err.Error())
	default:
		s.log.Error(what+" failed", "query", q.String(), "err", err)
		s.fail(w, http.StatusInternalServerError, outcomeFailed, err.Error())
	}
}
