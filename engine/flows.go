package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// FlowRecord is one flow of a Flows answer, summed over the spool files,
// counting only the packets that match the query.
type FlowRecord struct {
	Key     flow.Key
	First   int64 // unix ns
	Last    int64
	Packets uint64
	Bytes   uint64 // wire bytes
}

// Flows returns the flows with packets matching q, busiest first, at most
// limit of them (0: all). Flows that match whatever their packets' times are
// counted from the index alone; the others have their packets' timestamps
// read from the pcap files.
func Flows(ctx context.Context, sp *spool.Spool, q *query.Query, limit int) (out []FlowRecord, err error) {
	lo, hi := q.TimeRange()
	if lo >= hi {
		return nil, nil
	}
	// Cut off (spool.ErrRevoked), it stops at the next file.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	handles, err := sp.SnapshotFor(lo, hi, cancel)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, spool.CloseAll(handles)) }()
	agg := map[flow.Key]*FlowRecord{}
	add := func(k *flow.Key, ts int64, packets, bytes uint64, last int64) {
		r := agg[*k]
		if r == nil {
			r = &FlowRecord{Key: *k, First: ts, Last: last}
			agg[*k] = r
		}
		r.First = min(r.First, ts)
		r.Last = max(r.Last, last)
		r.Packets += packets
		r.Bytes += bytes
	}
	for _, h := range handles {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("flows: %w", context.Cause(ctx))
		}
		sum := h.View.Summary()
		type byTime struct {
			id  int
			key flow.Key
		}
		var timed []byTime
		match := flowMatcher(q, h.View)
		h.View.Flows(func(id int, f *index.Flow) bool {
			switch match(id, f) {
			case query.Yes:
				add(&f.Key, f.First, f.Packets, f.Bytes, f.Last)
			case query.ByTime:
				timed = append(timed, byTime{id, f.Key})
			}
			return true
		})
		rr := newRecordReader(h, sum.DataEnd, false)
		var offs []int64
		var sums []uint32
		var skipped damage
		for _, t := range timed {
			if offs, err = h.View.AppendPositions(offs[:0], t.id); err != nil {
				return nil, fmt.Errorf("spool %s: %w", h.File.Path, err)
			}
			if sums, err = h.View.AppendSums(sums[:0], t.id); err != nil {
				return nil, fmt.Errorf("spool %s: %w", h.File.Path, err)
			}
			for i, off := range offs {
				// Published by a live index after sum was taken.
				if off >= sum.DataEnd || i >= len(sums) {
					break
				}
				ahead := int64(recordGuess)
				if i+1 < len(offs) && offs[i+1]-off <= maxGap {
					ahead = offs[i+1] - off + recordGuess
				}
				hdr, _, err := rr.record(off, ahead, sums[i])
				if skipped.skip(err) {
					continue
				}
				if err != nil {
					return nil, err
				}
				if q.MatchPacket(&t.key, hdr.Timestamp) {
					add(&t.key, hdr.Timestamp, 1, uint64(hdr.OrigLen), hdr.Timestamp)
				}
			}
		}
		sp.Damaged(h.File, skipped.n, skipped.first)
	}
	out = make([]FlowRecord, 0, len(agg))
	for _, r := range agg {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b FlowRecord) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.First, b.First), compareKeys(&a.Key, &b.Key))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// compareKeys orders keys by their bytes, a stable tie-break that, unlike
// formatting them, allocates nothing.
func compareKeys(a, b *flow.Key) int {
	var x, y [flow.KeySize]byte
	a.Put(x[:])
	b.Put(y[:])
	return bytes.Compare(x[:], y[:])
}
