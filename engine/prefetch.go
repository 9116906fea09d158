package engine

import (
	"runtime"
	"sync"

	"github.com/stenod/stenod/pcapio"
)

// On a selective query nearly every matching packet is far from the
// previous one: reading it costs a system call (pread) or, from a mapped
// file, a TLB and cache miss. The prefetcher reads chunks of candidates on
// several goroutines at once (both reads are safe to share) while the merge
// consumes earlier chunks in order; consumed chunks are reused.
const (
	prefetchChunk    = 256 // candidates per chunk
	prefetchMin      = 512 // fewer candidates are read inline
	prefetchInFlight = 4   // chunks read ahead of the consumer, per file
)

// chunkRecord is one matching packet of a chunk; its bytes are
// buf[start:start+n] of the chunk.
type chunkRecord struct {
	ts, off  int64
	origLen  int
	start, n int
}

type chunk struct {
	recs   []chunkRecord
	buf    []byte
	err    error
	damage damage // records left out as damaged
}

// prefetcher delivers the chunks of a candidate list in order.
type prefetcher struct {
	results []chan *chunk
	next    int
	tokens  chan struct{} // bounds the chunks read but not yet consumed
	free    chan *chunk   // consumed chunks, for the workers to reuse
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func (s *source) startPrefetch() {
	cands := s.sel.cands
	n := (len(cands) + prefetchChunk - 1) / prefetchChunk
	p := &prefetcher{
		results: make([]chan *chunk, n),
		tokens:  make(chan struct{}, prefetchInFlight),
		free:    make(chan *chunk, prefetchInFlight+1),
		done:    make(chan struct{}),
	}
	for i := range p.results {
		p.results[i] = make(chan *chunk, 1)
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), prefetchInFlight))
	jobs := make(chan int)
	p.wg.Add(workers + 1)
	go func() {
		defer p.wg.Done()
		defer close(jobs)
		for i := range n {
			select {
			case p.tokens <- struct{}{}:
			case <-p.done:
				return
			}
			select {
			case jobs <- i:
			case <-p.done:
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer p.wg.Done()
			rr := s.rr.clone()
			for i := range jobs {
				lo := i * prefetchChunk
				p.results[i] <- s.readChunk(&rr, p.chunk(), cands[lo:min(lo+prefetchChunk, len(cands))], cands[min(lo+prefetchChunk, len(cands)):])
			}
		}()
	}
	s.pf = p
}

// chunk returns an empty chunk, a consumed one if there is one.
func (p *prefetcher) chunk() *chunk {
	select {
	case ch := <-p.free:
		ch.recs, ch.buf, ch.damage = ch.recs[:0], ch.buf[:0], damage{}
		return ch
	default:
		return &chunk{}
	}
}

// readChunk reads and tests a chunk's candidates into ch. A record read
// from a mapping (fromMapping) is copied straight into the chunk; the others
// come through the reader's window. Damaged records are counted in the
// chunk and left out.
func (s *source) readChunk(rr *recordReader, ch *chunk, cs, after []cand) *chunk {
	for i, c := range cs {
		if rr.fromMapping(c.off) {
			h, n, err := s.appendMapped(rr, ch, c)
			if ch.damage.skip(err) {
				continue
			}
			if err != nil {
				ch.err = err
				return ch
			}
			c.ts = h.Timestamp
			if !s.matches(c) {
				ch.buf = ch.buf[:len(ch.buf)-n]
				continue
			}
			ch.recs = append(ch.recs, chunkRecord{ts: h.Timestamp, off: c.off, origLen: h.OrigLen, start: len(ch.buf) - n, n: n})
			continue
		}
		next := cs[i+1:]
		if len(next) == 0 {
			next = after
		}
		ahead := int64(0)
		if !rr.has(c.off, pcapio.RecordHeaderSize+recordGuess) {
			ahead = lookahead(next, c.off)
		}
		h, data, err := rr.record(c.off, ahead, c.sum)
		if ch.damage.skip(err) {
			continue
		}
		if err != nil {
			ch.err = err
			return ch
		}
		c.ts = h.Timestamp
		if !s.matches(c) {
			continue
		}
		ch.recs = append(ch.recs, chunkRecord{ts: h.Timestamp, off: c.off, origLen: h.OrigLen, start: len(ch.buf), n: len(data)})
		ch.buf = append(ch.buf, data...)
	}
	return ch
}

// appendMapped copies the data of c's record from the mapping to the end of
// ch.buf and checks the record against its checksum; it returns the header
// and the data's length. A damaged record leaves ch.buf as it was.
func (s *source) appendMapped(rr *recordReader, ch *chunk, c cand) (pcapio.RecordHeader, int, error) {
	if c.off < pcapio.PcapHeaderSize || c.off+pcapio.RecordHeaderSize > rr.end {
		return pcapio.RecordHeader{}, 0, rr.damaged(c.off, "record offset outside the indexed data", nil)
	}
	h, err := rr.header(c.off)
	if err != nil {
		return h, 0, err
	}
	start := len(ch.buf)
	if ch.buf, err = rr.appendData(ch.buf, c.off+pcapio.RecordHeaderSize, h.CapLen); err != nil {
		return h, 0, err
	}
	if pcapio.RecordSumParts(rr.hdr[:], ch.buf[start:]) != c.sum {
		ch.buf = ch.buf[:start]
		return h, 0, rr.damaged(c.off, "record does not match its checksum", nil)
	}
	return h, h.CapLen, nil
}

// nextPrefetched advances to the next matching packet from the chunks.
func (s *source) nextPrefetched() (bool, error) {
	p := s.pf
	for {
		if s.cur != nil && s.curI < len(s.cur.recs) {
			r := s.cur.recs[s.curI]
			s.curI++
			s.ts, s.origLen, s.off, s.data = r.ts, r.origLen, r.off, s.cur.buf[r.start:r.start+r.n]
			return true, nil
		}
		if s.cur != nil {
			// Nothing refers to the consumed chunk's bytes any more: the
			// packet returned last was written before this call.
			select {
			case p.free <- s.cur:
			default:
			}
			s.cur = nil
			<-p.tokens // the consumed chunk frees a place
		}
		if p.next == len(p.results) {
			return false, nil
		}
		ch := <-p.results[p.next]
		p.next++
		s.damage.add(ch.damage)
		if ch.err != nil {
			return false, ch.err
		}
		s.cur, s.curI = ch, 0
	}
}

// stop ends the prefetch goroutines and waits for them. Each result
// channel holds its one chunk, so no worker blocks on a consumer that left.
func (p *prefetcher) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}
