package index

import (
	"math"
	"slices"
	"sync"

	"github.com/stenod/stenod/flow"
)

// Builder is the live index of the spool file being written. One goroutine
// calls Add and SetVisible; any number of queries read it at the same time.
type Builder struct {
	mu    sync.RWMutex
	ids   flowTable
	flows []liveFlow
	// Packets form one singly linked list per flow, newest first: off[i]
	// is packet i's file offset, prev[i] the previous packet of the same
	// flow (-1 for its first). Linking backwards makes Add write both
	// slices only at their ends, never at an older packet's slot: with many
	// interleaved flows that write was a cache miss per packet. Two flat
	// slices instead of per-flow slices keep Add free of allocations except
	// for the amortized growth of these slices.
	off    []int64
	prev   []int32
	blocks []Block
	sum    Summary
	last   int64 // timestamp of the previous packet, for Monotone
}

type liveFlow struct {
	Flow
	tail int32 // newest packet
}

// NewBuilder returns an empty live index sized for about hint packets.
func NewBuilder(hint int) *Builder {
	hint = max(hint, 1024)
	return &Builder{
		ids:   newFlowTable(hint / 64),
		flows: make([]liveFlow, 0, hint/64),
		off:   make([]int64, 0, hint),
		prev:  make([]int32, 0, hint),
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
		b.flows = append(b.flows, liveFlow{Flow: Flow{Key: *k, First: ts, Last: ts}, tail: -1})
		b.ids.insert(slot, id, b.flows)
	}
	f := &b.flows[id]
	b.prev = append(b.prev, f.tail)
	f.tail = p
	f.Packets++
	f.Bytes += uint64(wireLen)
	f.First = min(f.First, ts)
	f.Last = max(f.Last, ts)
	b.off = append(b.off, off)

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
	return b.appendOffsets(dst, id, b.sum.DataEnd), nil
}

// appendOffsets appends flow id's offsets below end in ascending order. The
// list runs newest first, so it is walked and then the new part reversed.
func (b *Builder) appendOffsets(dst []int64, id int, end int64) []int64 {
	n := len(dst)
	for p := b.flows[id].tail; p >= 0; p = b.prev[p] {
		if b.off[p] < end {
			dst = append(dst, b.off[p])
		}
	}
	slices.Reverse(dst[n:])
	return dst
}

// Blocks implements View. It returns a copy, since the live slice grows.
func (b *Builder) Blocks() []Block {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([]Block(nil), b.blocks...)
}
