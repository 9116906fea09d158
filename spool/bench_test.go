package spool

import (
	"bytes"
	"context"
	"testing"

	"github.com/stenod/stenod/internal/trafficgen"
)

// BenchmarkImport measures import's inner loop (read a record, parse its
// flow key, append it to the spool file, index it) on generated traffic.
// allocs/op must be 0: nothing is allocated per packet.
func BenchmarkImport(b *testing.B) {
	const n = 200_000
	var capture bytes.Buffer
	if err := trafficgen.WritePcap(&capture, 1, n); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Dirs = []string{b.TempDir()}
	sp, err := Open(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	w, err := sp.NewWriter("bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	data := capture.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)) / n)
	for i := 0; i < b.N; i += n {
		if _, err := Import(context.Background(), w, "gen", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}
}
