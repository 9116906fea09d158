package testutil

import (
	"errors"
	"testing"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/spool"
)

// HeldSpool opens a spool of small files (256 KiB) in a new temporary
// directory, with a budget of maxFiles files, no free-space floor, and a
// held-space share so small that any deleted file a query holds is too
// much; writes generated traffic (seed) to its stream eth0-q0 until it
// holds maxFiles files, and flushes. The writer and the spool are closed
// when the test ends. Tests of queries cut off for capture start from it:
// the next packets make the budget delete the oldest file.
func HeldSpool(tb testing.TB, maxFiles int, seed uint64) (*spool.Spool, *spool.Writer, *trafficgen.Generator) {
	tb.Helper()
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{tb.TempDir()}
	cfg.RotateSize = 256 << 10
	cfg.WriteBuffer = 16 << 10
	cfg.MinFreePercent = 0
	cfg.MaxFiles = maxFiles
	cfg.MaxHeldPercent = 1e-9
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		tb.Fatal(errors.Join(err, sp.Close()))
	}
	tb.Cleanup(func() {
		if err := errors.Join(w.Close(), sp.Close()); err != nil {
			tb.Error(err)
		}
	})
	gen := trafficgen.New(seed, 100)
	var key flow.Key
	for len(sp.Files()) < maxFiles {
		frame, ts := gen.Next()
		flow.Parse(frame, &key)
		if err := w.Append(ts, len(frame), frame, &key); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return sp, w, gen
}
