package spool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// ErrTimestamp: a packet's timestamp cannot be stored in pcap (before 1970
// or after 2106).
var ErrTimestamp = errors.New("timestamp outside what pcap can store")

// pendingEntries bounds how many packets wait for Flush to be indexed.
const pendingEntries = 4096

// maxPcapTime is the last instant a pcap record header can hold.
const maxPcapTime = math.MaxUint32*1_000_000_000 + 999_999_999

// Writer appends one stream's packets to its active file and live index.
// It is used by one goroutine at a time.
type Writer struct {
	sp     *Spool
	stream string
	iface  string

	f    *os.File
	file *File
	live *index.Builder
	buf  []byte
	// pending holds the index entries of the buffered packets. They are
	// added to the live index in one batch at Flush: queries could not see
	// them earlier anyway, as the bytes are not in the file before Flush.
	pending []index.Entry
	end     int64 // file offset after the last appended record (buffered or not)
	written int64 // bytes written to the file
	first   int64 // timestamp of the file's first packet
	// torn: a failed write could not be cut back, so the file may end in
	// a partial record at an unknown write offset; it is given up.
	torn bool
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[stream] {
		return nil, fmt.Errorf("spool: stream %q already has a writer", stream)
	}
	s.streams[stream] = true
	return &Writer{sp: s, stream: stream, iface: iface, buf: make([]byte, 0, s.cfg.WriteBuffer),
		pending: make([]index.Entry, 0, pendingEntries)}, nil
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
	if w.f != nil && (w.end+int64(rec) > cfg.RotateSize || ts-w.first >= int64(cfg.RotateAge)) {
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
		if err := w.Flush(); err != nil {
			return w.lostToo(err)
		}
	}
	off := w.end
	w.buf = pcapio.AppendRecord(w.buf, ts, origLen, data)
	w.end += int64(rec)
	w.pending = append(w.pending, index.Entry{Key: *k, Off: off, TS: ts, WireLen: origLen})
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
	d := sp.pickDir()
	sp.reserveFile(d, 0)
	f, path, err := w.create(d.path, ts)
	if errors.Is(err, syscall.ENOSPC) {
		sp.ctr.enospc.Add(1)
		sp.releaseFile(d)
		sp.reserveFile(d, d.shortfall(0))
		f, path, err = w.create(d.path, ts)
	}
	if err != nil {
		sp.releaseFile(d)
		return &WriteError{Path: path, Err: err}
	}
	w.f, w.first, w.written, w.torn = f, ts, 0, false
	w.live = index.NewBuilder(0)
	w.buf = pcapio.AppendPcapHeader(w.buf[:0], sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
	w.end = int64(len(w.buf))
	w.file = &File{Path: path, Dir: d.path, Stream: w.stream, Start: ts, iface: w.iface, live: w.live, ds: d, busy: true}
	sp.add(w.file)
	return nil
}

// create creates the file of a stream whose first packet is stamped ts.
func (w *Writer) create(dir string, ts int64) (*os.File, string, error) {
	var f *os.File
	var path string
	var err error
	// Two files of one stream can only share a name if their first packets
	// share a nanosecond; the next nanosecond is as good a name.
	for i := int64(0); i < 16; i++ {
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
// oldest files are deleted to make room and the write is tried once more.
// If that fails too, the buffered packets are dropped, counted in the
// spool's Counters, and reported in a *WriteError; the file still ends
// with its last whole record, and the writer goes on.
func (w *Writer) Flush() error {
	if w.f == nil || len(w.buf) == 0 {
		return nil
	}
	sp, n := w.sp, int64(len(w.buf))
	g := sp.reserve(w.file, n, false, 0)
	err := w.write()
	if errors.Is(err, syscall.ENOSPC) && !w.torn {
		sp.ctr.enospc.Add(1)
		sp.done(g, false)
		g = sp.reserve(w.file, n, false, w.file.ds.shortfall(n))
		err = w.write()
	}
	sp.done(g, err == nil)
	if err != nil {
		lost := len(w.pending)
		sp.ctr.writeErrors.Add(1)
		sp.ctr.packetsLost.Add(uint64(lost))
		path := w.file.Path
		w.pending, w.buf, w.end = w.pending[:0], w.buf[:0], w.written
		if w.written == 0 {
			// The file header went too; write it again with the next batch.
			w.buf = pcapio.AppendPcapHeader(w.buf, sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
			w.end = int64(len(w.buf))
		}
		switch {
		case w.torn:
			// The file may end in a torn record, and its write offset is
			// unknown: seal it up to its last whole record (the index
			// says where that is) and go on in a new file.
			w.close()
		case errors.Is(err, syscall.ENOSPC) && w.written > 0:
			// Nothing could be deleted: the active files fill the disk.
			// Closing this one lets the next full disk delete it, so the
			// newest packets get stored rather than none until rotation.
			w.close()
		}
		return &WriteError{Path: path, Lost: lost, Err: err}
	}
	w.live.AddBatch(w.pending)
	w.live.SetVisible(w.written)
	w.pending = w.pending[:0]
	w.buf = w.buf[:0]
	return nil
}

// write writes the buffer at the end of the file. If that fails, it cuts
// the file back to its last whole record, so that it never ends in a torn
// one, and the buffer may be written again; if even that fails, it sets
// torn.
func (w *Writer) write() error {
	n, err := w.f.Write(w.buf)
	if err == nil {
		w.written += int64(n)
		return nil
	}
	terr := w.f.Truncate(w.written)
	_, serr := w.f.Seek(w.written, io.SeekStart)
	if terr != nil || serr != nil {
		w.torn = true
		return errors.Join(err, fmt.Errorf("cut back to %d: %w", w.written, errors.Join(terr, serr)))
	}
	return err
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

// close hands the active file to a background seal.
func (w *Writer) close() {
	if w.f == nil {
		return
	}
	f, file := w.f, w.file
	w.f, w.file, w.live = nil, nil, nil
	file.mu.Lock()
	file.busy = false
	file.mu.Unlock()
	w.sp.sealing.Add(1)
	go func() {
		defer w.sp.sealing.Done()
		w.sp.seal(f, file)
	}()
}

// Close flushes, seals the active file's index and releases the stream name.
// Call Spool.Close afterwards to wait for the seal.
func (w *Writer) Close() error {
	err := w.Rotate()
	w.sp.mu.Lock()
	delete(w.sp.streams, w.stream)
	w.sp.mu.Unlock()
	return err
}

// seal makes a finished file durable and writes its index next to it. If it
// fails, the file stays live-indexed in memory and the next Open rebuilds
// the index from the pcap. The budget may delete the file meanwhile; then
// the index goes too.
func (s *Spool) seal(f *os.File, file *File) {
	err := errors.Join(f.Sync(), f.Close())
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
		data := live.Encode(file.iface)
		if err = s.writeIndex(file, data); err == nil {
			r, err = index.Decode(data)
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
		s.touch(file)
	case errors.Is(err, syscall.ENOSPC):
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
