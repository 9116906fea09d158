package engine

import (
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

const (
	minWindow = 2 << 10
	maxWindow = 1 << 20
	// maxGap: candidates closer than this are read in one window; farther
	// ones are read on their own, so a selective query reads little more than
	// the packets it returns.
	maxGap = 64 << 10
	// recordGuess is how much of a record past its offset a window covers
	// for a candidate whose length is not known yet.
	recordGuess = 2048
	// maxRecord bounds a record's captured length; spool files never hold
	// more than the largest snap length the spool accepts.
	maxRecord = 262144
	// A read from a mapping slower than slowFault took a page fault that
	// read the disk, and held one of the GOMAXPROCS threads while it did:
	// pread would have let other readers issue their reads meanwhile (and
	// reads ahead). After slowFaults such reads (more than one: a thread
	// the kernel preempts makes a read slow too) the query reads the rest
	// of the file with pread. Measured on a file not in the page cache:
	// faulting took 2-3 times as long as pread; with the switch, as long.
	slowFault  = 50 * time.Microsecond
	slowFaults = 4
)

// recordReader reads records at ascending (or arbitrary) offsets of a pcap
// file. A mapped file's records (spool.Handle.Mapped) are copied out of the
// mapping exactly, header then data, with no system call, as long as its
// pages prove to be in memory (slowFaults). Otherwise records are read
// through a window buffer with pread, sized so that a run of nearby records
// costs one read (and the kernel reads ahead from disk).
type recordReader struct {
	f   io.ReaderAt // pread
	mem io.ReaderAt // the file's mapping, nil if it has none
	// slow counts reads from the mapping that went to disk (slowFault); it
	// is shared by the readers of one file in one query.
	slow     *atomic.Int32
	path     string
	end      int64 // records must end at or before this offset
	win      []byte
	winStart int64
	hdr      [pcapio.RecordHeaderSize]byte
	rec      []byte // the last record read from the mapping
}

// newRecordReader reads h's file up to end. noMap reads it with pread only,
// even if it is mapped.
func newRecordReader(h *spool.Handle, end int64, noMap bool) recordReader {
	r := recordReader{f: h.PCAP, path: h.File.Path, end: end, slow: new(atomic.Int32)}
	if h.Mapped() && !noMap {
		r.mem = h
	}
	return r
}

// clone returns a reader of the same file with buffers of its own.
func (r *recordReader) clone() recordReader {
	return recordReader{f: r.f, mem: r.mem, slow: r.slow, path: r.path, end: r.end}
}

// record returns the header and data of the record at off. data aliases a
// buffer of r and is valid until the next call. ahead is how many bytes
// after off the caller expects to read next (lookahead), to size the
// window.
func (r *recordReader) record(off, ahead int64) (pcapio.RecordHeader, []byte, error) {
	if off < pcapio.PcapHeaderSize || off+pcapio.RecordHeaderSize > r.end {
		return pcapio.RecordHeader{}, nil, r.corrupt(off, "record offset outside the indexed data")
	}
	if r.fromMapping(off) {
		h, err := r.header(off)
		if err != nil {
			return h, nil, err
		}
		r.rec, err = r.appendData(r.rec[:0], off+pcapio.RecordHeaderSize, int(h.CapLen))
		return h, r.rec, err
	}
	if !r.has(off, pcapio.RecordHeaderSize) {
		if err := r.fill(off, ahead); err != nil {
			return pcapio.RecordHeader{}, nil, err
		}
	}
	h := pcapio.ParseRecordHeader(r.win[off-r.winStart:])
	n := int64(h.CapLen)
	if h.CapLen > maxRecord || off+pcapio.RecordHeaderSize+n > r.end || h.OrigLen < h.CapLen {
		return h, nil, r.corrupt(off, fmt.Sprintf("record length %d does not fit", h.CapLen))
	}
	if !r.has(off, pcapio.RecordHeaderSize+n) {
		if err := r.fill(off, max(ahead, pcapio.RecordHeaderSize+n)); err != nil {
			return h, nil, err
		}
	}
	s := off - r.winStart + pcapio.RecordHeaderSize
	return h, r.win[s : s+n], nil
}

// fromMapping reports whether the record at off is read from the mapping:
// the file is mapped, the window does not hold the record, and the file's
// pages have not proved to be on disk rather than in memory (slowFaults).
// Once they have, the window's pread is better: it reads ahead, where a
// fault on the mapping (MADV_RANDOM) reads one page, and it lets the other
// readers go on while it waits.
func (r *recordReader) fromMapping(off int64) bool {
	return r.mem != nil && !r.has(off, pcapio.RecordHeaderSize) && r.slow.Load() < slowFaults
}

// header reads and checks the header of the record at off, in the indexed
// data, from the mapping.
func (r *recordReader) header(off int64) (pcapio.RecordHeader, error) {
	start := time.Now()
	if _, err := r.mem.ReadAt(r.hdr[:], off); err != nil {
		return pcapio.RecordHeader{}, fmt.Errorf("spool %s: read %d bytes at %d: %w", r.path, len(r.hdr), off, err)
	}
	if time.Since(start) > slowFault {
		r.slow.Add(1)
	}
	h := pcapio.ParseRecordHeader(r.hdr[:])
	if h.CapLen > maxRecord || off+pcapio.RecordHeaderSize+int64(h.CapLen) > r.end || h.OrigLen < h.CapLen {
		return h, r.corrupt(off, fmt.Sprintf("record length %d does not fit", h.CapLen))
	}
	return h, nil
}

// appendData appends the n bytes at off to dst, copied from the mapping.
func (r *recordReader) appendData(dst []byte, off int64, n int) ([]byte, error) {
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := r.mem.ReadAt(dst[start:], off); err != nil {
		return dst[:start], fmt.Errorf("spool %s: read %d bytes at %d: %w", r.path, n, off, err)
	}
	return dst, nil
}

func (r *recordReader) has(off, n int64) bool {
	return off >= r.winStart && off+n <= r.winStart+int64(len(r.win))
}

// fill reads the window at off with pread: want bytes, at least minWindow,
// at most maxWindow, and never past the indexed end.
func (r *recordReader) fill(off, want int64) error {
	n := min(max(want, minWindow), maxWindow, r.end-off)
	if int64(cap(r.win)) < n {
		r.win = make([]byte, max(n, minWindow))
	}
	r.win = r.win[:n]
	m, err := r.f.ReadAt(r.win, off)
	if int64(m) < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("spool %s: read %d bytes at %d: %w", r.path, n, off, err)
	}
	r.winStart = off
	return nil
}

