package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"

	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// DamageError says why one record of a spool file was skipped: it is not
// what the file's index says (its checksum, length or place differ), or the
// file is shorter than the data its index covers. A query leaves such a
// record out of its answer and counts it (Result.Damaged); the rest of the
// answer is still exact.
type DamageError struct {
	Path   string
	Offset int64  // the record's offset in the pcap file
	What   string // what is wrong
	Err    error  // the read error behind it, if any (io.ErrUnexpectedEOF: the file is cut short)
}

func (e *DamageError) Error() string {
	msg := fmt.Sprintf("spool %s: offset %d: damaged record: %s", e.Path, e.Offset, e.What)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *DamageError) Unwrap() error { return e.Err }

// Options limit an answer.
type Options struct {
	// LimitPackets stops the answer after this many packets (0: no limit).
	LimitPackets int64
	// LimitBytes stops the answer before the packet that would take it past
	// this many bytes of pcap records, 16-byte headers included (0: no limit).
	LimitBytes int64

	// OnRevoke, if set, is called (on a goroutine of its own) when the
	// spool cuts the query off because capture needs the space of
	// deleted files it reads (spool.ErrRevoked). Run stops by itself
	// unless it is blocked in out: OnRevoke must then make out's write
	// return (the API sets the connection's write deadline).
	OnRevoke func(error)

	// noMap reads mapped files as if they were not, through the window
	// buffer: the tests compare both read paths.
	noMap bool
}

// Result says what an answer held.
type Result struct {
	Packets int64
	Bytes   int64 // record bytes, headers included
	Files   int   // spool files consulted
	// Limited: the answer stopped at a limit; more packets matched.
	Limited bool
	// Damaged counts the records left out because they are damaged (see
	// DamageError); FirstDamage is the first of them, nil if none.
	Damaged     int64
	FirstDamage *DamageError
}

// Run answers q from sp, writing the matching packets to out in timestamp
// order (ties in file and then offset order), each once. It returns when the
// answer is complete, a limit is reached, ctx is done, or an error occurs;
// out is flushed in every case.
func Run(ctx context.Context, sp *spool.Spool, q *query.Query, out pcapio.PacketWriter, opts Options) (res Result, err error) {
	lo, hi := q.TimeRange()
	if lo >= hi {
		return res, out.Flush()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() {
		// Whatever the revocation made fail (a read, a write), the
		// reason is that it was cut off.
		if c := context.Cause(ctx); err != nil && errors.Is(c, spool.ErrRevoked) && !errors.Is(err, spool.ErrRevoked) {
			err = errors.Join(fmt.Errorf("query: %w", c), err)
		}
	}()
	handles, err := sp.SnapshotFor(lo, hi, func(err error) {
		cancel(err)
		if opts.OnRevoke != nil {
			opts.OnRevoke(err)
		}
	})
	if err != nil {
		return res, errors.Join(err, out.Flush())
	}
	defer func() { err = errors.Join(err, spool.CloseAll(handles)) }()
	res.Files = len(handles)

	h := make(sourceHeap, 0, len(handles))
	var sources []*source
	defer func() {
		for _, s := range sources {
			s.close()
			res.Damaged += s.damage.n
			if res.FirstDamage == nil {
				res.FirstDamage = s.damage.first
			}
			if s.damage.n > 0 {
				sp.Damaged(s.h.File, s.damage.n, s.damage.first)
			}
		}
	}()
	for i, hd := range handles {
		s, err := newSource(q, hd, i, opts.noMap)
		if err != nil {
			return res, errors.Join(err, out.Flush())
		}
		sources = append(sources, s)
		ok, err := s.next()
		if err != nil {
			return res, errors.Join(err, out.Flush())
		}
		if ok {
			h = append(h, s)
		}
	}
	heap.Init(&h)
	for n := 0; len(h) > 0; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return res, errors.Join(fmt.Errorf("query: %w", context.Cause(ctx)), out.Flush())
		}
		s := h[0]
		size := int64(pcapio.RecordHeaderSize + len(s.data))
		if opts.LimitPackets > 0 && res.Packets >= opts.LimitPackets ||
			opts.LimitBytes > 0 && res.Bytes+size > opts.LimitBytes {
			res.Limited = true
			break
		}
		if err := out.WritePacket(s.ts, s.origLen, s.data, s.h.Interface); err != nil {
			return res, fmt.Errorf("query: write answer: %w", err)
		}
		res.Packets++
		res.Bytes += size
		ok, err := s.next()
		if err != nil {
			return res, errors.Join(err, out.Flush())
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	if err := out.Flush(); err != nil {
		return res, fmt.Errorf("query: write answer: %w", err)
	}
	return res, nil
}

// sourceHeap orders sources by their current packet's timestamp.
type sourceHeap []*source

func (h sourceHeap) Len() int { return len(h) }
func (h sourceHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	if a.order != b.order {
		return a.order < b.order
	}
	return a.off < b.off
}
func (h sourceHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sourceHeap) Push(x any)   { *h = append(*h, x.(*source)) }
func (h *sourceHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}
