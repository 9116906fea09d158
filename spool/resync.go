package spool

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
)

// Repair reads a spool file's records without trusting any of them: each
// record is checked for plausibility, and where one is not plausible the
// reader looks, byte by byte, for the next record that is, so that damage
// costs only the damaged bytes. docs/formats.md states the rules; in short:
//
// A record header is plausible when it is not all zero, its nanoseconds
// are below one second, its captured length is at most the file's snap
// length and at most its original length, and its timestamp is not later
// than the file's first packet (the name's time) plus maxSpan, nor earlier
// than that time or any record taken so far minus maxSpan (imports may go
// back in time; zeros over a timestamp must not make a packet of 1970).
// A record is
// taken in sequence when its header is plausible, it ends within the file,
// and the next record's header is plausible too (or the file ends there,
// or only zeros follow). A candidate found by the byte-by-byte search must
// in addition have an original length of at most maxOrigLen, a timestamp
// within resyncWindow of the timestamps of the records taken so far (the
// name's time to begin with), and a frame that can be Ethernet; and the
// record after it must be plausible as above, which makes a candidate made
// of payload bytes very unlikely.

const (
	// maxSpan bounds how much later than a file's first packet any of its
	// packets can be: a file rotates at Config.RotateAge of packet time,
	// and a day is far more than any sensible setting, so a change of the
	// setting between runs cannot make intact records implausible.
	maxSpan = 24 * time.Hour
	// resyncWindow is how far a candidate's timestamp may lie outside the
	// range of the records taken so far. Imports may be out of order, so
	// it is wider than a capture's file ever spans.
	resyncWindow = time.Hour
	// maxOrigLen bounds a candidate's original length: far above any frame
	// (GRO/TSO aggregates reach 64 KiB, BIG TCP 512 KiB).
	maxOrigLen = 16 << 20
	// scanBuffer is how much of the file a repair reads at a time: more
	// than the largest record with the headers around it.
	scanBuffer = 1 << 20
)

// region is a damaged byte range of a pcap file: no plausible record
// starts in it.
type region struct{ off, n int64 }

// scanResult is what repair found in a pcap file.
type scanResult struct {
	b   *index.Builder // the plausible records
	end int64          // offset after the last record indexed
	// cut is where a provably worthless tail starts (a torn last record,
	// or nothing but zeros up to the end of the file), -1 if none; why
	// says which.
	cut int64
	why string
	// regions are the damaged ranges, in file order; a last one may run to
	// the end of the file.
	regions []region
	// headerOK: the file header is exactly what stenod writes, apart from
	// the snap length.
	headerOK bool
	snapLen  int // the header's snap length, 0 if the header is damaged
	maxCap   int // the largest captured length of the records indexed
	// missing counts the records the file's sums journal lists that were
	// not found intact (damaged, or cut off with the file's end).
	missing int
}

// damagedBytes sums the regions' lengths.
func (r *scanResult) damagedBytes() int64 {
	var n int64
	for _, g := range r.regions {
		n += g.n
	}
	return n
}

// recordScan reads a pcap file of a known size through a buffer.
type recordScan struct {
	r      io.ReaderAt
	size   int64
	mem    []byte
	buf    []byte // mem[:n], the file from bufOff
	bufOff int64
	err    error // the first read error

	snap     uint32 // largest plausible captured length
	hardHi   int64  // latest plausible timestamp
	floor    int64  // earliest plausible timestamp: maxSpan before the oldest so far
	lo, hi   int64  // timestamps of the records taken so far
	zFrom    int64  // [zFrom, zNon) is known to be all zero,
	zNon     int64  // and zNon is a non-zero byte or the end of the file
	res      scanResult
	key      flow.Key
	accepted bool // a record has been taken

	// sums is the file's sums journal (sums.go), nil if it has none; next
	// is the journal entry the next record should match, matched how
	// many did.
	sums          []uint32
	next, matched int
}

// journalWindow is how far ahead in the journal a record's checksum is
// looked for after damage took records out: far more records than a
// damaged region of any size holds in practice, and few enough that a
// damaged record matching a checksum by chance stays far below one in
// ten thousand (journalWindow / 2^32).
const journalWindow = 1 << 16

