package index

import (
	"math"
	"slices"
	"sync"
	"unsafe"

	"github.com/stenod/stenod/flow"
)

// Builder is the live index of the spool file being written. One goroutine
// calls Add and SetVisible; any number of queries read it at the same time.
type Builder struct {
	mu    sync.RWMutex
	ids   flowTable
	flows []liveFlow
	// Packets form one singly linked list per flow, newest first: the
	// log holds each packet's file offset and the previous packet of the
	// same flow (-1 for its first). Linking backwards makes Add write only
	// at the log's end, never at an older packet's slot: with many
	// interleaved flows that write was a cache miss per packet. One log
	// instead of per-flow slices keeps Add free of allocations except for
	// a new chunk every 65,536 packets.
	pkts   packetLog
	blocks []Block
	sum    Summary
	last   int64 // timestamp of the previous packet, for Monotone
	// prev is the flow of the previous packet, -1 before the first. A
	// packet of the same flow, as most packets of a busy flow are,
	// skips the hash and the look-up.
	prev int32
	// split: the next packet starts a new block, after a Skip.
	split bool

	// touched keeps the loads of AddBatch's prefetch passes alive.
	touched int64

	// cutOnly holds the cut counts AddCut reported of flows that had no
	// packet in the file then, and cutIDs their places in it. They are
	// kept apart from flows because a flow's number there is the order of
	// its first packet, which positions relies on. A flow whose first
	// packet comes after cut ones has both: its record in flows counts
	// the cuts after that packet. (Readers add up the records of a key.)
	cutOnly []Flow
	cutIDs  map[flow.Key]int32
}

// cutOnlyBase numbers the flows of cutOnly for Flows: far above any
// flows index, so that a number handed out by Flows never names another
// flow later, and AppendPositions finds no packets under it.
const cutOnlyBase = 1 << 30

type liveFlow struct {
	Flow
	tail int32 // newest packet
	// tcpFlags is the OR of the TCP flags of the flow's packets
	// (Entry.TCPFlags). It lives here, in the record's padding, rather
	// than in Flow: the sealed index does not store it (only the
	// exporter, which reads live indexes, needs it), and Flow would grow
	// by a word.
	tcpFlags uint8
}

// NewBuilder returns an empty live index sized for about hint packets.
func NewBuilder(hint int) *Builder {
	hint = max(hint, 1024)
	return &Builder{
		ids:   newFlowTable(hint / 64),
		flows: make([]liveFlow, 0, hint/64),
		sum:   Summary{First: math.MaxInt64, Last: math.MinInt64, Monotone: true},
		last:  math.MinInt64,
		prev:  -1,
	}
}

// Add indexes one packet whose record starts at file offset off; sum is
// the record's checksum (pcapio.RecordSum), which queries check the record
// against when they read it.
func (b *Builder) Add(k *flow.Key, off, ts int64, wireLen int, sum uint32) {
	b.mu.Lock()
	b.add(k, b.ids.hash(k), off, ts, wireLen, sum, 0)
	b.mu.Unlock()
}

// Entry is one packet to index.
type Entry struct {
	Key     flow.Key
	Off, TS int64
	WireLen int
	Sum     uint32 // pcapio.RecordSum of its record
	// TCPFlags is the packet's TCP flags byte (flow.TCPFlags), 0 for
	// other packets.
	TCPFlags uint8
}

// AddBatch is Add for several packets under one lock acquisition, and
// faster than Add packet by packet when the packets belong to many flows.
func (b *Builder) AddBatch(es []Entry) {
	b.mu.Lock()
	for len(es) > 0 {
		if n := b.runOfPrev(es); n > 0 {
			b.addRun(b.prev, es[:n])
			es = es[n:]
			continue
		}
		n := min(len(es), prefetchGroup)
		b.addGroup(es[:n])
		es = es[n:]
	}
	b.mu.Unlock()
}

// runOfPrev is how many packets es starts with of the flow of the packet
// added last: a busy flow's packets come in runs (all of them, with one
// flow), which need neither a look-up nor addGroup's passes.
func (b *Builder) runOfPrev(es []Entry) int {
	if b.prev < 0 {
		return 0
	}
	k := &b.flows[b.prev].Key
	n := 0
	for n < len(es) && sameKey(&es[n].Key, k) {
		n++
	}
	return n
}

