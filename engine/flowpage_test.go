package engine

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// TestFlowPage: the flows per key and interface add up to Flows' per key;
// every order pages through each flow exactly once, sorted; the interface
// is the spool stream's.
func TestFlowPage(t *testing.T) {
	c := importAll(t)
	ctx := context.Background()
	for _, text := range []string{"tcp or udp", "port 53", "after 1970-01-01T00:00:00Z"} {
		q, err := query.Parse(text, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		exp, err := Flows(ctx, c.sp, q, 0)
		if err != nil {
			t.Fatal(err)
		}
		whole, err := FlowPage(ctx, c.sp, q, FlowPageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if whole.Total != len(whole.Flows) || whole.Total < len(exp) {
			t.Fatalf("%q: total %d, %d flows, %d keys", text, whole.Total, len(whole.Flows), len(exp))
		}
		byKey := map[flow.Key]FlowRecord{}
		for _, f := range whole.Flows {
			if f.Iface != "eth0" && f.Iface != "eth1" && f.Iface != "eth2" {
				t.Fatalf("%q: interface %q", text, f.Iface)
			}
			r, ok := byKey[f.Key]
			if !ok {
				r = f.FlowRecord
			} else {
				r.add(&counts{f.First, f.Last, f.Packets, f.Bytes, f.CutPackets, f.CutBytes})
			}
			byKey[f.Key] = r
		}
		for _, e := range exp {
			if byKey[e.Key] != e {
				t.Errorf("%q: %v: per interface %+v, Flows %+v", text, e.Key, byKey[e.Key], e)
			}
		}
		// A handful of pages each: every page aggregates the whole spool.
		size := whole.Total/4 + 1
		for _, s := range FlowSorts {
			for _, desc := range []bool{false, true} {
				var paged []IfaceFlow
				for off := 0; ; off += size {
					p, err := FlowPage(ctx, c.sp, q, FlowPageOptions{Sort: s, Desc: desc, Offset: off, Limit: size})
					if err != nil {
						t.Fatal(err)
					}
					if p.Total != whole.Total {
						t.Fatalf("%q %s: total %d, want %d", text, s, p.Total, whole.Total)
					}
					paged = append(paged, p.Flows...)
					if len(p.Flows) < size {
						break
					}
				}
				if len(paged) != whole.Total {
					t.Fatalf("%q %s desc=%v: %d flows paged, want %d", text, s, desc, len(paged), whole.Total)
				}
				by := flowOrder(s)
				seen := map[[2]any]bool{}
				for i := range paged {
					id := [2]any{paged[i].Key, paged[i].Iface}
					if seen[id] {
						t.Fatalf("%q %s: %v twice", text, s, id)
					}
					seen[id] = true
					if i == 0 {
						continue
					}
					c := by(&paged[i-1], &paged[i])
					if desc {
						c = -c
					}
					if c > 0 {
						t.Fatalf("%q %s desc=%v: flow %d out of order: %+v after %+v", text, s, desc, i, paged[i], paged[i-1])
					}
				}
			}
		}
	}
	if _, err := ParseFlowSort("nope"); err == nil {
		t.Error("ParseFlowSort accepted nope")
	}
	if s, err := ParseFlowSort("dport"); err != nil || s != SortDport {
		t.Errorf("ParseFlowSort(dport): %v %v", s, err)
	}
}

// TestHistogram compares Histogram, which reads only indexes, with the
// histogram of the packets themselves: the same totals, and each bucket off
// by at most the packets whose place was estimated.
func TestHistogram(t *testing.T) {
	c := importAll(t)
	ctx := context.Background()
	for _, tc := range []struct {
		text    string
		buckets int
		// exactBytes: every flow matches whole, so the bytes add up
		// exactly too.
		exactBytes bool
	}{
		{"tcp or udp", 100, true},
		{"port 53", 10, true},
		{"after 1970-01-01T00:00:00Z", 1000, true},
		{"icmp or icmp6", 1, true},
		{"tcp and after 2009-01-01T00:00:00Z and before 2012-01-01T00:00:00Z", 50, false},
	} {
		q, err := query.Parse(tc.text, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		h, err := Histogram(ctx, c.sp, q, tc.buckets)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Packets) > tc.buckets || len(h.Packets) != len(h.Bytes) || h.Width <= 0 || h.Start%h.Width != 0 {
			t.Fatalf("%q: %d buckets of %v from %d", tc.text, len(h.Packets), time.Duration(h.Width), h.Start)
		}
		exp := make([]uint64, len(h.Packets))
		var packets, bytes uint64
		for i := range c.refs {
			r := &c.refs[i]
			if !q.MatchPacket(&r.key, r.ts) {
				continue
			}
			b := floorDiv(r.ts-h.Start, h.Width)
			if b < 0 || b >= int64(len(exp)) {
				t.Fatalf("%q: packet at %d outside the histogram", tc.text, r.ts)
			}
			exp[b]++
			packets++
			bytes += uint64(r.origLen)
		}
		var gotP, gotB, off uint64
		for i := range exp {
			gotP += h.Packets[i]
			gotB += h.Bytes[i]
			off += max(h.Packets[i], exp[i]) - min(h.Packets[i], exp[i])
		}
		t.Logf("%q: %d buckets of %v, %d packets (%d estimated), %d misplaced", tc.text, len(exp), time.Duration(h.Width), gotP, h.Estimated, off/2)
		if packets == 0 {
			t.Fatalf("%q: no packets", tc.text)
		}
		if tc.exactBytes && (gotP != packets || gotB != bytes) {
			t.Errorf("%q: %d packets %d bytes, want %d and %d", tc.text, gotP, gotB, packets, bytes)
		}
		if off > 2*h.Estimated {
			t.Errorf("%q: buckets off by %d packets, more than the %d estimated\n got %v\nwant %v", tc.text, off/2, h.Estimated, h.Packets, exp)
		}
		if !tc.exactBytes {
			// Time bounds through flows: close, not exact.
			if d := max(gotP, packets) - min(gotP, packets); d > h.Estimated {
				t.Errorf("%q: %d packets, want %d (±%d estimated)", tc.text, gotP, packets, h.Estimated)
			}
		}
	}
	q, _ := query.Parse("tcp", time.Now())
	for _, n := range []int{0, MaxHistogramBuckets + 1} {
		if _, err := Histogram(ctx, c.sp, q, n); err == nil {
			t.Errorf("%d buckets accepted", n)
		}
	}
}

func TestBucketWidth(t *testing.T) {
	for _, tc := range []struct {
		first, last int64
		n           int
		want        time.Duration
	}{
		{0, 0, 1, time.Microsecond},
		{0, int64(59 * time.Second), 60, time.Second},
		{0, int64(60 * time.Second), 60, 2 * time.Second},
	} {
		if got := bucketWidth(tc.first, tc.last, tc.n); got != int64(tc.want) {
			t.Errorf("bucketWidth(%d, %d, %d) = %v, want %v", tc.first, tc.last, tc.n, time.Duration(got), tc.want)
		}
	}
	// Across an aligned boundary, one bucket cannot hold two nanoseconds.
	if got := bucketWidth(int64(time.Hour)-1, int64(time.Hour), 1); got != int64(2*time.Hour) {
		t.Errorf("straddling the hour in one bucket: %v", time.Duration(got))
	}
	// Years in 100 buckets: whole weeks.
	w := bucketWidth(0, int64(3*365*24*time.Hour), 100)
	if w%int64(7*24*time.Hour) != 0 || (int64(3*365*24*time.Hour))/w >= 100 {
		t.Errorf("three years in 100 buckets: %v", time.Duration(w))
	}
	if !slices.IsSorted(niceWidths) {
		t.Error("niceWidths not sorted")
	}
}

// TestHistogramEstimate: long flows of busy traffic, whose blocks span many
// buckets, are spread over them: totals exact, each bucket close.
func TestHistogramEstimate(t *testing.T) {
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{t.TempDir()}
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sp.NewWriter("gen", "gen0")
	if err != nil {
		t.Fatal(err)
	}
	gen := trafficgen.New(7, 20)
	var refs []ref
	for range 20000 {
		frame, ts := gen.Next()
		r := ref{ts: ts, origLen: len(frame)}
		flow.Parse(frame, &r.key)
		if err := w.Append(ts, len(frame), frame, &r.key); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	mid := time.Unix(0, refs[len(refs)/3].ts).UTC().Format(time.RFC3339Nano)
	for _, text := range []string{"tcp or udp", "after 1970-01-01T00:00:00Z", "tcp and after " + mid} {
		q, err := query.Parse(text, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		h, err := Histogram(context.Background(), sp, q, 1000)
		if err != nil {
			t.Fatal(err)
		}
		exp := make([]uint64, len(h.Packets))
		var packets, bytes, gotP, gotB, off uint64
		for _, r := range refs {
			if q.MatchPacket(&r.key, r.ts) {
				exp[floorDiv(r.ts-h.Start, h.Width)]++
				packets++
				bytes += uint64(r.origLen)
			}
		}
		for i := range exp {
			gotP += h.Packets[i]
			gotB += h.Bytes[i]
			off += max(h.Packets[i], exp[i]) - min(h.Packets[i], exp[i])
		}
		t.Logf("%q: %d buckets of %v, %d packets (%d estimated), %d misplaced", text, len(exp), time.Duration(h.Width), gotP, h.Estimated, off/2)
		if h.Estimated == 0 {
			t.Errorf("%q: nothing estimated: the test does not test the estimate", text)
		}
		d := max(gotP, packets) - min(gotP, packets)
		if d > packets/100 || max(gotB, bytes)-min(gotB, bytes) > bytes/50 {
			t.Errorf("%q: %d packets %d bytes, want %d and %d", text, gotP, gotB, packets, bytes)
		}
		// Busy, evenly paced traffic: spread evenly, few land in the
		// wrong bucket.
		if off/2 > packets/5 {
			t.Errorf("%q: %d of %d packets in the wrong bucket", text, off/2, packets)
		}
	}
}

// firstInOrder's bounded heap gives what a full sort does, ties included.
func TestFirstInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all := make([]IfaceFlow, 5000)
	for i := range all {
		all[i].Bytes = uint64(rng.IntN(300)) // many ties
		all[i].Packets = uint64(i)
	}
	compare := func(a, b *IfaceFlow) int { return cmp.Compare(b.Bytes, a.Bytes) }
	want := slices.Clone(all)
	slices.SortStableFunc(want, func(a, b IfaceFlow) int { return compare(&a, &b) })
	for _, n := range []int{0, 1, 7, 100, 1249, 1250, 5000} {
		got := firstInOrder(slices.Clone(all), n, compare)
		if len(got) != n {
			t.Fatalf("n %d: %d flows", n, len(got))
		}
		for i := range got {
			if got[i].Bytes != want[i].Bytes {
				t.Fatalf("n %d: flow %d has %d bytes, want %d", n, i, got[i].Bytes, want[i].Bytes)
			}
		}
	}
}