// journaled reports whether a record with checksum sum may be taken: it is
// the next one the journal lists, or one a little further on (the records
// between were lost to damage), or the journal ends before it (a crash
// between a flush's records and their checksums: framing alone decides).
func (x *recordScan) journaled(sum uint32) bool {
	if x.sums == nil || x.next >= len(x.sums) {
		return true
	}
	for j := x.next; j < min(len(x.sums), x.next+journalWindow); j++ {
		if x.sums[j] == sum {
			x.next = j + 1
			x.matched++
			return true
		}
	}
	return false
}

// recordHeader is a decoded record header.
type recordHeader struct {
	ts              int64
	capLen, origLen uint32
	zero            bool // all 16 bytes are zero
	nanos           uint32
}

func decodeHeader(h []byte) recordHeader {
	le := binary.LittleEndian
	sec, ns := le.Uint32(h), le.Uint32(h[4:])
	return recordHeader{
		ts:      int64(sec)*1_000_000_000 + int64(ns),
		nanos:   ns,
		capLen:  le.Uint32(h[8:]),
		origLen: le.Uint32(h[12:]),
		zero:    le.Uint64(h) == 0 && le.Uint64(h[8:]) == 0,
	}
}

// scanRecords indexes the plausible records of the pcap file r of size
// bytes, named with the time start; rules above. sums is the file's sums
// journal, or nil: with it, a record is taken only if its checksum is the
// one written with it. A file shorter than a file header holds nothing:
// errEmpty. A read error ends the scan with it.
func scanRecords(r io.ReaderAt, size, start int64, sums []uint32) (*scanResult, error) {
	if size < pcapio.PcapHeaderSize {
		return nil, errEmpty
	}
	x := &recordScan{
		r: r, size: size, mem: make([]byte, min(scanBuffer, size)),
		snap:   pcapio.MaxPacket,
		hardHi: start + int64(maxSpan),
		floor:  start - int64(maxSpan),
		lo:     start, hi: start,
		zFrom: 1, // nothing known
		sums:  sums,
	}
	x.res = scanResult{b: index.NewBuilder(0), end: pcapio.PcapHeaderSize, cut: -1}
	h := x.at(0, pcapio.PcapHeaderSize)
	if h == nil {
		return nil, x.err
	}
	x.res.headerOK, x.res.snapLen = checkFileHeader(h)
	if x.res.headerOK {
		x.snap = uint32(x.res.snapLen)
	}
	if ts, ok := x.firstRecordTime(); ok {
		// The name is not the file's: it was renamed, or swapped with
		// another. Its records say what time they are from.
		x.hardHi, x.floor, x.lo, x.hi = ts+int64(maxSpan), ts-int64(maxSpan), ts, ts
	}
	x.run()
	if x.err != nil {
		return nil, x.err
	}
	x.res.missing = len(x.sums) - x.matched
	return &x.res, nil
}

// checkFileHeader reports whether h is a file header as stenod writes it
// (nanosecond magic, version 2.4, zone and accuracy 0, Ethernet) with a
// snap length in the range Config allows, and returns that snap length.
func checkFileHeader(h []byte) (ok bool, snap int) {
	le := binary.LittleEndian
	snap = int(le.Uint32(h[16:]))
	ok = le.Uint32(h) == 0xa1b23c4d && le.Uint16(h[4:]) == 2 && le.Uint16(h[6:]) == 4 &&
		le.Uint64(h[8:]) == 0 && snap >= 1 && snap <= pcapio.MaxPacket &&
		le.Uint32(h[20:]) == pcapio.LinkTypeEthernet
	if !ok {
		return false, 0
	}
	return true, snap
}

// at returns the n bytes of the file at off, which the caller keeps within
// the file, valid until the next call; nil after a read error (x.err).
func (x *recordScan) at(off int64, n int) []byte {
	if off >= x.bufOff && off+int64(n) <= x.bufOff+int64(len(x.buf)) {
		return x.buf[off-x.bufOff:][:n]
	}
	if x.err != nil || off < 0 || n > len(x.mem) || off+int64(n) > x.size {
		if x.err == nil {
			x.err = fmt.Errorf("read %d bytes at %d: outside the file's %d bytes", n, off, x.size)
		}
		return nil
	}
	m := int(min(int64(len(x.mem)), x.size-off))
	k, err := x.r.ReadAt(x.mem[:m], off)
	if k < m {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("read at %d: %w (the file shrank while it was repaired)", off, io.ErrUnexpectedEOF)
		}
		x.err, x.buf = err, nil
		return nil
	}
	x.buf, x.bufOff = x.mem[:m], off
	return x.buf[:n]
}