// addRun is addTo for packets es of flow id, in order. The run goes a
// block at a time (a chunk of the log holds whole blocks), each block's
// packets in a loop that keeps the flow's, the block's and the file's
// figures in registers and writes the log's arrays directly: through
// memory and packetLog.append, every packet waited for the stores of the
// one before (BenchmarkBuilderAddBatch with one flow, docs/benchmarks.md).
func (b *Builder) addRun(id int32, es []Entry) {
	f := &b.flows[id]
	tail, flags := f.tail, f.tcpFlags
	first, last := f.First, f.Last
	var bytes uint64
	prevTS, monotone := b.last, b.sum.Monotone
	packets := uint64(len(es))
	for len(es) > 0 {
		p := b.pkts.n
		if int(p)%BlockPackets == 0 || b.split {
			b.split = false
			b.blocks = append(b.blocks, Block{Offset: es[0].Off, Min: es[0].TS, Max: es[0].TS})
		}
		seg := es[:min(len(es), BlockPackets-int(p)%BlockPackets)]
		es = es[len(seg):]
		c, at := b.pkts.reserve(len(seg))
		offs, prevs := c.off[at:at+len(seg)], c.prev[at:at+len(seg)]
		sums, flows := c.sum[at:at+len(seg)], c.flow[at:at+len(seg)]
		lo, hi := seg[0].TS, seg[0].TS
		for i := range seg {
			e := &seg[i]
			ts := e.TS
			offs[i], prevs[i], sums[i], flows[i] = e.Off, tail, e.Sum, id
			tail = p + int32(i)
			flags |= e.TCPFlags
			bytes += uint64(e.WireLen)
			lo, hi = min(lo, ts), max(hi, ts)
			if ts < prevTS {
				monotone = false
			}
			prevTS = ts
		}
		blk := &b.blocks[len(b.blocks)-1]
		blk.Min, blk.Max = min(blk.Min, lo), max(blk.Max, hi)
		first, last = min(first, lo), max(last, hi)
	}
	f.tail, f.tcpFlags = tail, flags
	f.Packets += packets
	f.Bytes += bytes
	f.First, f.Last = first, last
	s := &b.sum
	s.Packets += packets
	s.Bytes += bytes
	// The flow's First and Last were within the file's already.
	s.First, s.Last = min(s.First, first), max(s.Last, last)
	s.Monotone = monotone
	b.last = prevTS
	s.Flows = len(b.flows)
	b.prev = id
}

// prefetchGroup is how many packets addGroup looks up at once: enough to
// keep as many cache misses in flight as a core sustains. 32 rather than
// 16: BenchmarkBuilderAddBatch with 65,536 flows 57 to 54 ns a packet
// (five alternating runs, each faster), and in the process, where every
// look-up misses, the live index's own CPU 0.92-0.99x with random flows
// in four runs of five rounds (docs/benchmarks.md).
const prefetchGroup = 32

// addGroup adds es after loading what they will touch. With many
// interleaved flows each packet costs two cache misses, its flow table slot
// and then its flow record, and one after the other they stall the core
// packet by packet. So the group's slots are loaded first and then its
// records, each in a loop that does nothing else: the loads do not depend
// on each other, the core overlaps their misses, and the last loop, which
// does the work, finds them in the cache. The hashes and the slot look-ups
// are loops of their own because a loop with more work per iteration keeps
// fewer iterations, and so fewer misses, in the core's reorder window
// (measured: a fifth slower in BenchmarkBuilderAddBatch with 65,536 flows).
// Go has no prefetch instruction; plain loads whose results are kept do the
// same.
func (b *Builder) addGroup(es []Entry) {
	var hs [prefetchGroup]uint64
	// same[i]: es[i] has the key of the packet before it, so it belongs
	// to the flow that packet was added to.
	var same [prefetchGroup]bool
	var prev *flow.Key
	if b.prev >= 0 {
		prev = &b.flows[b.prev].Key
	}
	for i := range es {
		k := &es[i].Key
		if prev != nil && sameKey(k, prev) {
			same[i] = true
		} else {
			hs[i] = b.ids.hash(k)
		}
		prev = k
	}
	slots := b.ids.slots
	mask := len(slots) - 1
	var touched int64
	for i := range es {
		if !same[i] {
			touched += int64(slots[int(hs[i])&mask])
		}
	}
	var ids [prefetchGroup]int32
	for i := range es {
		ids[i] = -1
		if !same[i] {
			ids[i] = b.ids.lookAhead(hs[i])
		}
	}
	for i := range es {
		if id := ids[i]; id >= 0 {
			// A record spans two or three cache lines: the key,
			// compared first, and the counters, updated next.
			f := &b.flows[id]
			touched += int64(f.Key.Src[0]) + int64(f.Key.Proto) + int64(f.tail)
		}
	}
	b.touched += touched
	for i := range es {
		e := &es[i]
		if same[i] {
			b.addTo(b.prev, e.Off, e.TS, e.WireLen, e.Sum, e.TCPFlags)
		} else {
			b.add(&e.Key, hs[i], e.Off, e.TS, e.WireLen, e.Sum, e.TCPFlags)
		}
	}
}

