package fleet

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/stenod/stenod/pcapio"
)

// Batches: a peer's reader copies packets into a slab and hands the merge
// a batch at a time, so that the channel costs little per packet.
const (
	slabBytes       = 256 << 10
	maxBatchPackets = 1024
	// queuedBatches is how far a peer's reader may run ahead of the merge:
	// bounded, so a slow client slows the peers down instead of filling
	// memory.
	queuedBatches = 2
)

// Per-sensor statuses of a Summary.
const (
	StatusComplete = "complete" // the sensor's whole answer is in the fleet answer
	StatusLimited  = "limited"  // the fleet answer reached its limit before the sensor's end
	StatusFailed   = "failed"   // the sensor is missing from the rest of the answer: see Error
)

// packet is one packet of a peer's answer; data lies in its batch's slab.
type packet struct {
	ts      int64
	origLen int
	data    []byte
	iface   string // "sensor/iface"
}

// batch is what a peer's reader hands the merge: packets, or the end of
// the peer's answer (end; err nil: the answer was whole).
type batch struct {
	pkts    []packet
	slab    []byte
	end     bool
	err     error
	damaged int64 // at the end: the peer's Stenod-Damaged-Records
}

// source is one peer's answer as the merge sees it.
type source struct {
	idx    int
	ch     <-chan batch
	free   chan []byte // slabs the merge is done with, for the reader to reuse
	cancel context.CancelCauseFunc
	cur    []packet
	slab   []byte
	done   bool
	res    *SensorResult
	start  time.Time
}

// newSource connects a reader goroutine's channel to the merge.
func newSource(idx int, res *SensorResult, cancel context.CancelCauseFunc, start time.Time) (*source, chan batch) {
	ch := make(chan batch, queuedBatches)
	return &source{idx: idx, ch: ch, free: make(chan []byte, queuedBatches+1), cancel: cancel, res: res, start: start}, ch
}

// finish records the end of s's answer: err nil means whole.
func (s *source) finish(err error) {
	s.done = true
	s.cur = nil
	s.res.Milliseconds = time.Since(s.start).Milliseconds()
	if err != nil {
		s.res.Status, s.res.Error = StatusFailed, err.Error()
		s.cancel(err)
		return
	}
	s.res.Status = StatusComplete
}

// errStalled is the cause of a peer dropped for sending nothing.
type errStalled struct{ d time.Duration }

func (e errStalled) Error() string {
	return fmt.Sprintf("stalled: sent nothing for %v (fleet.stall_timeout)", e.d)
}

// mergeOptions bound a merge.
type mergeOptions struct {
	LimitPackets, LimitBytes int64
	Stall                    time.Duration
	// Idle is called before the merge waits for a peer that has nothing
	// ready, once it has written packets: the place to push them to the
	// client.
	Idle func() error
}

// mergeResult is what the merge wrote.
type mergeResult struct {
	Packets, Bytes int64
	Limited        bool
}

// errOutput marks a failure of the merge's output, as opposed to its
// context.
type errOutput struct{ err error }

func (e errOutput) Error() string { return "write fleet answer: " + e.err.Error() }
func (e errOutput) Unwrap() error { return e.err }

