package spool_test

import (
	"math"
	"sync"
	"testing"

	"github.com/stenod/stenod/spool"
)

// Snapshots taken while others evict indexes from a small cache still map
// every sealed file: a file whose index other queries evicted between this
// snapshot loading it and mapping the file gets a mapping of the handle's
// own (a race seen once in several hundred engine test runs, and every
// time with a cache this small).
func TestSnapshotsMapUnderEviction(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RotateSize = 64 << 10
	cfg.MaxCachedIndexes = 3
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	newGen(5).must(t, w, 6000)
	closeAll(t, w, sp)
	sp = open(t, cfg)
	defer sp.Close()
	files := len(sp.Files())
	if files < 20 {
		t.Fatalf("only %d files", files)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				hs, err := sp.Snapshot(math.MinInt64, math.MaxInt64)
				if err != nil {
					t.Error(err)
					return
				}
				mapped := 0
				for _, h := range hs {
					if h.Mapped() {
						mapped++
					}
				}
				if err := spool.CloseAll(hs); err != nil {
					t.Error(err)
				}
				if mapped != files {
					t.Errorf("%d of %d sealed files mapped", mapped, files)
					return
				}
			}
		})
	}
	wg.Wait()
}