func (b *Builder) add(k *flow.Key, h uint64, off, ts int64, wireLen int, sum uint32, tcpFlags uint8) {
	id, slot := b.ids.find(k, h, b.flows)
	if id < 0 {
		id = int32(len(b.flows))
		b.flows = append(b.flows, liveFlow{Flow: Flow{Key: *k, First: ts, Last: ts}, tail: -1})
		b.ids.insert(slot, id, h, b.flows)
	}
	b.addTo(id, off, ts, wireLen, sum, tcpFlags)
}

// addTo adds a packet of flow id: addRun for one packet. Calling addRun
// with a run of one instead cost 4 ns more a packet with 65,536 flows and
// 9 more in Add (BenchmarkBuilderAddBatch, BenchmarkBuilderAdd, five
// alternating runs), so both stay.
func (b *Builder) addTo(id int32, off, ts int64, wireLen int, sum uint32, tcpFlags uint8) {
	b.prev = id
	f := &b.flows[id]
	p := b.pkts.append(off, sum, id, f.tail)
	f.tail = p
	f.tcpFlags |= tcpFlags
	f.Packets++
	f.Bytes += uint64(wireLen)
	f.First = min(f.First, ts)
	f.Last = max(f.Last, ts)

	if int(p)%BlockPackets == 0 || b.split {
		b.split = false
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

// AddCut adds packets and bytes of flow k that the per-connection cutoff
// did not store, the latest of them at ts (unix ns), to the file's counts.
// The flow's First and Last widen to take in ts: the flow was seen then,
// stored or not (a cut reported after a later stored packet can move
// First before that packet).
func (b *Builder) AddCut(k *flow.Key, packets, bytes uint64, ts int64) {
	if packets == 0 && bytes == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var f *Flow
	if id, _ := b.ids.find(k, b.ids.hash(k), b.flows); id >= 0 {
		f = &b.flows[id].Flow
	} else if i, ok := b.cutIDs[*k]; ok {
		f = &b.cutOnly[i]
	} else {
		if b.cutIDs == nil {
			b.cutIDs = map[flow.Key]int32{}
		}
		b.cutIDs[*k] = int32(len(b.cutOnly))
		b.cutOnly = append(b.cutOnly, Flow{Key: *k, First: ts, Last: ts})
		f = &b.cutOnly[len(b.cutOnly)-1]
	}
	f.CutPackets += packets
	f.CutBytes += bytes
	f.First = min(f.First, ts)
	f.Last = max(f.Last, ts)
}

// Skip records that the file's bytes from off up to the next packet added
// hold no packet (a damaged region that repair stepped over). It adds a
// hole block there, whose Min is above its Max so that it overlaps no time
// range: a reader that reads a time range record by record, block after
// block, stops before the hole and resumes at the next block, which the
// next packet starts. Call it only between packets, with off past the last
// packet's record.
func (b *Builder) Skip(off int64) {
	b.mu.Lock()
	b.blocks = append(b.blocks, Block{Offset: off, Min: math.MaxInt64, Max: math.MinInt64})
	b.split = true
	b.mu.Unlock()
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
	s := b.sum
	if b.pkts.len() > 0 {
		s.FirstSum, s.LastOffset, s.LastSum = b.ends()
	}
	return s
}

// ends returns the checksum of the first record, and the offset and
// checksum of the last one; the Builder holds at least one packet.
func (b *Builder) ends() (firstSum uint32, lastOff int64, lastSum uint32) {
	last := int32(b.pkts.len() - 1)
	return b.pkts.sum(0), b.pkts.off(last), b.pkts.sum(last)
}

// Flows implements View. It copies the flows a chunk at a time under the
// read lock and calls fn on the copies without it, so fn may call the
// Builder's other methods (the histogram asks for a flow's positions from
// within the walk), and the writer waits for one chunk at most, never for
// the whole walk. Holding the lock through fn deadlocked capture: a read
// lock taken again within fn waits behind a writer waiting for the first
// (TestFlowsWalkReadsWhileWriting). Flows added during the walk are walked
// too.
func (b *Builder) Flows(fn func(id int, f *Flow) bool) {
	var buf [flowsChunk]Flow
	for from := 0; ; {
		b.mu.RLock()
		n := 0
		for i := from; i < len(b.flows) && n < len(buf); i++ {
			buf[n] = b.flows[i].Flow
			n++
		}
		b.mu.RUnlock()
		if n == 0 {
			break
		}
		for i := range n {
			if !fn(from+i, &buf[i]) {
				return
			}
		}
		from += n
	}
	for from := 0; ; {
		b.mu.RLock()
		n := copy(buf[:], b.cutOnly[min(from, len(b.cutOnly)):])
		b.mu.RUnlock()
		if n == 0 {
			return
		}
		for i := range n {
			if !fn(cutOnlyBase+from+i, &buf[i]) {
				return
			}
		}
		from += n
	}
}

// flowsChunk is how many flows Flows copies under one hold of the lock.
const flowsChunk = 256

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
	for p := b.flows[id].tail; p >= 0; p = b.pkts.prev(p) {
		if off := b.pkts.off(p); off < end {
			dst = append(dst, off)
		}
	}
	slices.Reverse(dst[n:])
	return dst
}

// AppendSums implements View.
func (b *Builder) AppendSums(dst []uint32, id int) ([]uint32, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if id < 0 || id >= len(b.flows) {
		return dst, nil
	}
	n := len(dst)
	for p := b.flows[id].tail; p >= 0; p = b.pkts.prev(p) {
		if b.pkts.off(p) < b.sum.DataEnd {
			dst = append(dst, b.pkts.sum(p))
		}
	}
	slices.Reverse(dst[n:])
	return dst, nil
}

// MemBytes is about how much memory the live index holds: its flow
// records, flow table, packet log and blocks.
func (b *Builder) MemBytes() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return int64(cap(b.flows))*int64(unsafe.Sizeof(liveFlow{})) +
		int64(len(b.ids.slots))*8 +
		int64(len(b.pkts.chunks))*int64(unsafe.Sizeof(packetChunk{})) +
		int64(cap(b.blocks))*int64(unsafe.Sizeof(Block{})) +
		int64(cap(b.cutOnly))*int64(unsafe.Sizeof(Flow{}))
}

