package spool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// ErrTimestamp: a packet's timestamp cannot be stored in pcap (before 1970
// or after 2106).
var ErrTimestamp = errors.New("timestamp outside what pcap can store")

// maxNameTries bounds how many names create tries for a new file, one
// nanosecond apart.
const maxNameTries = 1 << 16

// pendingEntries bounds how many packets of a buffer wait to be indexed.
const pendingEntries = 4096

// maxPcapTime is the last instant a pcap record header can hold.
const maxPcapTime = math.MaxUint32*1_000_000_000 + 999_999_999

// Writer appends one stream's packets to its active file and live index.
// It is used by one goroutine at a time.
//
// Records gather in one of two buffers. With Config.DirectIO, where the
// file system takes O_DIRECT, a full buffer's whole blocks are written directly (dio.go) by a
// goroutine of the Writer's while Append fills the other buffer, which
// starts with the rest; the records written so far become visible when the
// write has completed, at the next full buffer or Flush. Flush writes
// everything, the last partial block through the page cache, and returns
// once it is visible. Elsewhere every write is a buffered pwrite of the
// whole buffer, at Flush or when the buffer is full.
type Writer struct {
	sp     *Spool
	stream string
	iface  string

	// f is the active file, written through the page cache; dio is the
	// same file opened with O_DIRECT, or nil where that does not work.
	f    *os.File
	dio  *os.File
	file *File
	live *index.Builder

	io  ioBuffers
	cur int    // which of io.bufs buf is
	buf []byte // the file's bytes from base on, up to end
	// base is the file offset of buf[0]: a multiple of dioAlign when dio
	// is set, so buf starts with the file's last partial block.
	base int64
	// head holds the file's bytes from its last block boundary up to
	// written: where the buffer starts again after a failed write.
	head []byte
	// pending holds the index entries of the buffered packets. They are
	// added to the live index in one batch when their bytes are written:
	// queries could not see them earlier anyway.
	pending []index.Entry
	end     int64 // file offset after the last appended record (buffered or not)
	written int64 // the visible end: bytes written and published to queries
	first   int64 // timestamp of the file's first packet
	// torn: a failed write could not be cut back, so the file may end in
	// a partial record; it is given up.
	torn bool
	// indexFull: the live index has reached Config.MaxLiveIndex; the next
	// packet starts a new file.
	indexFull bool

	fly    flight // the direct write in flight, if any
	aio    *aio   // runs it; started with the first one
	stalls StallCounter

	// sums is the active file's sums journal (sums.go), nil if it could
	// not be written; sumsOff is its length, sumsBuf the checksums not
	// written to it yet, sumsAt when it was last written.
	sums    *os.File
	sumsOff int64
	sumsBuf []byte
	sumsAt  time.Time
}

// flight is a direct write of a full buffer's whole blocks.
type flight struct {
	active  bool
	buf     []byte // what is written, at off
	off     int64
	end     int64         // the end of its last whole record: visible once written
	pending []index.Entry // the index entries of the records before end
	g       grant
}

// NewWriter returns the writer of a stream (for example "eth1-q0"), whose
// packets came from interface iface. Each stream has at most one writer.
func (s *Spool) NewWriter(stream, iface string) (*Writer, error) {
	if err := CheckStream(stream); err != nil {
		return nil, err
	}
	if s.cfg.ReadOnly {
		return nil, errors.New("spool: opened read-only")
	}
	// After a full buffer is written, its last partial block (less than
	// dioAlign bytes) starts the next one, and the largest record must
	// still fit.
	n := roundUp(max(s.cfg.WriteBuffer, dioAlign+pcapio.RecordHeaderSize+s.cfg.SnapLen), dioAlign)
	bufs, err := newIOBuffers(n)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[stream] {
		return nil, errors.Join(fmt.Errorf("spool: stream %q already has a writer", stream), bufs.release())
	}
	s.streams[stream] = true
	return &Writer{sp: s, stream: stream, iface: iface, io: bufs, buf: bufs.bufs[0],
		head:    make([]byte, 0, dioAlign),
		pending: make([]index.Entry, 0, pendingEntries),
		fly:     flight{pending: make([]index.Entry, 0, pendingEntries)},
		sumsBuf: make([]byte, 0, sumsBuffer)}, nil
}

