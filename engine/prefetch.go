package engine

import (
	"runtime"
	"sync"

	"github.com/stenod/stenod/pcapio"
)

// Reading a record costs a system call, and on a selective query nearly
// every matching packet is far from the previous one. The prefetcher reads
// chunks of candidates on several goroutines at once (pread on one file is
// safe to share) while the merge consumes earlier chunks in order.
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
	recs []chunkRecord
	buf  []byte
	err  error
}

// prefetcher delivers the chunks of a candidate list in order.
type prefetcher struct {
	results []chan *chunk
	next    int
	tokens  chan struct{} // bounds the chunks read but not yet consumed
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
			rr := recordReader{f: s.rr.f, path: s.rr.path, end: s.rr.end}
			for i := range jobs {
				lo := i * prefetchChunk
				p.results[i] <- s.readChunk(&rr, cands[lo:min(lo+prefetchChunk, len(cands))], cands[min(lo+prefetchChunk, len(cands)):])
			}
		}()
	}
	s.pf = p
}

// readChunk reads and tests a chunk's candidates.
func (s *source) readChunk(rr *recordReader, cs, after []cand) *chunk {
	ch := &chunk{}
	for i, c := range cs {
		next := cs[i+1:]
		if len(next) == 0 {
			next = after
		}
		ahead := int64(0)
		if !rr.has(c.off, pcapio.RecordHeaderSize+recordGuess) {
			ahead = lookahead(next, c.off)
		}
		h, data, err := rr.record(c.off, ahead)
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
			s.cur = nil
			<-p.tokens // the consumed chunk frees a place
		}
		if p.next == len(p.results) {
			return false, nil
		}
		ch := <-p.results[p.next]
		p.next++
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