// merge writes the packets of srcs to out in timestamp order (ties: the
// source listed first), until every source has ended or a limit is
// reached; out is flushed only by Idle, the rest is the caller's to flush. A source that fails or stalls is dropped and the others go on;
// merge itself fails only when out fails or ctx ends. It cancels every
// source it has not seen end before it returns.
func merge(ctx context.Context, srcs []*source, out pcapio.PacketWriter, o mergeOptions) (res mergeResult, err error) {
	defer func() {
		for _, s := range srcs {
			if !s.done {
				s.done = true
				s.res.Milliseconds = time.Since(s.start).Milliseconds()
				s.res.Status = StatusLimited
				cause := errors.New("fleet answer reached its limit")
				if err != nil {
					s.res.Status, s.res.Error = StatusFailed, err.Error()
					cause = err
				}
				s.cancel(cause)
			}
		}
	}()
	idle := func() error {
		if res.Packets == 0 || o.Idle == nil {
			return nil
		}
		if err := out.Flush(); err != nil {
			return errOutput{err}
		}
		if err := o.Idle(); err != nil {
			return errOutput{err}
		}
		return nil
	}
	h := make(sourceHeap, 0, len(srcs))
	for _, s := range srcs {
		if err := fill(ctx, s, o.Stall, idle); err != nil {
			return res, err
		}
		if !s.done {
			h = append(h, s)
		}
	}
	heap.Init(&h)
	for len(h) > 0 {
		s := h[0]
		p := &s.cur[0]
		size := int64(pcapio.RecordHeaderSize + len(p.data))
		if o.LimitPackets > 0 && res.Packets >= o.LimitPackets || o.LimitBytes > 0 && res.Bytes+size > o.LimitBytes {
			res.Limited = true
			break
		}
		if err := out.WritePacket(p.ts, p.origLen, p.data, p.iface); err != nil {
			return res, errOutput{err}
		}
		res.Packets++
		res.Bytes += size
		s.res.Packets++
		s.res.Bytes += size
		s.cur = s.cur[1:]
		if len(s.cur) == 0 {
			if err := fill(ctx, s, o.Stall, idle); err != nil {
				return res, err
			}
		}
		if s.done {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	// No final Flush: the caller decides first whether the answer is an
	// error instead (every sensor failed before sending a packet).
	return res, nil
}

// fill waits until s has a packet or has ended, for at most stall when it
// has nothing ready (then s is dropped as stalled). It returns an error
// only for ctx or the output (idle).
func fill(ctx context.Context, s *source, stall time.Duration, idle func() error) error {
	for len(s.cur) == 0 && !s.done {
		if s.slab != nil {
			// The merge is done with the last batch's packets.
			select {
			case s.free <- s.slab:
			default:
			}
			s.slab = nil
		}
		var b batch
		var ok bool
		select {
		case b, ok = <-s.ch:
		default:
			if err := idle(); err != nil {
				return err
			}
			t := time.NewTimer(stall)
			select {
			case b, ok = <-s.ch:
			case <-t.C:
				s.finish(errStalled{stall})
				continue
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("fleet query: %w", context.Cause(ctx))
			}
			t.Stop()
		}
		switch {
		case !ok:
			s.finish(errors.New("answer reader stopped"))
		case b.end:
			s.res.Damaged = b.damaged
			s.finish(b.err)
		default:
			if s.res.FirstMilliseconds == nil && len(b.pkts) > 0 {
				ms := time.Since(s.start).Milliseconds()
				s.res.FirstMilliseconds = &ms
			}
			s.cur, s.slab = b.pkts, b.slab
		}
	}
	return nil
}

// sourceHeap orders sources by their next packet's time, then by their
// place in the configuration.
type sourceHeap []*source

func (h sourceHeap) Len() int { return len(h) }
func (h sourceHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.cur[0].ts != b.cur[0].ts {
		return a.cur[0].ts < b.cur[0].ts
	}
	return a.idx < b.idx
}
func (h sourceHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sourceHeap) Push(x any)   { *h = append(*h, x.(*source)) }
func (h *sourceHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}

// pump reads a pcapng (or pcap) answer from r and sends its packets to ch
// in batches, naming interfaces "sensor/iface". It hands over what it has
// before every read of r that may block, so a peer that pauses never
// holds packets back from the merge. It returns nil at the answer's clean
// end and the first error otherwise (ctx's cause when ctx ended).
func pump(ctx context.Context, sensor string, r io.Reader, ch chan<- batch, free <-chan []byte) error {
	var cur batch
	newSlab := func(n int) []byte {
		select {
		case s := <-free:
			if cap(s) >= n {
				return s[:0]
			}
		default:
		}
		return make([]byte, 0, max(n, slabBytes))
	}
	send := func() error {
		if len(cur.pkts) == 0 {
			return nil
		}
		select {
		case ch <- cur:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		cur = batch{}
		return nil
	}
	src := &beforeRead{r: r, before: send}
	rd, err := pcapio.NewReader(src)
	if err != nil {
		return src.cause(ctx, fmt.Errorf("read answer: %w", err))
	}
	var names []string
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			return send()
		}
		if err != nil {
			return errors.Join(src.cause(ctx, fmt.Errorf("read answer: %w", err)), send())
		}
		if p.LinkType != pcapio.LinkTypeEthernet {
			// The fleet answer's interfaces are all Ethernet, as every
			// spool is.
			return errors.Join(fmt.Errorf("read answer: link type %d, want Ethernet", p.LinkType), send())
		}
		for ifcs := rd.Interfaces(); len(names) < len(ifcs); {
			n := sensor
			if ifc := ifcs[len(names)]; ifc.Name != "" {
				n += "/" + ifc.Name
			}
			names = append(names, n)
		}
		if cur.slab == nil || len(cur.slab)+len(p.Data) > cap(cur.slab) || len(cur.pkts) == maxBatchPackets {
			if err := send(); err != nil {
				return err
			}
			cur.slab = newSlab(len(p.Data))
			cur.pkts = make([]packet, 0, 64)
		}
		off := len(cur.slab)
		cur.slab = append(cur.slab, p.Data...)
		iface := sensor
		if p.Interface < len(names) {
			iface = names[p.Interface]
		}
		cur.pkts = append(cur.pkts, packet{ts: p.Timestamp, origLen: p.OrigLen, data: cur.slab[off:len(cur.slab):len(cur.slab)], iface: iface})
	}
}

// beforeRead calls before ahead of every Read of r, and keeps the error
// that ended r: the pcap reader reports a cut-off stream as a truncated
// block, and the cause (a reset connection, a deadline) says more.
type beforeRead struct {
	r      io.Reader
	before func() error
	err    error
}

func (b *beforeRead) Read(p []byte) (int, error) {
	if err := b.before(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// cause returns the most telling error for a read that failed with err.
func (b *beforeRead) cause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if b.err != nil {
		if errors.Is(b.err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("answer broke off: %w", b.err)
		}
		return b.err
	}
	return err
}
