//go:build linux

package capture

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// source is where one stream's packets come from: one RX queue of one
// interface, or one AF_PACKET ring. It is either a batchSource (AF_XDP:
// xskSource), whose packets a receive loop copies into batches for a writer
// loop, or a storingSource (AF_PACKET: afpSource), whose loop stores its
// packets itself. The queue's loops own a source: no method is called
// concurrently with another, except stats.
type source interface {
	// stats fills in the kernel's counters for this queue.
	stats(q *QueueStats)
	// close releases the source; its loops have stopped.
	close() error
}

// batchSource is a source read by a receive loop into batches, which a
// writer loop stores.
type batchSource interface {
	source
	// read copies ready packets into b with b.add, as many as are ready
	// and fit above b's reserve, and gives their frames back to the
	// kernel before it returns: nothing the kernel owns is held across
	// calls. When no packet is ready it waits up to wait for one. It
	// returns how many packets it added.
	read(b *batch, wait time.Duration) (int, error)
	// reserve is the most bytes and packets one read may add: a batch
	// with less room left is sent to the writer before the next read.
	reserve() (bytes, packets int)
}

// storingSource is a source whose own loop appends its packets to the
// queue's spool writer, flushes it, counts in the queue's counters, and
// closes the writer when stop is closed and what the kernel holds is
// stored. It returns the writer's Close error.
type storingSource interface {
	source
	run(q *queue, stop <-chan struct{}) error
}

// packet is one packet in a batch: data[off : off+capLen] of the batch.
type packet struct {
	ts      int64  // unix ns
	flowID  uint64 // the XDP program's flow id, 0 when unknown
	off     uint32
	capLen  uint32
	origLen uint32
}

// batch is a fixed slab of copied packets travelling from a receive loop to
// its writer. Batches are allocated once per queue and recycled, so the
// hot path allocates nothing.
type batch struct {
	data []byte
	pkts []packet

	reserveBytes, reservePkts int
	start                     time.Time // when the first packet was added
}

func newBatch(bytes, pkts, reserveBytes, reservePkts int) *batch {
	return &batch{
		data:         make([]byte, 0, bytes),
		pkts:         make([]packet, 0, pkts),
		reserveBytes: reserveBytes,
		reservePkts:  reservePkts,
	}
}

// full reports whether the batch cannot take another read.
func (b *batch) full() bool {
	return cap(b.data)-len(b.data) < b.reserveBytes || cap(b.pkts)-len(b.pkts) < b.reservePkts
}

func (b *batch) reset() {
	b.data = b.data[:0]
	b.pkts = b.pkts[:0]
}

// add appends one packet. Sources call it only while the batch has the room
// their reserve promised.
func (b *batch) add(ts int64, flowID uint64, origLen int, data []byte) {
	// Filled in place, as spool.Writer.Append fills its index entries.
	if len(b.pkts) < cap(b.pkts) {
		b.pkts = b.pkts[:len(b.pkts)+1]
	} else {
		b.pkts = append(b.pkts, packet{})
	}
	p := &b.pkts[len(b.pkts)-1]
	p.ts, p.flowID, p.off, p.capLen, p.origLen = ts, flowID, uint32(len(b.data)), uint32(len(data)), uint32(origLen)
	b.data = append(b.data, data...)
}

func (b *batch) packet(i int) []byte {
	p := &b.pkts[i]
	return b.data[p.off : p.off+p.capLen : p.off+p.capLen]
}

// Per-queue buffering between the receive loop and the writer: 8 batches of
// 2 MiB. This only smooths the writer's pace; the UMEM rides out stalls.
//
// A batch goes to the writer once it holds handoffBytes of packets or
// handoffPackets packets, well before it is full, so that the writer reads
// it while it is still in the CPU's cache (both loops share the receive
// loop's CPU): batches of a whole 25 ms gathering had left the L2 cache
// before the writer came to them (docs/benchmarks.md, "Batch hand-off").
const (
	batchesPerQueue = 8
	batchBytes      = 2 << 20
	batchPackets    = 16384
	handoffBytes    = 256 << 10
	handoffPackets  = 4096
)

