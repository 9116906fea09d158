package spool

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

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

	f       *os.File
	file    *File
	live    *index.Builder
	buf     []byte
	// pending holds the index entries of the buffered packets. They are
	// added to the live index in one batch at Flush: queries could not see
	// them earlier anyway, as the bytes are not in the file before Flush.
	pending []index.Entry
	end     int64 // file offset after the last appended record (buffered or not)
	written int64 // bytes written to the file
	first   int64 // timestamp of the file's first packet
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
			return err
		}
	}
	if w.f == nil {
		if err := w.open(ts); err != nil {
			return err
		}
	}
	if len(w.buf)+rec > cap(w.buf) || len(w.pending) == cap(w.pending) {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	off := w.end
	w.buf = pcapio.AppendRecord(w.buf, ts, origLen, data)
	w.end += int64(rec)
	w.pending = append(w.pending, index.Entry{Key: *k, Off: off, TS: ts, WireLen: origLen})
	return nil
}

// open starts a new file named after its first packet.
func (w *Writer) open(ts int64) error {
	dir := w.sp.pickDir()
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
		return fmt.Errorf("spool %s: %w", path, err)
	}
	w.f, w.first, w.written = f, ts, 0
	w.live = index.NewBuilder(0)
	w.buf = pcapio.AppendPcapHeader(w.buf[:0], w.sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
	w.end = int64(len(w.buf))
	w.file = &File{Path: path, Dir: dir, Stream: w.stream, Start: ts, iface: w.iface, live: w.live}
	w.sp.add(w.file)
	return nil
}

// Flush writes buffered packets to the file and makes them visible to
// queries. Capture calls it when its ring runs empty and at least every few
// hundred milliseconds, so a packet is queryable well within a second.
func (w *Writer) Flush() error {
	if w.f == nil || len(w.buf) == 0 {
		return nil
	}
	before := w.written
	n, err := w.f.Write(w.buf)
	if err != nil {
		// A partial record must not stay in the file: cut it back to the
		// last flush and drop the batch. The caller counts the loss.
		lost := len(w.pending)
		terr := w.f.Truncate(before)
		if _, serr := w.f.Seek(before, 0); serr != nil || terr != nil {
			err = errors.Join(err, terr, serr)
		}
		w.pending, w.buf, w.end = w.pending[:0], w.buf[:0], before
		if before == 0 {
			// The file header went too; write it again with the next batch.
			w.buf = pcapio.AppendPcapHeader(w.buf, w.sp.cfg.SnapLen, pcapio.LinkTypeEthernet)
			w.end = int64(len(w.buf))
		}
		return &WriteError{Path: w.file.Path, Lost: lost, Err: err}
	}
	w.written += int64(n)
	w.live.AddBatch(w.pending)
	w.live.SetVisible(w.written)
	w.pending = w.pending[:0]
	w.buf = w.buf[:0]
	return nil
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
	f, file := w.f, w.file
	w.f, w.file, w.live = nil, nil, nil
	w.sp.sealing.Add(1)
	go func() {
		defer w.sp.sealing.Done()
		w.sp.seal(f, file)
	}()
	return err
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
// the index from the pcap.
func (s *Spool) seal(f *os.File, file *File) {
	err := errors.Join(f.Sync(), f.Close())
	file.mu.Lock()
	live := file.live
	file.mu.Unlock()
	var r *index.Reader
	if err == nil {
		data := live.Encode(file.iface)
		if err = index.WriteFile(indexPath(file.Path), data); err == nil {
			r, err = index.Decode(data)
		}
	}
	if err != nil {
		s.log.Error("sealing index failed; it will be rebuilt at the next start", "file", file.Path, "err", err)
		s.mu.Lock()
		s.sealErr = errors.Join(s.sealErr, fmt.Errorf("seal %s: %w", file.Path, err))
		s.mu.Unlock()
		return
	}
	file.mu.Lock()
	file.live, file.sealed, file.sum = nil, r, r.Summary()
	file.mu.Unlock()
	s.touch(file)
}
