package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/index"
)

// The sums journal of an active pcap file keeps its records' checksums
// (pcapio.RecordSum) as they are written, so that a file a crash leaves
// without its index can still be checked record by record: repair takes a
// record whose framing is intact but whose bytes are not what was written
// (a zeroed page inside a packet, a flipped bit) for damage, not for a
// packet. The sealed index keeps the same checksums, and once it is
// written the journal goes.
//
// Format (docs/formats.md): the 8-byte magic "STENODSJ", a u32 version (1)
// and 4 reserved bytes, then one u32 per record in file order, all little
// endian. The writer appends records' checksums after their bytes are
// written (in batches, see journal), so a crash can leave the last
// second's records without checksums (they are checked by their framing
// alone), never a checksum without its record.
const (
	sumsExt     = ".sums"
	sumsMagic   = "STENODSJ"
	sumsVersion = 1
	sumsHeader  = 16
)

func sumsPath(pcapPath string) string {
	return strings.TrimSuffix(pcapPath, pcapExt) + sumsExt
}

// createSums creates the sums journal of a new pcap file.
func createSums(pcapPath string) (*os.File, error) {
	f, err := os.OpenFile(sumsPath(pcapPath), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", sumsPath(pcapPath), err)
	}
	h := make([]byte, sumsHeader)
	copy(h, sumsMagic)
	binary.LittleEndian.PutUint32(h[8:], sumsVersion)
	if _, err := f.Write(h); err != nil {
		return nil, errors.Join(fmt.Errorf("spool %s: %w", sumsPath(pcapPath), err), f.Close())
	}
	return f, nil
}

// The journal is written in batches: a write per flush (capture flushes
// whenever its ring runs empty) cost a system call every few hundred
// packets. It lags the pcap by at most sumsBuffer/2 bytes of checksums or
// sumsInterval, whichever comes first, and is written whole before the file
// is sealed.
const (
	sumsBuffer   = 64 << 10
	sumsInterval = time.Second
)

// journal adds the checksums of es, whose records have just been written,
// to the active file's journal.
func (w *Writer) journal(es []index.Entry) {
	if w.sums == nil || len(es) == 0 {
		return
	}
	if len(w.sumsBuf)+4*len(es) > cap(w.sumsBuf) {
		w.writeSums()
		if w.sums == nil {
			return
		}
	}
	b := w.sumsBuf
	for i := range es {
		b = binary.LittleEndian.AppendUint32(b, es[i].Sum)
	}
	w.sumsBuf = b
	if len(b) >= sumsBuffer/2 || time.Since(w.sumsAt) >= sumsInterval {
		w.writeSums()
	}
}

// writeSums writes the checksums gathered to the journal. A failure ends
// the journal of this file (its later records are checked by their framing
// alone, should a crash leave it without an index): it is logged, never a
// loss of packets.
func (w *Writer) writeSums() {
	b := w.sumsBuf
	w.sumsBuf, w.sumsAt = b[:0], time.Now()
	if w.sums == nil || len(b) == 0 {
		return
	}
	n := int64(len(b))
	sp := w.sp
	// The journal's bytes count against the budget like the index's it
	// stands in for. A full disk is not retried: the journal is a safety
	// net, and its write must not cost more history than the budget does.
	g := sp.reserve(w.file, n, true, 0)
	_, err := w.sums.WriteAt(b, w.sumsOff)
	sp.done(g, err == nil)
	if err != nil {
		sp.log.Warn("sums journal not written; the file's later records are checked by their framing alone if a crash leaves it without an index",
			"file", sumsPath(w.file.Path), "err", err)
		w.closeSums()
		return
	}
	w.sumsOff += n
	d := w.file.ds
	d.mu.Lock()
	w.file.sumsSize += n
	d.mu.Unlock()
}

func (w *Writer) closeSums() {
	if w.sums == nil {
		return
	}
	if err := w.sums.Close(); err != nil {
		w.sp.log.Warn("closing a sums journal failed", "file", w.sums.Name(), "err", err)
	}
	w.sums = nil
}

// dropSums deletes f's sums journal, once its index holds the checksums,
// and takes its bytes off the budget.
func (s *Spool) dropSums(f *File) {
	if err := removeIfExists(sumsPath(f.Path)); err != nil {
		s.log.Warn("sums journal not removed; the next start removes it", "file", sumsPath(f.Path), "err", err)
		return
	}
	d := f.ds
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f.mu.Lock()
	deleted := f.deleted
	f.mu.Unlock()
	if !deleted {
		d.bytes -= f.sumsSize
		d.avail += f.sumsSize
		f.idxSize -= f.sumsSize
	}
	f.sumsSize = 0
}

// maxSumsBytes bounds what readSums reads: the journal of the largest file
// a writer makes at the default rotate size (a record takes at least 16
// bytes of the pcap and 4 of the journal), or of the pcap at hand if it is
// larger. The pcap may be shorter than when its journal was written (cut
// short), so its own size is no bound.
func maxSumsBytes(pcapSize int64) int64 {
	return sumsHeader + 4*(max(pcapSize, DefaultConfig().RotateSize)/16) + 4
}

// readSums reads the sums journal of the pcap file at pcapPath, of
// pcapSize bytes. No journal (a file sealed before, or written by an
// earlier version) is nil and no error; a journal that is not a regular
// file, too large, or not a journal is an error, and the repair goes on
// without it. A torn last checksum is left out.
func readSums(pcapPath string, pcapSize int64) ([]uint32, error) {
	p := sumsPath(pcapPath)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sums journal %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sums journal %s: %w", p, err)
	}
	if !st.Mode().IsRegular() || st.Size() < sumsHeader || st.Size() > maxSumsBytes(pcapSize) {
		return nil, fmt.Errorf("sums journal %s: a %v of %d bytes cannot be the journal of a %d-byte pcap", p, st.Mode().Type(), st.Size(), pcapSize)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("sums journal %s: %w", p, err)
	}
	if string(data[:8]) != sumsMagic || binary.LittleEndian.Uint32(data[8:]) != sumsVersion {
		return nil, fmt.Errorf("sums journal %s: not a version %d journal", p, sumsVersion)
	}
	data = data[sumsHeader:]
	sums := make([]uint32, len(data)/4)
	for i := range sums {
		sums[i] = binary.LittleEndian.Uint32(data[4*i:])
	}
	return sums, nil
}