// queue is one stream: a source, its receive loop, its writer loop and the
// spool writer, plus the counters both loops keep.
type queue struct {
	iface  string
	index  int
	stream string
	cpu    int // -1: not pinned
	src    source
	bsrc   batchSource // src, when it is one; nil for a storingSource
	ids    *flowIDs    // nil when the source has no flow ids
	w      *spool.Writer
	log    *slog.Logger

	flushInterval time.Duration
	pollTimeout   time.Duration
	coalesce      time.Duration // how long a receive loop lets packets gather
	ringSlots     int           // the source's ring size, bounding the gathering

	free chan *batch // empty batches, back from the writer
	full chan *batch // batches for the writer; closed when the receive loop ends

	// Counters, written by the loops and read by Stats.
	packets, bytes         atomic.Uint64      // received (bytes on the wire)
	truncated              atomic.Uint64      // cut to the snap length
	batchWaits             spool.StallCounter // the receive loop's waits for a free batch
	stored                 atomic.Uint64      // appended to the spool
	keysFromID, keysParsed atomic.Uint64      // keys taken through the flow id / from flow.Parse
	writeErrors            atomic.Uint64      // spool Append or Flush failures
	writeLost              atomic.Uint64      // packets lost to them, appended ones included
	receiveErr             atomic.Pointer[string]

	closeErr error // the spool writer's Close, set when write returns

	writeLog errLog
}

func newQueue(q *queue) *queue {
	q.writeLog = errLog{log: q.log, msg: "spool write failed", every: 10 * time.Second}
	bs, ok := q.src.(batchSource)
	if !ok {
		return q
	}
	q.bsrc = bs
	reserveBytes, reservePkts := bs.reserve()
	q.free = make(chan *batch, batchesPerQueue)
	q.full = make(chan *batch, batchesPerQueue)
	for range batchesPerQueue {
		q.free <- newBatch(batchBytes, batchPackets, reserveBytes, reservePkts)
	}
	return q
}

// receive is the receive loop: read into a batch, hand batches that reach
// the hand-off size (or, once the source runs dry, batches that have
// gathered long enough) to the writer. It never writes to disk. When no
// batch is free the writer is behind: the loop waits for one and leaves
// the packets in the UMEM, which is sized for exactly that, rather than
// drop them here; the kernel counts what does not fit (SocketStats). It returns when stop is closed and the source is
// drained, closing q.full.
func (q *queue) receive(stop <-chan struct{}) {
	defer close(q.full)
	if q.cpu >= 0 {
		if err := xdp.PinToCPU(q.cpu); err != nil {
			q.log.Warn("receive loop runs unpinned", "stream", q.stream, "err", err)
		}
	}
	var b *batch
	send := func() {
		q.full <- b
		b = nil
	}
	stopping := false
	var got int             // packets read since the last sleep
	var slept time.Duration // that sleep
	for {
		if !stopping {
			select {
			case <-stop:
				stopping = true
			default:
			}
		}
		if b == nil {
			select {
			case b = <-q.free:
			default:
				t := time.Now()
				b = <-q.free
				q.batchWaits.Add(time.Since(t))
			}
		}
		// Poll only with nothing in hand: packets in hand gather by
		// sleeping, below.
		wait := q.pollTimeout
		if stopping || len(b.pkts) > 0 {
			wait = 0
		}
		n, err := q.bsrc.read(b, wait)
		if err != nil {
			msg := err.Error()
			q.receiveErr.Store(&msg)
			q.log.Error("receive loop stopped", "stream", q.stream, "err", err)
			if len(b.pkts) > 0 {
				send()
			}
			return
		}
		if n > 0 {
			got += n
			q.count(b.pkts[len(b.pkts)-n:])
			if len(b.pkts) == n {
				b.start = time.Now()
			}
			if b.full() || len(b.data) >= handoffBytes || len(b.pkts) >= handoffPackets || time.Since(b.start) >= q.flushInterval/2 {
				send()
			}
			continue
		}
		if len(b.pkts) > 0 {
			// The source is dry. Let packets gather in the kernel's
			// ring instead of being woken for each one (a wakeup and
			// a hand-over to the writer cost more than many packets):
			// until the batch is q.coalesce old, or, while the writer
			// is still busy with earlier batches, half the flush
			// interval, so that they make fewer, larger batches.
			limit := q.coalesce
			if len(q.full) > 0 {
				limit = max(limit, q.flushInterval/2)
			}
			if age := time.Since(b.start); age < limit && !stopping {
				slept = q.gatherTime(got, slept, limit-age)
				got = 0
				time.Sleep(slept)
				continue
			}
			send()
			continue
		}
		if stopping {
			q.free <- b
			return
		}
	}
}

// stalls are the waits of the loop that takes the queue's packets from
// the kernel: for a free batch (AF_XDP), or for the disk (AF_PACKET,
// whose reader writes itself).
func (q *queue) stalls() spool.Stalls {
	if q.bsrc == nil {
		return q.w.Stalls()
	}
	return q.batchWaits.Load()
}

