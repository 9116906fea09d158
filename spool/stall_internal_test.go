package spool

import (
	"sync"
	"testing"
	"time"
)

// TestStallCounter: waits shorter than StallMin are not stalls; the others
// are counted, summed and the longest kept, also when added from several
// goroutines while another reads.
func TestStallCounter(t *testing.T) {
	var s stallCounter
	s.add(StallMin / 2)
	if got := s.load(); got != (Stalls{}) {
		t.Fatalf("a wait under StallMin counted: %+v", got)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				s.add(StallMin + time.Duration(i*100+j)*time.Microsecond)
				_ = s.load()
			}
		}()
	}
	wg.Wait()
	got := s.load()
	var total time.Duration
	for i := range 800 {
		total += StallMin + time.Duration(i)*time.Microsecond
	}
	want := Stalls{Count: 800, Total: total, Max: StallMin + 799*time.Microsecond}
	if got != want {
		t.Errorf("stalls %+v, want %+v", got, want)
	}
}
