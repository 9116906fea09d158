package spool

import (
	"sync/atomic"
	"time"
)

// StallMin is the shortest wait for the disk a Writer counts as a stall.
// A flush's write through the page cache takes microseconds; a wait of a
// millisecond or more means the device (or the kernel's writeback
// throttling) held the writer back, while packets queued in the capture's
// ring or UMEM.
const StallMin = time.Millisecond

// Stalls are the waits of a Writer's caller for the disk of StallMin or
// longer, in Append (a direct write still in flight when the next buffer
// is full) or Flush (its synchronous write).
type Stalls struct {
	Count uint64
	Total time.Duration
	// Max is the longest: at the packet rate, how many packets the
	// capture's ring or UMEM must hold meanwhile.
	Max time.Duration
}

// StallCounter adds up waits: how many, how long in all, and the longest.
// One goroutine may Add while others Load; the capture's AF_XDP receive
// loops count their waits for a free batch with one too.
type StallCounter struct {
	count      atomic.Uint64
	total, max atomic.Int64
}

// Add counts a wait of d.
func (s *StallCounter) Add(d time.Duration) {
	s.count.Add(1)
	s.total.Add(int64(d))
	for {
		m := s.max.Load()
		if int64(d) <= m || s.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Load returns the waits counted so far.
func (s *StallCounter) Load() Stalls {
	return Stalls{Count: s.count.Load(), Total: time.Duration(s.total.Load()), Max: time.Duration(s.max.Load())}
}

// stalled counts a wait of d for the disk if it is a stall.
func (w *Writer) stalled(d time.Duration) {
	if d >= StallMin {
		w.stalls.Add(d)
	}
}

// Stalls returns the writer's stalls so far. It may be called from any
// goroutine, also after Close.
func (w *Writer) Stalls() Stalls { return w.stalls.Load() }