// gatherTime is how long a receive loop sleeps to let packets gather: up
// to left, but no longer than a quarter of the ring takes to fill at the
// rate of the last sleep (got packets arrived during slept), so that
// traffic near line rate never fills the ring while the loop sleeps.
func (q *queue) gatherTime(got int, slept, left time.Duration) time.Duration {
	if got > 0 && slept > 0 && q.ringSlots > 0 {
		left = min(left, time.Duration(int64(slept)*int64(q.ringSlots/4)/int64(got)))
	}
	return left
}

// count adds newly received packets to the counters.
func (q *queue) count(pkts []packet) {
	var bytes, truncated uint64
	for i := range pkts {
		bytes += uint64(pkts[i].origLen)
		if pkts[i].capLen < pkts[i].origLen {
			truncated++
		}
	}
	q.packets.Add(uint64(len(pkts)))
	q.bytes.Add(bytes)
	if truncated > 0 {
		q.truncated.Add(truncated)
	}
}

// write is the writer loop: store each batch, flush whenever no batch is
// waiting and at least every flushInterval, and close the spool writer (which
// seals the index) once the receive loop is done.
func (q *queue) write() error {
	last := time.Now()
	for {
		var b *batch
		var ok bool
		select {
		case b, ok = <-q.full:
		default:
			q.flush()
			last = time.Now()
			b, ok = <-q.full
		}
		if !ok {
			break
		}
		q.store(b)
		b.reset()
		q.free <- b
		if now := time.Now(); now.Sub(last) >= q.flushInterval {
			q.flush()
			last = now
		}
	}
	return q.w.Close()
}

func (q *queue) flush() {
	if err := q.w.Flush(); err != nil {
		q.writeFailed(err)
	}
}

// writeFailed counts a failed Append or Flush and the packets it lost: a
// failed write drops the packets appended since the last flush too, which
// were counted as stored then.
func (q *queue) writeFailed(err error) {
	q.writeErrors.Add(1)
	var we *spool.WriteError
	if errors.As(err, &we) {
		q.writeLost.Add(uint64(we.Lost))
	} else {
		q.writeLost.Add(1)
	}
	q.writeLog.report(q.stream, err)
}

// store appends every packet of b to the spool with its flow key, and
// allocates nothing. The key comes from flow.Parse, except where the XDP
// flow id gives it for less:
//   - a packet with the flow id of the packet before it keeps that packet's
//     key, with no work at all;
//   - a packet cut by the snap length, whose headers the parser may lack,
//     takes the key the XDP program parsed from the whole packet, from the
//     flow id table.
//
// Other packets are parsed rather than looked up: the parser costs about
// 13 ns on a packet just copied (flow.BenchmarkParse), a table look-up as
// little only while the table is in the cache, and with tens of thousands
// of flows each look-up missed it (random flows: 8% of the AF_XDP path's
// CPU, docs/benchmarks.md).
func (q *queue) store(b *batch) {
	if q.ids != nil {
		q.ids.refresh()
	}
	var k flow.Key
	var run uint64 // the flow id whose key k holds, 0 for none
	var fromID, stored uint64
	for i := range b.pkts {
		p := &b.pkts[i]
		data := b.packet(i)
		cut := p.capLen < p.origLen
		switch {
		case p.flowID != 0 && p.flowID == run:
			fromID++
		case cut && p.flowID != 0 && q.ids != nil && q.ids.key(p.flowID, &k):
			run = p.flowID
			fromID++
		default:
			flow.Parse(data, &k)
			run = p.flowID
			if cut {
				run = 0 // the key may be incomplete: parse the next one too
			}
		}
		if err := q.w.Append(p.ts, int(p.origLen), data, &k); err != nil {
			q.writeFailed(err)
			continue
		}
		stored++
	}
	q.keysFromID.Add(fromID)
	q.keysParsed.Add(uint64(len(b.pkts)) - fromID)
	q.stored.Add(stored)
}

// errLog logs the first error and then at most one line per period, with
// how many were left out, so a full disk does not flood the log.
type errLog struct {
	log     *slog.Logger
	msg     string
	every   time.Duration
	last    time.Time
	skipped int
}

func (l *errLog) report(stream string, err error) {
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= l.every {
		l.log.Error(l.msg, "stream", stream, "err", err, "not_logged_since_last", l.skipped)
		l.last, l.skipped = now, 0
		return
	}
	l.skipped++
}