func (r *recordReader) corrupt(off int64, what string) error {
	return fmt.Errorf("spool %s: offset %d: %s: %w", r.path, off, what, ErrCorruptSpool)
}

// source yields one file's matching packets in timestamp order.
type source struct {
	q     *query.Query
	h     *spool.Handle
	order int // the file's place in the snapshot, to break timestamp ties
	sel   *selection
	rr    recordReader
	i     int // next candidate
	scanI int // next scan range
	scanO int64

	pf   *prefetcher
	cur  *chunk
	curI int

	// the current packet
	ts      int64
	origLen int
	data    []byte
	off     int64
}

// newSource selects the candidates of h's file. noMap reads it through the
// window buffer even if it is mapped.
func newSource(q *query.Query, h *spool.Handle, order int, noMap bool) (*source, error) {
	sum := h.View.Summary()
	sel, err := selectFile(q, h.View, sum)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", h.File.Path, err)
	}
	s := &source{q: q, h: h, order: order, sel: sel, rr: newRecordReader(h, sum.DataEnd, noMap)}
	if len(sel.scan) > 0 {
		s.scanO = sel.scan[0][0]
	}
	if !sum.Monotone {
		if err := s.sortByTime(); err != nil {
			return nil, err
		}
	}
	if s.sel.scan == nil && len(s.sel.cands) >= prefetchMin {
		s.startPrefetch()
	}
	return s, nil
}