// Append stores one packet: ts in unix nanoseconds, origLen its length on
// the wire, data the captured bytes (cut to the snap length here), k its
// flow key. It allocates nothing except when a new file starts.
//
// An error other than ErrTimestamp is a *WriteError: the write of earlier
// packets failed (see Flush), and this packet is lost too (counted in its
// Lost). The writer goes on with the next packet either way.
func (w *Writer) Append(ts int64, origLen int, data []byte, k *flow.Key) error {
	if ts < 0 || ts > maxPcapTime {
		return fmt.Errorf("spool %s: %w: %d", w.stream, ErrTimestamp, ts)
	}
	cfg := &w.sp.cfg
	if len(data) > cfg.SnapLen {
		data = data[:cfg.SnapLen]
	}
	origLen = max(origLen, len(data))
	rec := pcapio.RecordHeaderSize + len(data)
	// A file spans at most RotateAge of packet time either way from its
	// first packet (imports can go back in time): repair relies on it to
	// tell a record's timestamp from damage.
	if w.f != nil && (w.indexFull || w.end+int64(rec) > cfg.RotateSize || ts-w.first >= int64(cfg.RotateAge) || w.first-ts >= int64(cfg.RotateAge)) {
		if w.indexFull {
			w.sp.ctr.indexFullRotations.Add(1)
		}
		if err := w.Rotate(); err != nil {
			return w.lostToo(err)
		}
	}
	if w.f == nil {
		if err := w.open(ts); err != nil {
			w.sp.ctr.writeErrors.Add(1)
			return w.lostToo(err)
		}
	}
	if len(w.buf)+rec > cap(w.buf) || len(w.pending) == cap(w.pending) {
		if err := w.spill(); err != nil {
			return w.lostToo(err)
		}
	}
	off := w.end
	w.buf = pcapio.AppendRecord(w.buf, ts, origLen, data)
	w.end += int64(rec)
	// Filled in place: appending a composite literal builds it on the stack
	// and copies it, and the copy's wide loads of the fields just stored
	// wait for the store buffer (measured: 11.7 to 4.9 ns per entry).
	w.pending = w.pending[:len(w.pending)+1]
	e := &w.pending[len(w.pending)-1]
	e.Key, e.Off, e.TS, e.WireLen = *k, off, ts, origLen
	// Here rather than in each capture path, so that AF_PACKET, AF_XDP
	// and import all give the live index the flags of every packet (the
	// IPFIX exporter's tcpControlBits); a few loads on a frame in the
	// cache, and nothing for packets that are not TCP or without export.
	e.TCPFlags = 0
	if w.sp.cfg.TCPFlags {
		e.TCPFlags = flow.TCPFlags(data, k)
	}
	// The record was just copied and is in the cache: its checksum costs
	// the CRC instruction's time alone (docs/benchmarks.md).
	e.Sum = pcapio.RecordSum(w.buf[len(w.buf)-rec:])
	return nil
}

// lostToo counts the packet Append was given as lost along with those of
// the failed write: Append does not store it when it returns an error.
func (w *Writer) lostToo(err error) error {
	if we, ok := err.(*WriteError); ok {
		we.Lost++
		w.sp.ctr.packetsLost.Add(1)
	}
	return err
}

