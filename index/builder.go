package index

import (
	"math"
	"sync"

	"github.com/stenod/stenod/flow"
)

// Builder is the live index of the spool file being written. One goroutine
// calls Add and SetVisible; any number of queries read it at the same time.
type Builder struct {
	mu    sync.RWMutex
	ids   flowTable
	flows []liveFlow
	// Packets form one singly linked list per flow: off[i] is packet i's
	// file offset, next[i] the next packet of the same flow (-1 at the end).
	// Two flat slices instead of per-flow slices keep Add free of
	// allocations except for the amortized growth of these slices.
	off    []int64
	next   []int32
	blocks []Block
	sum    Summary
	last   int64 // timestamp of the previous packet, for Monotone
}

type liveFlow struct {
	Flow
	head, tail int32
}

// NewBuilder returns an empty live index sized for about hint packets.
func NewBuilder(hint int) *Builder {
	hint = max(hint, 1024)
	return &Builder{
		ids:   newFlowTable(hint / 64),
		flows: make([]liveFlow, 0, hint/64),
		off:   make([]int64, 0, hint),
		next:  make([]int32, 0, hint),
		sum:   Summary{First: math.MaxInt64, Last: math.MinInt64, Monotone: true},
		last:  math.MinInt64,
	}
}

// Add indexes one packet whose record starts at file offset off.
func (b *Builder) Add(k *flow.Key, off, ts int64, wireLen int) {
	b.mu.Lock()
	b.add(k, off, ts, wireLen)
	b.mu.Unlock()
}

// Entry is one packet to index.
type Entry struct {
	Key     flow.Key
	Off, TS int64
	WireLen int
}

// AddBatch is Add for several packets under one lock acquisition.
func (b *Builder) AddBatch(es []Entry) {
	b.mu.Lock()
	for i := range es {
		e := &es[i]
		b.add(&e.Key, e.Off, e.TS, e.WireLen)
	}
	b.mu.Unlock()
}

func (b *Builder) add(k *flow.Key, off, ts int64, wireLen int) {
	p := int32(len(b.off))
	id, slot := b.ids.find(k, b.flows)
	if id < 0 {
		id = int32(len(b.flows))
		b.flows = append(b.flows, liveFlow{Flow: Flow{Key: *k, First: ts, Last: ts}, head: p, tail: -1})
		b.ids.insert(slot, id, b.flows)
	}
	f := &b.flows[id]
	if f.tail >= 0 {
		b.next[f.tail] = p
	}
	f.tail = p
	f.Packets++
	f.Bytes += uint64(wireLen)
	f.First = min(f.First, ts)
	f.Last = max(f.Last, ts)
	b.off = append(b.off, off)
	b.next = append(b.next, -1)

	if int(p)%BlockPackets == 0 {
		b.blocks = append(b.blocks, Block{Offset: off, Min: ts, Max: ts})
	} else {
		blk := &b.blocks[len(b.blocks)-1]
		blk.Min = min(blk.Min, ts)
		blk.Max = max(blk.Max, ts)
	}
	s := &b.sum
	s.Packets++
	s.Bytes += uint64(wireLen)
	s.First = min(s.First, ts)
	s.Last = max(s.Last, ts)
	if ts < b.last {
		s.Monotone = false
	}
	b.last = ts
	s.Flows = len(b.flows)
}

// SetVisible publishes the file as readable up to offset end: queries see
// the packets whose records start below it. The writer calls it after the
// bytes are written to the file.
func (b *Builder) SetVisible(end int64) {
	b.mu.Lock()
	b.sum.DataEnd = end
	b.mu.Unlock()
}

// Summary implements View.
func (b *Builder) Summary() Summary {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.sum
}

// Flows implements View. The live index is locked for reading during the
// walk, so fn must be quick.
func (b *Builder) Flows(fn func(id int, f *Flow) bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for i := range b.flows {
		if !fn(i, &b.flows[i].Flow) {
			return
		}
	}
}

// AppendPositions implements View.
func (b *Builder) AppendPositions(dst []int64, id int) ([]int64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if id < 0 || id >= len(b.flows) {
		return dst, nil
	}
	end := b.sum.DataEnd
	// A flow's list always ends at its newest packet, so the walk needs no
	// bound beyond the list itself.
	for p := b.flows[id].head; p >= 0; p = b.next[p] {
		if b.off[p] >= end {
			break
		}
		dst = append(dst, b.off[p])
	}
	return dst, nil
}

// Blocks implements View. It returns a copy, since the live slice grows.
func (b *Builder) Blocks() []Block {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([]Block(nil), b.blocks...)
}
