package engine

import (
	"context"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// TestFlowsCutCounts: cut counts reported to the spool while a file is
// written reach the flows of Flows and FlowPage, on flows with stored
// packets and on flows with none, live and after the file is sealed, and
// follow the query's time bounds by the flow's last time.
func TestFlowsCutCounts(t *testing.T) {
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{t.TempDir()}
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	if sp.AddCut("gen0", &flow.Key{}, 1, 60, 1) {
		t.Fatal("AddCut found a file before any was written")
	}
	w, err := sp.NewWriter("gen", "gen0")
	if err != nil {
		t.Fatal(err)
	}
	gen := trafficgen.New(3, 5)
	var stored flow.Key
	var first, last int64
	for i := range 200 {
		frame, ts := gen.Next()
		var k flow.Key
		flow.Parse(frame, &k)
		if err := w.Append(ts, len(frame), frame, &k); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			stored, first = k, ts
		}
		last = ts
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	cutOnly := stored
	cutOnly.SrcPort, cutOnly.DstPort = 1, 2
	if !sp.AddCut("gen0", &stored, 10, 15000, last) || !sp.AddCut("gen0", &cutOnly, 4, 6000, (first+last)/2) {
		t.Fatal("AddCut found no file being written")
	}
	if sp.AddCut("other0", &stored, 1, 1, last) {
		t.Fatal("AddCut counted on another interface's file")
	}

	check := func(what, text string, want map[flow.Key][2]uint64) {
		t.Helper()
		q, err := query.Parse(text, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		recs, err := Flows(context.Background(), sp, q, 0)
		if err != nil {
			t.Fatal(err)
		}
		page, err := FlowPage(context.Background(), sp, q, FlowPageOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got, gotPage := map[flow.Key][2]uint64{}, map[flow.Key][2]uint64{}
		for _, r := range recs {
			if r.CutPackets > 0 {
				got[r.Key] = [2]uint64{r.CutPackets, r.CutBytes}
			}
			if r.Key == cutOnly && r.Packets != 0 {
				t.Errorf("%s: the cut-only flow has %d stored packets", what, r.Packets)
			}
		}
		for _, r := range page.Flows {
			if r.CutPackets > 0 {
				gotPage[r.Key] = [2]uint64{r.CutPackets, r.CutBytes}
			}
		}
		for _, g := range []map[flow.Key][2]uint64{got, gotPage} {
			if len(g) != len(want) {
				t.Errorf("%s %q: cut flows %v, want %v", what, text, g, want)
			}
			for k, w := range want {
				if g[k] != w {
					t.Errorf("%s %q: flow %v cut %v, want %v", what, text, k, g[k], w)
				}
			}
		}
	}
	both := map[flow.Key][2]uint64{stored: {10, 15000}, cutOnly: {4, 6000}}
	mid := time.Unix(0, (first+last)/2+1).UTC().Format(time.RFC3339Nano)
	for _, what := range []string{"live", "sealed"} {
		check(what, "after 1970-01-01T00:00:00Z", both)
		check(what, "port 1", map[flow.Key][2]uint64{cutOnly: {4, 6000}})
		// The cut-only flow's time is the middle; the stored flow's
		// last time is the file's last.
		check(what, "after "+mid, map[flow.Key][2]uint64{stored: {10, 15000}})
		if what == "live" {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