// close stops the source's prefetching, if any.
func (s *source) close() {
	if s.pf != nil {
		s.pf.stop()
	}
}

// sortByTime orders the candidates of a file whose timestamps are not in
// file order (an imported capture can be out of order). It reads every
// candidate's header once and drops those whose timestamp does not match.
func (s *source) sortByTime() error {
	if s.sel.scan != nil {
		// Turn the scan ranges into explicit candidates.
		for _, rg := range s.sel.scan {
			for off := rg[0]; off < rg[1]; {
				h, _, err := s.rr.record(off, rg[1]-off)
				if err != nil {
					return err
				}
				s.sel.cands = append(s.sel.cands, cand{off: off, flow: -1})
				off += pcapio.RecordHeaderSize + int64(h.CapLen)
			}
		}
		s.sel.scan = nil
	}
	kept := s.sel.cands[:0]
	for i, c := range s.sel.cands {
		h, _, err := s.rr.record(c.off, s.ahead(s.sel.cands[i+1:], c.off))
		if err != nil {
			return err
		}
		c.ts = h.Timestamp
		if s.matches(c) {
			kept = append(kept, c)
		}
	}
	slices.SortStableFunc(kept, func(a, b cand) int {
		switch {
		case a.ts < b.ts:
			return -1
		case a.ts > b.ts:
			return 1
		}
		return 0
	})
	s.sel.cands = kept
	return nil
}

// ahead returns the window size for reading the candidate at off: none when
// the window probably holds it already, else lookahead's.
func (s *source) ahead(next []cand, off int64) int64 {
	if s.rr.has(off, pcapio.RecordHeaderSize+recordGuess) {
		return 0
	}
	return lookahead(next, off)
}

// lookahead returns how many bytes from off a window read should cover: the
// run of following candidates (sorted by offset) with no gap over maxGap,
// up to maxWindow.
func lookahead(next []cand, off int64) int64 {
	want, prev := int64(recordGuess), off
	for _, c := range next {
		if c.off-prev > maxGap || c.off+recordGuess-off > maxWindow {
			break
		}
		want, prev = c.off+recordGuess-off, c.off
	}
	return want
}

func (s *source) matches(c cand) bool {
	if c.flow >= 0 {
		return s.q.MatchPacket(&s.sel.keys[c.flow], c.ts)
	}
	if s.q.TimeOnly() {
		return s.q.MatchPacket(nil, c.ts)
	}
	return true
}

// next advances to the next matching packet; it returns false at the end.
func (s *source) next() (bool, error) {
	if s.sel.scan != nil {
		return s.nextScan()
	}
	if s.pf != nil {
		return s.nextPrefetched()
	}
	for s.i < len(s.sel.cands) {
		c := s.sel.cands[s.i]
		s.i++
		h, data, err := s.rr.record(c.off, s.ahead(s.sel.cands[s.i:], c.off))
		if err != nil {
			return false, err
		}
		c.ts = h.Timestamp
		if !s.matches(c) {
			continue
		}
		s.ts, s.origLen, s.data, s.off = h.Timestamp, h.OrigLen, data, c.off
		return true, nil
	}
	return false, nil
}

func (s *source) nextScan() (bool, error) {
	for s.scanI < len(s.sel.scan) {
		rg := s.sel.scan[s.scanI]
		if s.scanO >= rg[1] {
			s.scanI++
			if s.scanI < len(s.sel.scan) {
				s.scanO = s.sel.scan[s.scanI][0]
			}
			continue
		}
		off := s.scanO
		h, data, err := s.rr.record(off, rg[1]-off)
		if err != nil {
			return false, err
		}
		s.scanO = off + pcapio.RecordHeaderSize + int64(h.CapLen)
		if !s.q.MatchPacket(nil, h.Timestamp) {
			continue
		}
		s.ts, s.origLen, s.data, s.off = h.Timestamp, h.OrigLen, data, off
		return true, nil
	}
	return false, nil
}
