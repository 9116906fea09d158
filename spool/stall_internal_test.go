package spool

import (
	"sync"
	"testing"
	"time"
)

// TestStallCounter: a Writer's waits shorter than StallMin are not stalls;
// the others are counted, summed and the longest kept, also when added
// from several goroutines while another reads.
func TestStallCounter(t *testing.T) {
	w := &Writer{}
	w.stalled(StallMin / 2)
	if got := w.Stalls(); got != (Stalls{}) {
		t.Fatalf("a wait under StallMin counted: %+v", got)
	}
	s := &w.stalls
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				s.Add(StallMin + time.Duration(i*100+j)*time.Microsecond)
				_ = w.Stalls()
			}
		}()
	}
	wg.Wait()
	got := w.Stalls()
	var total time.Duration
	for i := range 800 {
		total += StallMin + time.Duration(i)*time.Microsecond
	}
	want := Stalls{Count: 800, Total: total, Max: StallMin + 799*time.Microsecond}
	if got != want {
		t.Errorf("stalls %+v, want %+v", got, want)
	}
}