// Blocks implements View. It returns a copy, since the live slice grows.
func (b *Builder) Blocks() []Block {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return append([]Block(nil), b.blocks...)
}

// LiveFlow is a flow of a live index with what only the live index keeps.
type LiveFlow struct {
	Flow
	TCPFlags uint8 // the OR of its packets' TCP flags
}

// CopyCutOnly is CopyFlows for the records of cut packets of flows that
// had no packet in the file when they were cut (AddCut), numbered from 0
// in the order they came; a flow may have such a record and one of
// CopyFlows.
func (b *Builder) CopyCutOnly(dst []LiveFlow, from int) []LiveFlow {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := max(1, cap(dst)-len(dst))
	for i := from; i < len(b.cutOnly) && n > 0; i++ {
		dst = append(dst, LiveFlow{Flow: b.cutOnly[i]})
		n--
	}
	return dst
}

// CopyFlows appends to dst copies of the flows numbered from on (the
// numbers Flows gives; a live index only appends flows, so a number keeps
// its flow), at most cap(dst)-len(dst) of them and at least one if any is
// left, and returns dst. It holds the lock for that many flows only, so a
// reader walking a large index in chunks (the IPFIX exporter) delays the
// writer's AddBatch by one chunk at a time, never by the whole walk.
func (b *Builder) CopyFlows(dst []LiveFlow, from int) []LiveFlow {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := max(1, cap(dst)-len(dst))
	for i := from; i < len(b.flows) && n > 0; i++ {
		f := &b.flows[i]
		dst = append(dst, LiveFlow{Flow: f.Flow, TCPFlags: f.tcpFlags})
		n--
	}
	return dst
}
