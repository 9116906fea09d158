package engine

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

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

// pread reads a handle's pcap with pread, failing at once once its query
// is cut off (spool.ErrRevoked).
type pread struct{ h *spool.Handle }

func (p pread) ReadAt(b []byte, off int64) (int, error) {
	if err := p.h.Revoked(); err != nil {
		return 0, err
	}
	return p.h.PCAP.ReadAt(b, off)
}

// newRecordReader reads h's file up to end. noMap reads it with pread only,
// even if it is mapped.
func newRecordReader(h *spool.Handle, end int64, noMap bool) recordReader {
	r := recordReader{f: pread{h}, path: h.File.Path, end: end, slow: new(atomic.Int32)}
	if h.Mapped() && !noMap {
		r.mem = h
	}
	return r
}

// clone returns a reader of the same file with buffers of its own.
func (r *recordReader) clone() recordReader {
	return recordReader{f: r.f, mem: r.mem, slow: r.slow, path: r.path, end: r.end}
}

// record returns the header and data of the record at off, after checking
// them against sum, the record's checksum in the index. data aliases a
// buffer of r and is valid until the next call. ahead is how many bytes
// after off the caller expects to read next (lookahead), to size the
// window. A record that is not what the index says, or cannot be read
// because the file is shorter than its index, gives a *DamageError.
func (r *recordReader) record(off, ahead int64, sum uint32) (pcapio.RecordHeader, []byte, error) {
	if off < pcapio.PcapHeaderSize || off+pcapio.RecordHeaderSize > r.end {
		return pcapio.RecordHeader{}, nil, r.damaged(off, "record offset outside the indexed data", nil)
	}
	if r.fromMapping(off) {
		h, err := r.header(off)
		if err != nil {
			return h, nil, err
		}
		r.rec, err = r.appendData(r.rec[:0], off+pcapio.RecordHeaderSize, int(h.CapLen))
		if err != nil {
			return h, nil, err
		}
		if pcapio.RecordSumParts(r.hdr[:], r.rec) != sum {
			return h, nil, r.damaged(off, "record does not match its checksum", nil)
		}
		return h, r.rec, nil
	}
	if err := r.need(off, pcapio.RecordHeaderSize, ahead); err != nil {
		return pcapio.RecordHeader{}, nil, err
	}
	h := pcapio.ParseRecordHeader(r.win[off-r.winStart:])
	n := int64(h.CapLen)
	if h.CapLen > maxRecord || off+pcapio.RecordHeaderSize+n > r.end || h.OrigLen < h.CapLen {
		return h, nil, r.damaged(off, fmt.Sprintf("record length %d does not fit", h.CapLen), nil)
	}
	if err := r.need(off, pcapio.RecordHeaderSize+n, ahead); err != nil {
		return h, nil, err
	}
	s := off - r.winStart
	rec := r.win[s : s+pcapio.RecordHeaderSize+n]
	if pcapio.RecordSum(rec) != sum {
		return h, nil, r.damaged(off, "record does not match its checksum", nil)
	}
	return h, rec[pcapio.RecordHeaderSize:], nil
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
		return pcapio.RecordHeader{}, r.readError(off, len(r.hdr), err)
	}
	if time.Since(start) > slowFault {
		r.slow.Add(1)
	}
	h := pcapio.ParseRecordHeader(r.hdr[:])
	if h.CapLen > maxRecord || off+pcapio.RecordHeaderSize+int64(h.CapLen) > r.end || h.OrigLen < h.CapLen {
		return h, r.damaged(off, fmt.Sprintf("record length %d does not fit", h.CapLen), nil)
	}
	return h, nil
}

// appendData appends the n bytes at off to dst, copied from the mapping.
func (r *recordReader) appendData(dst []byte, off int64, n int) ([]byte, error) {
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := r.mem.ReadAt(dst[start:], off); err != nil {
		return dst[:start], r.readError(off, n, err)
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
	if int64(m) < n && (m == 0 || err != nil && err != io.EOF) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r.readError(off, int(n), err)
	}
	// A file cut short ends inside the window: what is there stays
	// readable, and the caller finds a record past its end missing.
	r.win, r.winStart = r.win[:m], off
	return nil
}

// need fills the window with the n bytes at off (ahead as in record), or
// says the file is shorter than its index.
func (r *recordReader) need(off, n, ahead int64) error {
	if r.has(off, n) {
		return nil
	}
	if err := r.fill(off, max(ahead, n)); err != nil {
		return err
	}
	if !r.has(off, n) {
		return r.damaged(off, "the file ends before the data its index covers", io.ErrUnexpectedEOF)
	}
	return nil
}

// readError is the error of a failed read of n bytes at off: damage when
// the file turned out shorter than its index says (cut short, or truncated
// under a mapping), else the read's own error, which ends the query.
func (r *recordReader) readError(off int64, n int, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.EIO) {
		return r.damaged(off, fmt.Sprintf("read %d bytes", n), err)
	}
	return fmt.Errorf("spool %s: read %d bytes at %d: %w", r.path, n, off, err)
}

func (r *recordReader) damaged(off int64, what string, cause error) error {
	return &DamageError{Path: r.path, Offset: off, What: what, Err: cause}
}

// source yields one file's matching packets in timestamp order.
type source struct {
	q     *query.Query
	h     *spool.Handle
	order int // the file's place in the snapshot, to break timestamp ties
	sel   *selection
	rr    recordReader
	i     int // next candidate

	pf   *prefetcher
	cur  *chunk
	curI int

	// the current packet
	ts      int64
	origLen int
	data    []byte
	off     int64

	// damage: the records skipped as damaged, and the first one's error
	damage damage
}

// damage counts the damaged records a reader skipped.
type damage struct {
	n     int64
	first *DamageError
}

// skip counts err if it is a *DamageError and reports whether it was; any
// other error ends the query.
func (d *damage) skip(err error) bool {
	var de *DamageError
	if !errors.As(err, &de) {
		return false
	}
	d.n++
	if d.first == nil {
		d.first = de
	}
	return true
}

func (d *damage) add(o damage) {
	d.n += o.n
	if d.first == nil {
		d.first = o.first
	}
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
	if !sum.Monotone {
		if err := s.sortByTime(); err != nil {
			return nil, err
		}
	}
	if len(s.sel.cands) >= prefetchMin {
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
// candidate once and drops those that do not match or are damaged.
func (s *source) sortByTime() error {
	kept := s.sel.cands[:0]
	for i, c := range s.sel.cands {
		h, _, err := s.rr.record(c.off, s.ahead(s.sel.cands[i+1:], c.off), c.sum)
		if s.damage.skip(err) {
			continue
		}
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
	return true
}

// next advances to the next matching packet; it returns false at the end.
func (s *source) next() (bool, error) {
	if s.pf != nil {
		return s.nextPrefetched()
	}
	for s.i < len(s.sel.cands) {
		c := s.sel.cands[s.i]
		s.i++
		h, data, err := s.rr.record(c.off, s.ahead(s.sel.cands[s.i:], c.off), c.sum)
		if s.damage.skip(err) {
			continue
		}
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