// open starts a new file named after its first packet, within the disk
// budget of the directory it goes to.
func (w *Writer) open(ts int64) error {
	sp := w.sp
	if w.io.region.Mem == nil {
		return errors.New("spool: writer closed")
	}
	d := sp.pickDir()
	sp.reserveFile(d, 0)
	f, path, err := w.create(d.path, ts)
	if errors.Is(err, unix.ENOSPC) {
		sp.ctr.enospc.Add(1)
		sp.releaseFile(d)
		sp.reserveFile(d, d.shortfall(0))
		f, path, err = w.create(d.path, ts)
	}
	if err != nil {
		sp.releaseFile(d)
		return &WriteError{Path: path, Err: err}
	}
	w.f, w.dio, w.first, w.written, w.torn, w.indexFull = f, w.openDirect(f, path), ts, 0, false, false
	w.live = index.NewBuilder(0)
	w.buf = pcapio.AppendPcapHeader(w.buf[:0], sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
	w.base, w.head = 0, w.head[:0]
	w.end = int64(len(w.buf))
	w.file = &File{Path: path, Dir: d.path, Stream: w.stream, Start: ts, iface: w.iface, live: w.live, ds: d, busy: true}
	sp.add(w.file)
	w.sums, w.sumsOff, w.sumsBuf, w.sumsAt = nil, sumsHeader, w.sumsBuf[:0], time.Now()
	// The journal's header counts as its checksums do (writeSums): left
	// out, every journal on disk held 16 bytes the budget did not see.
	g := sp.reserve(w.file, sumsHeader, true, 0)
	sums, err := createSums(path)
	sp.done(g, err == nil)
	if err != nil {
		sp.log.Warn("no sums journal for this file; should a crash leave it without an index, its records are checked by their framing alone", "file", path, "err", err)
		return nil
	}
	w.sums = sums
	d.mu.Lock()
	w.file.sumsSize += sumsHeader
	d.mu.Unlock()
	return nil
}

// openDirect opens the new, empty file at path a second time, with
// O_DIRECT, and tries a direct write of one block (then cut off again). It
// returns nil if the file system refuses either: the file is then written
// through f alone.
func (w *Writer) openDirect(f *os.File, path string) *os.File {
	if !w.sp.cfg.DirectIO {
		return nil
	}
	dio, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	probe := w.io.bufs[w.cur^1][:dioAlign]
	clear(probe)
	if _, err := dio.WriteAt(probe, 0); err != nil {
		if err := errors.Join(dio.Close(), f.Truncate(0)); err != nil {
			w.sp.log.Warn("cutting off the direct-I/O probe failed", "file", path, "err", err)
		}
		return nil
	}
	if err := f.Truncate(0); err != nil {
		// The file starts with a zero block; the first write overwrites
		// it, and Open cuts a zero-filled tail.
		w.sp.log.Warn("cutting off the direct-I/O probe failed", "file", path, "err", err)
	}
	return dio
}

// create creates the file of a stream whose first packet is stamped ts.
func (w *Writer) create(dir string, ts int64) (*os.File, string, error) {
	var f *os.File
	var path string
	var err error
	// Two files of one stream can only share a name if their first packets
	// share a nanosecond; the next free nanosecond is as good a name. Many
	// can: an import of captures stamped at the same time (tcpdump's test
	// captures start at 0) starts a file each time time jumps back.
	for i := int64(0); i < maxNameTries; i++ {
		path = filepath.Join(dir, fileName(ts+i, w.stream))
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, path, fmt.Errorf("spool %s: %w", path, err)
	}
	return f, path, nil
}

// Flush writes buffered packets to the file and makes them visible to
// queries. Capture calls it when its ring runs empty and at least every few
// hundred milliseconds, so a packet is queryable well within a second.
//
// The write is within the directory's disk budget: the oldest files are
// deleted first if needed. If the disk is full all the same (ENOSPC), the
// oldest files are deleted to make room and the write is tried once more,
// and once again after the file system has committed the deletions
// (dirState.settle). If that fails too, the buffered packets are dropped, counted in the
// spool's Counters, and reported in a *WriteError; the file still ends
// with its last whole record, and the writer goes on.
func (w *Writer) Flush() error {
	if w.f == nil {
		return nil
	}
	if err := w.land(); err != nil {
		return err
	}
	if w.end == w.written {
		return nil
	}
	sp, n := w.sp, w.end-w.written
	g := sp.reserve(w.file, n, false, 0)
	t := time.Now()
	err := w.write()
	w.stalled(time.Since(t))
	if errors.Is(err, unix.ENOSPC) {
		sp.ctr.enospc.Add(1)
		sp.done(g, false)
		g = sp.reserve(w.file, n, false, w.file.ds.shortfall(n))
		err = w.write()
		if errors.Is(err, unix.ENOSPC) && w.file.ds.settle() {
			err = w.write()
		}
	}
	sp.done(g, err == nil)
	if err != nil {
		return w.fail(w.cutBack(err), 0)
	}
	w.journal(w.pending)
	w.index(w.pending)
	w.publish(w.end, w.buf, w.base)
	w.pending = w.pending[:0]
	// The next write starts at the last partial block.
	w.buf = append(w.buf[:0], w.head...)
	w.base = w.blockStart(w.end)
	return nil
}

// spill makes room in a full buffer. With direct I/O it starts the write of
// the buffer's whole blocks and goes on in the other buffer, which starts
// with the rest (the records of the last partial block). Otherwise it is
// Flush.
func (w *Writer) spill() error {
	if w.dio == nil {
		return w.Flush()
	}
	if err := w.land(); err != nil {
		return err
	}
	a := len(w.buf) &^ (dioAlign - 1)
	cut := w.base + int64(a)
	if a == 0 {
		return w.Flush()
	}
	// The records that end by the cut become visible with this write; the
	// others go on with the rest.
	k, end := len(w.pending), w.end
	for end > cut {
		if k == 0 {
			end = w.written
			break
		}
		k--
		end = w.pending[k].Off
	}
	fl := &w.fly
	fl.buf, fl.off, fl.end = w.buf[:a], w.base, end
	fl.pending, w.pending = w.pending[:k], append(fl.pending[:0], w.pending[k:]...)
	fl.g = w.sp.reserve(w.file, end-w.written, false, 0)
	w.cur ^= 1
	w.buf = append(w.io.bufs[w.cur][:0], w.buf[a:]...)
	w.base = cut
	if w.aio == nil {
		w.aio = startAIO()
	}
	fl.active = true
	w.aio.submit(w.dio, fl.buf, fl.off)
	return nil
}

// land waits for the direct write in flight, if any, and publishes its
// records; a disk found full is handled as in Flush.
func (w *Writer) land() error {
	fl := &w.fly
	if !fl.active {
		return nil
	}
	fl.active = false
	sp := w.sp
	done, err := w.aio.poll()
	if !done {
		t := time.Now()
		err = w.aio.wait()
		w.stalled(time.Since(t))
	}
	if errors.Is(err, unix.ENOSPC) {
		sp.ctr.enospc.Add(1)
		sp.done(fl.g, false)
		n := fl.end - w.written
		fl.g = sp.reserve(w.file, n, false, w.file.ds.shortfall(n))
		_, err = w.dio.WriteAt(fl.buf, fl.off)
		if errors.Is(err, unix.ENOSPC) && w.file.ds.settle() {
			_, err = w.dio.WriteAt(fl.buf, fl.off)
		}
	}
	sp.done(fl.g, err == nil)
	if err != nil {
		return w.fail(w.cutBack(err), len(fl.pending))
	}
	w.journal(fl.pending)
	w.index(fl.pending)
	w.publish(fl.end, fl.buf, fl.off)
	return nil
}

// index adds es, whose records are written, to the live index, and notes
// when the index has reached Config.MaxLiveIndex: a flood of new flows
// then starts a new file early rather than growing the index without
// bound (otherwise only the file's size bounds it, at about 160 bytes a
// packet).
func (w *Writer) index(es []index.Entry) {
	w.sp.timeOnThread(&w.sp.ctr.indexNanos, func() { w.live.AddBatch(es) })
	if m := w.sp.cfg.MaxLiveIndex; m > 0 && !w.indexFull {
		if n := w.live.MemBytes(); n >= m {
			w.indexFull = true
			w.sp.log.Info("live index full: the next packet starts a new file", "file", w.file.Path, "index_bytes", n, "flows", w.live.Summary().Flows)
		}
	}
}

// publish makes the file visible up to end, whose bytes are in b from file
// offset off on, and keeps the last partial block for restart.
func (w *Writer) publish(end int64, b []byte, off int64) {
	if end <= w.written {
		return // a write of part of one long record
	}
	w.live.SetVisible(end)
	w.written = end
	w.head = append(w.head[:0], b[w.blockStart(end)-off:end-off]...)
}

// blockStart is the start of the block holding offset off: where direct
// writes may start. Without direct I/O every offset is one.
func (w *Writer) blockStart(off int64) int64 {
	if w.dio == nil {
		return off
	}
	return off &^ (dioAlign - 1)
}

// write writes the buffer to the file: its whole blocks directly when dio
// is set, the rest (or everything) through the page cache. Writes go to
// explicit offsets, so after a failure the buffer may be written again as
// it is; a failure that stands is followed by cutBack.
func (w *Writer) write() error {
	a := 0
	var err error
	if w.dio != nil {
		a = len(w.buf) &^ (dioAlign - 1)
		if a > 0 {
			_, err = w.dio.WriteAt(w.buf[:a], w.base)
		}
	}
	if err == nil && a < len(w.buf) {
		// What lies before written is in the file already.
		from := max(int(w.written-w.base), a)
		_, err = w.f.WriteAt(w.buf[from:], w.base+int64(from))
	}
	return err
}

// cutBack cuts the file back to its visible end after a failed write, so
// that it never ends in a torn record (which a partial write can leave),
// and sets torn if it cannot.
func (w *Writer) cutBack(err error) error {
	if terr := w.f.Truncate(w.written); terr != nil {
		w.torn = true
		return errors.Join(err, fmt.Errorf("cut back to %d: %w", w.written, terr))
	}
	return err
}

// fail drops the packets a failed write lost (lost more besides the
// buffered ones, those of a write in flight), counts them and starts the
// buffer again at the file's visible end.
func (w *Writer) fail(err error, lost int) error {
	sp := w.sp
	lost += len(w.pending)
	sp.ctr.writeErrors.Add(1)
	sp.ctr.packetsLost.Add(uint64(lost))
	path := w.file.Path
	w.pending = w.pending[:0]
	w.base = w.blockStart(w.written)
	w.buf = append(w.buf[:0], w.head...)
	w.end = w.written
	if w.written == 0 {
		// The file header went too; write it again with the next batch.
		w.buf = pcapio.AppendPcapHeader(w.buf, sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
		w.end = int64(len(w.buf))
	}
	switch {
	case w.torn:
		// The file may end in a torn record: seal it up to its last
		// whole record (the index says where that is) and go on in a
		// new file.
		w.close()
	case errors.Is(err, unix.ENOSPC) && w.written > 0:
		// Nothing could be deleted: the active files fill the disk.
		// Closing this one lets the next full disk delete it, so the
		// newest packets get stored rather than none until rotation.
		w.close()
	}
	return &WriteError{Path: path, Lost: lost, Err: err}
}

// WriteError reports packets lost to a failed write (disk full, I/O error).
// The file stays consistent: it ends with the last whole record.
type WriteError struct {
	Path string
	Lost int
	Err  error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("spool %s: write failed, %d packets lost: %v", e.Path, e.Lost, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// Rotate closes the active file and seals its index in the background.
// The next Append starts a new file.
func (w *Writer) Rotate() error {
	if w.f == nil {
		return nil
	}
	err := w.Flush()
	w.close()
	return err
}

// close hands the active file to a background seal. No write may be in
// flight.
func (w *Writer) close() {
	if w.f == nil {
		return
	}
	f, dio, file := w.f, w.dio, w.file
	w.writeSums()
	w.closeSums()
	w.f, w.dio, w.file, w.live = nil, nil, nil, nil
	file.mu.Lock()
	file.busy = false
	file.mu.Unlock()
	w.sp.sealing.Add(1)
	go func() {
		defer w.sp.sealing.Done()
		w.sp.seal(f, dio, file)
	}()
}

// Close flushes, seals the active file's index, releases the stream name
// and the writer's buffers. Call Spool.Close afterwards to wait for the
// seal.
func (w *Writer) Close() error {
	err := w.Rotate()
	if w.aio != nil {
		w.aio.stop()
		w.aio = nil
	}
	w.buf, w.head = nil, nil
	err = errors.Join(err, w.io.release())
	w.sp.mu.Lock()
	delete(w.sp.streams, w.stream)
	w.sp.mu.Unlock()
	return err
}

// seal makes a finished file durable and writes its index next to it. If it
// fails, the file stays live-indexed in memory and the next Open rebuilds
// the index from the pcap. The budget may delete the file meanwhile; then
// the index goes too. dio, if not nil, is the file's direct-I/O descriptor.
func (s *Spool) seal(f, dio *os.File, file *File) {
	err := f.Sync()
	if dio != nil {
		err = errors.Join(err, dio.Close())
	}
	err = errors.Join(err, f.Close())
	file.mu.Lock()
	live := file.live
	file.mu.Unlock()
	if live.Summary().Packets == 0 {
		// Its first write failed: nothing is in it, and an empty file
		// would only clutter the spool.
		d := file.ds
		d.mu.Lock()
		s.remove(d, file, false)
		d.mu.Unlock()
		return
	}
	var r *index.Reader
	if err == nil {
		var data []byte
		s.timeOnThread(&s.ctr.sealNanos, func() { data = live.Encode(file.iface, filepath.Base(file.Path)) })
		if err = s.writeIndex(file, data); err == nil {
			s.timeOnThread(&s.ctr.sealNanos, func() { r, err = index.Decode(data) })
			if err == nil {
				s.ctr.indexesSealed.Add(1)
			}
		}
	}
	file.mu.Lock()
	deleted := file.deleted
	if err == nil && !deleted {
		file.live, file.sealed, file.sum = nil, r, r.Summary()
	}
	file.mu.Unlock()
	switch {
	case deleted:
		// remove found no index to delete, or not yet the one written
		// since. A crash before this leaves it alone, and Open removes it.
		if rerr := removeIfExists(indexPath(file.Path)); rerr != nil {
			s.log.Error("deleting index of a deleted file failed; the next start removes it", "file", file.Path, "err", rerr)
		}
	case err == nil:
		s.dropSums(file)
		s.touch(file)
	case errors.Is(err, unix.ENOSPC):
		// A full disk is counted (ENOSPCEvents), not a failure of the
		// run: the live index goes on answering, and the next Open
		// rebuilds the file's index if it is still there.
		s.log.Warn("disk full: index not sealed; it will be rebuilt at the next start", "file", file.Path)
	default:
		s.log.Error("sealing index failed; it will be rebuilt at the next start", "file", file.Path, "err", err)
		s.mu.Lock()
		s.sealErr = errors.Join(s.sealErr, fmt.Errorf("seal %s: %w", file.Path, err))
		s.mu.Unlock()
	}
}

// timeOnThread runs fn on this goroutine's thread alone and adds the
// thread's CPU time it took to n: a seal's, or a batch's in the live index
// (two clock reads, system calls, per batch of up to thousands of
// packets). The thread stays locked because fn may wait for a lock and
// would otherwise come back on another thread.
func (s *Spool) timeOnThread(n *atomic.Uint64, fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0, ok0 := threadCPU()
	fn()
	if t1, ok1 := threadCPU(); ok0 && ok1 && t1 > t0 {
		n.Add(uint64(t1 - t0))
	}
}

// threadCPU is the calling thread's CPU time.
func threadCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
