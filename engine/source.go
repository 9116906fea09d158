package engine

import (
	"fmt"
	"io"
	"os"
	"slices"

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
)

// recordReader reads records at ascending (or arbitrary) offsets of a pcap
// file through a window buffer, so that nearby records cost one read.
type recordReader struct {
	f        *os.File
	path     string
	end      int64 // records must end at or before this offset
	win      []byte
	winStart int64
}

// record returns the header and data of the record at off. data aliases the
// window and is valid until the next call. ahead is how many bytes after off
// the caller expects to read next, to size the window.
func (r *recordReader) record(off, ahead int64) (pcapio.RecordHeader, []byte, error) {
	if off < pcapio.PcapHeaderSize || off+pcapio.RecordHeaderSize > r.end {
		return pcapio.RecordHeader{}, nil, r.corrupt(off, "record offset outside the indexed data")
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

func (r *recordReader) has(off, n int64) bool {
	return off >= r.winStart && off+n <= r.winStart+int64(len(r.win))
}

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

func newSource(q *query.Query, h *spool.Handle, order int) (*source, error) {
	sum := h.View.Summary()
	sel, err := selectFile(q, h.View, sum)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", h.File.Path, err)
	}
	s := &source{q: q, h: h, order: order, sel: sel, rr: recordReader{f: h.PCAP, path: h.File.Path, end: sum.DataEnd}}
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