// firstRecordTime returns the timestamp of the file's first record if it
// lies outside the time the name allows but the record is otherwise
// plausible and so is the one after it, stamped within maxSpan of it: the
// file's time, whatever its name says. A damaged first record is left to
// the usual rules.
func (x *recordScan) firstRecordTime() (int64, bool) {
	const first = pcapio.PcapHeaderSize
	if x.size < first+pcapio.RecordHeaderSize {
		return 0, false
	}
	b := x.at(first, pcapio.RecordHeaderSize)
	if b == nil {
		return 0, false
	}
	h := decodeHeader(b)
	if x.plausible(h) || !x.framed(h) {
		return 0, false
	}
	end := first + pcapio.RecordHeaderSize + int64(h.capLen)
	switch {
	case end > x.size:
		return 0, false
	case x.size-end < pcapio.RecordHeaderSize:
		return h.ts, true
	}
	b = x.at(end, pcapio.RecordHeaderSize)
	if b == nil {
		return 0, false
	}
	next := decodeHeader(b)
	if !x.framed(next) || next.ts < h.ts-int64(maxSpan) || next.ts > h.ts+int64(maxSpan) {
		return 0, false
	}
	return h.ts, true
}

// framed applies the rules every record must meet to a header, but for its
// timestamp.
func (x *recordScan) framed(h recordHeader) bool {
	return !h.zero && h.nanos < 1_000_000_000 && h.capLen <= x.snap && h.capLen <= h.origLen
}

// plausible applies the rules every record must meet to a header.
func (x *recordScan) plausible(h recordHeader) bool {
	return !h.zero && h.nanos < 1_000_000_000 && h.capLen <= x.snap && h.capLen <= h.origLen &&
		h.ts >= x.floor && h.ts <= x.hardHi
}

// followed reports whether what follows a record ending at end is
// plausible: the end of the file, a torn record header at the end of the
// file (cut off later), zeros up to the end, or a plausible header.
func (x *recordScan) followed(end int64) bool {
	if x.size-end < pcapio.RecordHeaderSize {
		return true
	}
	b := x.at(end, pcapio.RecordHeaderSize)
	if b == nil {
		return false
	}
	h := decodeHeader(b)
	if h.zero {
		return x.zeroToEOF(end)
	}
	return x.plausible(h)
}

// zeroToEOF reports whether the file holds only zeros from off to its end.
func (x *recordScan) zeroToEOF(off int64) bool {
	if off >= x.zFrom && off <= x.zNon {
		return x.zNon >= x.size
	}
	for p := off; p < x.size; {
		b := x.at(p, int(min(int64(len(x.mem)), x.size-p)))
		if b == nil {
			return false
		}
		for i, c := range b {
			if c != 0 {
				x.zFrom, x.zNon = off, p+int64(i)
				return false
			}
		}
		p += int64(len(b))
	}
	x.zFrom, x.zNon = off, x.size
	return true
}

// candidate reports whether a plausible record starts at off by the
// stricter rules of the byte-by-byte search; h is its decoded header.
func (x *recordScan) candidate(off int64, h recordHeader) bool {
	w := int64(resyncWindow)
	if !x.plausible(h) || h.origLen > maxOrigLen || h.ts < x.lo-w || h.ts > x.hi+w {
		return false
	}
	end := off + pcapio.RecordHeaderSize + int64(h.capLen)
	if end > x.size {
		return false
	}
	if h.capLen >= 14 {
		b := x.at(off+pcapio.RecordHeaderSize, 14)
		if b == nil {
			return false
		}
		// An EtherType, or an 802.3 length; 1501-1535 are neither.
		if et := binary.BigEndian.Uint16(b[12:]); et > 1500 && et < 0x0600 {
			return false
		}
	}
	return x.followed(end)
}

