package engine

import (
	"cmp"
	"math"
	"math/bits"
	"slices"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/query"
)

// cand is one packet that may match: its record offset, its record's
// checksum from the index, and the flow it belongs to when its timestamp
// still has to be tested (-1 when it matches whatever its timestamp).
type cand struct {
	off  int64
	ts   int64 // filled in when read
	flow int32 // index into selection.keys, or -1
	sum  uint32
}

// selection is what one file contributes before any packet is read.
type selection struct {
	cands []cand
	keys  []flow.Key // keys of ByTime flows, for the per-packet test
}

// selectFile evaluates q on a file's flows and returns its candidates in
// file order. A query with only time primitives goes through the flows too
// (every packet, parsed or not, belongs to one): that way every record read
// comes with its checksum, and a packet is never returned unchecked.
func selectFile(q *query.Query, v index.View, sum index.Summary) (*selection, error) {
	lo, hi := q.TimeRange()
	bounded := lo != math.MinInt64 || hi != math.MaxInt64
	blocks := v.Blocks()
	sel := &selection{}
	type chosen struct {
		id   int
		flow int32
	}
	var ids []chosen
	var packets, most uint64 // of the chosen flows, to size the slices once
	match := flowMatcher(q, v)
	v.Flows(func(id int, f *index.Flow) bool {
		switch match(id, f) {
		case query.No:
			return true
		case query.Yes:
			ids = append(ids, chosen{id, -1})
		case query.ByTime:
			sel.keys = append(sel.keys, f.Key)
			ids = append(ids, chosen{id, int32(len(sel.keys) - 1)})
		}
		packets += f.Packets
		most = max(most, f.Packets)
		return true
	})
	// A live index may count packets published after sum was taken; the
	// capacities are hints.
	sel.cands = make([]cand, 0, min(packets, sum.Packets))
	offs := make([]int64, 0, min(most, sum.Packets))
	sums := make([]uint32, 0, min(most, sum.Packets))
	for _, c := range ids {
		var err error
		if offs, err = v.AppendPositions(offs[:0], c.id); err != nil {
			return nil, err
		}
		// A live index may publish packets between the two calls; both
		// lists grow at their ends only, so they agree on their common
		// prefix.
		if sums, err = v.AppendSums(sums[:0], c.id); err != nil {
			return nil, err
		}
		for i, o := range offs {
			// A live index may have published packets since sum was
			// taken; they are past the end this answer reads up to.
			if o >= sum.DataEnd || i >= len(sums) {
				break
			}
			sel.cands = append(sel.cands, cand{off: o, flow: c.flow, sum: sums[i]})
		}
	}
	if len(ids) > 1 {
		sel.cands = sortByOffset(sel.cands, sum.DataEnd)
	}
	if bounded && len(blocks) > 1 {
		sel.cands = pruneByBlocks(sel.cands, blocks, lo, hi)
	}
	return sel, nil
}

// radixMin: shorter candidate lists are sorted by comparison.
const radixMin = 1024

// sortByOffset sorts candidates by offset, each below end, and returns the
// sorted slice: cs itself or a new one. Offsets are unique (one record
// each), so stability does not arise. A broad query selects millions of
// candidates from thousands of flows, which a comparison sort spent most of
// the selection's time on; a radix sort (LSD, 11-bit digits, one pass per
// digit that the offsets below end use) takes a few passes over them.
func sortByOffset(cs []cand, end int64) []cand {
	if len(cs) < radixMin {
		slices.SortFunc(cs, func(a, b cand) int { return cmp.Compare(a.off, b.off) })
		return cs
	}
	const digit = 11
	const mask = 1<<digit - 1
	src, dst := cs, make([]cand, len(cs))
	for shift := 0; shift < bits.Len64(uint64(max(end, 1))); shift += digit {
		var count [1 << digit]int
		for i := range src {
			count[src[i].off>>shift&mask]++
		}
		if count[src[0].off>>shift&mask] == len(src) {
			continue // one bucket: already in order for this digit
		}
		sum := 0
		for i, n := range count {
			count[i] = sum
			sum += n
		}
		for i := range src {
			d := src[i].off >> shift & mask
			dst[count[d]] = src[i]
			count[d]++
		}
		src, dst = dst, src
	}
	return src
}

// pruneByBlocks drops candidates in blocks whose timestamps all fall outside
// [lo, hi). cands is sorted by offset, so one pass over both suffices.
func pruneByBlocks(cands []cand, blocks []index.Block, lo, hi int64) []cand {
	out := cands[:0]
	b := -1 // the block holding the current candidate
	for _, c := range cands {
		for b+1 < len(blocks) && blocks[b+1].Offset <= c.off {
			b++
		}
		if b >= 0 && (blocks[b].Max < lo || blocks[b].Min >= hi) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// communityIDCache is a View that keeps its flows' Community ID heads
// (index.Reader: a sealed index, which never changes).
type communityIDCache interface {
	CommunityIDHeads(seed uint16) []uint64
}

// flowMatcher returns the flow verdict of q for v's flow id: with the
// view's cached Community ID heads when q has community-id and v keeps
// them, so that a pivot by Community ID costs no SHA-1 per flow after the
// first on each file.
func flowMatcher(q *query.Query, v index.View) func(id int, f *index.Flow) query.Verdict {
	if c, ok := v.(communityIDCache); ok && q.HasCommunityID() {
		heads := c.CommunityIDHeads(q.CommunityIDSeed())
		return func(id int, f *index.Flow) query.Verdict {
			if id < len(heads) {
				return q.MatchFlowWithID(&f.Key, heads[id], f.First, f.Last)
			}
			return q.MatchFlowDuring(&f.Key, f.First, f.Last)
		}
	}
	return func(_ int, f *index.Flow) query.Verdict { return q.MatchFlowDuring(&f.Key, f.First, f.Last) }
}
