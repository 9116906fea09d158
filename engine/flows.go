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
	// CutPackets and CutBytes: the flow's packets and wire bytes the
	// per-connection cutoff did not store (index.Flow). They count with
	// a file's flow when the flow matches the query, or, when only some
	// of its packets' times do, when its last time (its latest packet,
	// stored or cut) does.
	CutPackets uint64
	CutBytes   uint64
}

// counts are what scanFlows reports of a flow in one file.
type counts struct {
	first, last          int64
	packets, bytes       uint64
	cutPackets, cutBytes uint64
}

// Flows returns the flows with packets matching q, busiest first, at most
// limit of them (0: all). Flows that match whatever their packets' times are
// counted from the index alone; the others have their packets' timestamps
// read from the pcap files.
func Flows(ctx context.Context, sp *spool.Spool, q *query.Query, limit int) (out []FlowRecord, err error) {
	agg := map[flow.Key]*FlowRecord{}
	err = scanFlows(ctx, sp, q, func(_ *spool.Handle, k *flow.Key, c *counts) {
		r := agg[*k]
		if r == nil {
			r = &FlowRecord{Key: *k, First: c.first, Last: c.last}
			agg[*k] = r
		}
		r.add(c)
	})
	if err != nil {
		return nil, err
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

// add counts c into r.
func (r *FlowRecord) add(c *counts) {
	r.First = min(r.First, c.first)
	r.Last = max(r.Last, c.last)
	r.Packets += c.packets
	r.Bytes += c.bytes
	r.CutPackets += c.cutPackets
	r.CutBytes += c.cutBytes
}

// scanFlows calls add for the packets of each file's flows that match q:
// once per flow and file with the flow's counts when the flow matches
// whatever its packets' times are (from the index alone), once per
// matching packet (first == last) for the others, whose timestamps are
// read from the pcap file, and for those once more with their cut counts
// if their last time matches. h is the file the packets are in.
func scanFlows(ctx context.Context, sp *spool.Spool, q *query.Query,
	add func(h *spool.Handle, k *flow.Key, c *counts)) (err error) {
	lo, hi := q.TimeRange()
	if lo >= hi {
		return nil
	}
	// Cut off (spool.ErrRevoked), it stops at the next file.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	handles, err := sp.SnapshotFor(lo, hi, cancel)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, spool.CloseAll(handles)) }()
	for _, h := range handles {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("flows: %w", context.Cause(ctx))
		}
		sum := h.View.Summary()
		type byTime struct {
			id  int
			key flow.Key
			cut counts // the cut counts, at the flow's last time
		}
		var timed []byTime
		match := flowMatcher(q, h.View)
		h.View.Flows(func(id int, f *index.Flow) bool {
			switch match(id, f) {
			case query.Yes:
				add(h, &f.Key, &counts{f.First, f.Last, f.Packets, f.Bytes, f.CutPackets, f.CutBytes})
			case query.ByTime:
				timed = append(timed, byTime{id, f.Key, counts{first: f.Last, last: f.Last, cutPackets: f.CutPackets, cutBytes: f.CutBytes}})
			}
			return true
		})
		rr := newRecordReader(h, sum.DataEnd, false)
		var offs []int64
		var sums []uint32
		var skipped damage
		for _, t := range timed {
			if offs, err = h.View.AppendPositions(offs[:0], t.id); err != nil {
				return fmt.Errorf("spool %s: %w", h.File.Path, err)
			}
			if sums, err = h.View.AppendSums(sums[:0], t.id); err != nil {
				return fmt.Errorf("spool %s: %w", h.File.Path, err)
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
					return err
				}
				if q.MatchPacket(&t.key, hdr.Timestamp) {
					add(h, &t.key, &counts{hdr.Timestamp, hdr.Timestamp, 1, uint64(hdr.OrigLen), 0, 0})
				}
			}
			if t.cut.cutPackets > 0 && q.MatchPacket(&t.key, t.cut.last) {
				add(h, &t.key, &t.cut)
			}
		}
		sp.Damaged(h.File, skipped.n, skipped.first)
	}
	return nil
}

// compareKeys orders keys by their bytes, a stable tie-break that, unlike
// formatting them, allocates nothing.
func compareKeys(a, b *flow.Key) int {
	var x, y [flow.KeySize]byte
	a.Put(x[:])
	b.Put(y[:])
	return bytes.Compare(x[:], y[:])
}