// resync returns the offset of the first candidate record at or after
// from, or -1 if there is none before the end of the file.
func (x *recordScan) resync(from int64) int64 {
	for c := from; c+pcapio.RecordHeaderSize <= x.size; {
		b := x.at(c, int(min(int64(len(x.mem)), x.size-c)))
		if b == nil {
			return -1
		}
		n := len(b) - (pcapio.RecordHeaderSize - 1)
		next := c + int64(n)
		for i := 0; i < n; i++ {
			h := decodeHeader(b[i:])
			// The cheap tests first: most bytes fail them.
			if h.nanos >= 1_000_000_000 || h.capLen > x.snap || h.capLen > h.origLen || h.zero {
				continue
			}
			if x.candidate(c+int64(i), h) {
				return c + int64(i)
			}
			// candidate may have moved the buffer.
			next = c + int64(i) + 1
			break
		}
		c = next
	}
	return -1
}

// take indexes the record at off. Every packet repair keeps is added here,
// and only here.
func (x *recordScan) take(off int64, h recordHeader) {
	rec := x.at(off, pcapio.RecordHeaderSize+int(h.capLen))
	if rec == nil {
		return
	}
	sum := pcapio.RecordSum(rec)
	if !x.journaled(sum) {
		// Well framed, but not the bytes that were written: damage
		// inside the record.
		x.damaged(off, off+int64(len(rec)))
		return
	}
	flow.Parse(rec[pcapio.RecordHeaderSize:], &x.key)
	x.res.b.Add(&x.key, off, h.ts, int(h.origLen), sum)
	if !x.accepted {
		x.lo, x.hi, x.accepted = h.ts, h.ts, true
	}
	x.lo, x.hi = min(x.lo, h.ts), max(x.hi, h.ts)
	x.floor = min(x.floor, h.ts-int64(maxSpan))
	x.res.maxCap = max(x.res.maxCap, int(h.capLen))
	x.res.end = off + pcapio.RecordHeaderSize + int64(h.capLen)
}

// damaged records the region [off, to) and, when a record follows it,
// marks it in the index as holding no packet.
func (x *recordScan) damaged(off, to int64) {
	x.res.regions = append(x.res.regions, region{off, to - off})
	if to < x.size {
		x.res.b.Skip(off)
	}
}

// tail records that the file's bytes from off on are provably worthless.
func (x *recordScan) tail(off int64, why string) {
	x.res.cut, x.res.why = off, why
}

// run reads the records after the file header.
func (x *recordScan) run() {
	off := int64(pcapio.PcapHeaderSize)
	for off < x.size && x.err == nil {
		if x.size-off < pcapio.RecordHeaderSize {
			x.tail(off, "torn record header")
			return
		}
		b := x.at(off, pcapio.RecordHeaderSize)
		if b == nil {
			return
		}
		h := decodeHeader(b)
		ok := x.plausible(h)
		end := off + pcapio.RecordHeaderSize + int64(h.capLen)
		whole := ok && end <= x.size
		if whole && x.followed(end) {
			x.take(off, h)
			off = end
			continue
		}
		if x.zeroToEOF(off) {
			x.tail(off, "zeros up to the end of the file")
			return
		}
		// The record at off is damaged, or the bytes after it are. If
		// its header is plausible, a record found inside its data means
		// its length is wrong; none means the damage starts after it.
		from := off + 1
		if ok {
			from = off + pcapio.RecordHeaderSize
		}
		c := x.resync(from)
		if x.err != nil {
			return
		}
		switch {
		// A zero-length record is whole only if a plausible record
		// follows it: zeros over a header's lengths make one.
		case whole && h.capLen > 0 && (c < 0 || c >= end):
			x.take(off, h)
			if c < 0 {
				if !x.zeroToEOF(end) {
					x.damaged(end, x.size)
				} else {
					x.tail(end, "zeros up to the end of the file")
				}
				return
			}
			if c > end {
				x.damaged(end, c)
			}
			off = c
		case ok && !whole && c < 0:
			x.tail(off, "torn last record")
			return
		case c < 0:
			x.damaged(off, x.size)
			return
		default:
			x.damaged(off, c)
			off = c
		}
	}
}

// ourFileHeader is the file header stenod writes for a file whose records
// are at most maxCap bytes, with the spool's snap length snap.
func ourFileHeader(snap, maxCap int) []byte {
	return pcapio.AppendPcapHeader(nil, max(snap, maxCap), pcapio.LinkTypeEthernet)
}
