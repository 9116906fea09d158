package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// MaxHistogramBuckets bounds Histogram's buckets: the answer stays small
// however long the range.
const MaxHistogramBuckets = 1000

// TimeHistogram is the packets and bytes matching a query per time bucket. The
// buckets are Width long, the first starting at Start (unix ns); Width is a
// round duration (1s, 5m, 1h, ...) and Start a multiple of it.
type TimeHistogram struct {
	Start, Width int64
	Packets      []uint64
	Bytes        []uint64 // wire bytes
	// Estimated counts the packets whose bucket was apportioned rather
	// than known: see Histogram's precision.
	Estimated uint64
}

// Histogram counts the packets matching q per time bucket, at most buckets
// of them (1 to MaxHistogramBuckets), over the span from the first to the
// last matching packet, within q's time range. It reads no packet: only the
// indexes' flow records, packet positions and sparse time blocks.
//
// Precision: a file's packets are grouped in blocks of index.BlockPackets,
// each with the smallest and largest timestamp in it. A packet's time is
// known to the intersection of its block's span and its flow's first and
// last seen. When that falls in one bucket (the usual case: a block covers
// well under a second of busy traffic, and short flows pin their packets
// down), the packet is counted there exactly; otherwise the packets of the
// flow in that block are spread over the buckets the span overlaps, in
// proportion to the overlap, and counted in Estimated. Bytes are the
// flow's mean packet size times its packets in the bucket, rounded so that
// a flow's bytes add up to its total. A flow whose match depends on time
// (a query's before/after cutting through it) is counted in a bucket when
// the query holds for that part of its span, decided at the part's middle
// when the part straddles a time bound.
func Histogram(ctx context.Context, sp *spool.Spool, q *query.Query, buckets int) (hist TimeHistogram, err error) {
	if buckets < 1 || buckets > MaxHistogramBuckets {
		return hist, fmt.Errorf("histogram: %d buckets: want 1 to %d", buckets, MaxHistogramBuckets)
	}
	lo, hi := q.TimeRange()
	if lo >= hi {
		return hist, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	handles, err := sp.SnapshotFor(lo, hi, cancel)
	if err != nil {
		return hist, err
	}
	defer func() { err = errors.Join(err, spool.CloseAll(handles)) }()

	// First the span of the matching flows, which the buckets cover. Each
	// pass matches every flow: flowMatcher makes that cheap (a Community
	// ID from the index's cache, not hashed per flow), and the other way,
	// keeping each flow's verdict between the passes, would hold a
	// record per flow.
	matchers := make([]func(int, *index.Flow) query.Verdict, len(handles))
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for i, h := range handles {
		match := flowMatcher(q, h.View)
		matchers[i] = match
		h.View.Flows(func(id int, f *index.Flow) bool {
			if match(id, f) != query.No {
				first = min(first, max(f.First, lo))
				last = max(last, min(f.Last, hi-1))
			}
			return true
		})
	}
	if first > last {
		return hist, nil
	}
	hist.Width = bucketWidth(first, last, buckets)
	hist.Start = floorDiv(first, hist.Width) * hist.Width
	n := int((last-hist.Start)/hist.Width) + 1
	hist.Packets = make([]uint64, n)
	hist.Bytes = make([]uint64, n)

	c := histCounter{h: &hist, q: q, lo: lo, hi: hi}
	var offs []int64
	for i, h := range handles {
		if err := ctx.Err(); err != nil {
			return TimeHistogram{}, fmt.Errorf("histogram: %w", context.Cause(ctx))
		}
		match := matchers[i]
		sum := h.View.Summary()
		blocks := h.View.Blocks()
		var ferr error
		h.View.Flows(func(id int, f *index.Flow) bool {
			v := match(id, f)
			if v == query.No || f.Packets == 0 {
				return true
			}
			c.startFlow(f, v)
			if v == query.Yes && c.bucket(f.First) == c.bucket(f.Last) {
				// The whole flow falls in one bucket: no need for its
				// packets' positions.
				c.add(f.First, f.Last, f.Packets)
				return true
			}
			if offs, ferr = h.View.AppendPositions(offs[:0], id); ferr != nil {
				ferr = fmt.Errorf("spool %s: %w", h.File.Path, ferr)
				return false
			}
			c.positions(offs, blocks, sum.DataEnd)
			return true
		})
		if ferr != nil {
			return TimeHistogram{}, ferr
		}
	}
	return hist, nil
}

// histCounter adds one flow's packets to a histogram.
type histCounter struct {
	h      *TimeHistogram
	q      *query.Query
	lo, hi int64
	// The current flow: its key, span, verdict and size, and how many of
	// its packets were counted so far (for the rounding of its bytes).
	key         *flow.Key
	first, last int64
	verdict     query.Verdict
	packets     uint64
	bytes       uint64
	seen        uint64
}

func (c *histCounter) startFlow(f *index.Flow, v query.Verdict) {
	c.key, c.first, c.last, c.verdict = &f.Key, f.First, f.Last, v
	c.packets, c.bytes, c.seen = f.Packets, f.Bytes, 0
}

// positions counts a flow's packets at offs (ascending) by the blocks that
// hold them.
func (c *histCounter) positions(offs []int64, blocks []index.Block, end int64) {
	b := -1
	run := uint64(0)
	flush := func() {
		if run == 0 {
			return
		}
		a, z := c.first, c.last
		if b >= 0 && blocks[b].Min <= blocks[b].Max {
			a, z = max(a, blocks[b].Min), min(z, blocks[b].Max)
			if a > z {
				// Only a live index whose flow record lags its blocks.
				a, z = c.first, c.last
			}
		}
		c.add(a, z, run)
		run = 0
	}
	for _, off := range offs {
		if off >= end {
			break
		}
		if b+1 < len(blocks) && blocks[b+1].Offset <= off {
			flush()
			// Offsets ascend: search only the blocks after b.
			b += sort.Search(len(blocks)-b-1, func(i int) bool { return blocks[b+1+i].Offset > off })
		}
		run++
	}
	flush()
}

// bucket returns the bucket of time t, clamped to the histogram.
func (c *histCounter) bucket(t int64) int {
	i := floorDiv(t-c.h.Start, c.h.Width)
	return int(min(max(i, 0), int64(len(c.h.Packets)-1)))
}

// add counts n packets of the current flow stamped within [a, z].
func (c *histCounter) add(a, z int64, n uint64) {
	if a < c.lo || z >= c.hi {
		// Only the share of the span within the query's time range
		// counts.
		x, y := max(a, c.lo), min(z, c.hi-1)
		if x > y {
			return
		}
		n = uint64(math.Round(float64(n) * (float64(y-x) + 1) / (float64(z-a) + 1)))
		a, z = x, y
	}
	if n == 0 {
		return
	}
	i0, i1 := c.bucket(a), c.bucket(z)
	if i1 > i0 {
		c.h.Estimated += n
	}
	span := float64(z-a) + 1
	done := uint64(0) // of n, assigned to the buckets before i
	for i := i0; i <= i1; i++ {
		bs := c.h.Start + int64(i)*c.h.Width
		x, y := max(a, bs), min(z, bs+c.h.Width-1)
		// Cumulative rounding: the parts add up to n exactly.
		upto := n
		if i < i1 {
			upto = uint64(math.Round(float64(n) * (float64(y-a) + 1) / span))
		}
		k := upto - done
		done = upto
		if k == 0 || !c.matches(x, y) {
			continue
		}
		c.h.Packets[i] += k
		c.h.Bytes[i] += c.flowBytes(k)
	}
}

// matches reports whether the current flow's packets stamped within [x, y]
// match: decided by the flow's verdict, else for the span, else at its
// middle.
func (c *histCounter) matches(x, y int64) bool {
	if c.verdict == query.Yes {
		return true
	}
	switch c.q.MatchFlowDuring(c.key, x, y) {
	case query.Yes:
		return true
	case query.No:
		return false
	}
	return c.q.MatchPacket(c.key, x+(y-x)/2)
}

// flowBytes returns the bytes of the current flow's next k packets, at its
// mean packet size, rounded so that all its packets' add up to its bytes.
func (c *histCounter) flowBytes(k uint64) uint64 {
	before := c.seen
	c.seen = min(c.seen+k, c.packets)
	share := func(p uint64) uint64 {
		if p >= c.packets {
			return c.bytes
		}
		return uint64(math.Round(float64(c.bytes) * float64(p) / float64(c.packets)))
	}
	return share(c.seen) - share(before)
}

// niceWidths are the bucket widths a histogram uses, shortest first: round
// numbers of the units people read time in.
var niceWidths = []time.Duration{
	time.Microsecond, 10 * time.Microsecond, 100 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour,
}

// bucketWidth returns the shortest round width whose buckets, aligned to
// multiples of it, cover [first, last] in at most n buckets.
func bucketWidth(first, last int64, n int) int64 {
	fits := func(w int64) bool {
		start := floorDiv(first, w) * w
		return (last-start)/w < int64(n)
	}
	for _, w := range niceWidths {
		if fits(int64(w)) {
			return int64(w)
		}
	}
	// Longer than the longest round width allows: whole weeks.
	week := int64(7 * 24 * time.Hour)
	w := ((last-first)/int64(n)/week + 1) * week
	for !fits(w) {
		w += week
	}
	return w
}

// floorDiv is a/b rounded down (b > 0), also for negative a.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
