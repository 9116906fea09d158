package spool

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
)

// BenchmarkImport measures import's inner loop (read a record, parse its
// flow key, append it to the spool file, index it) on generated traffic,
// into a spool in the test's temporary directory (direct writes where its
// file system takes them). One op is one packet: the capture imported is
// b.N packets long, the generated records over and over. allocs/op must be
// 0: nothing is allocated per packet.
func BenchmarkImport(b *testing.B) {
	const n = 200_000
	var capture bytes.Buffer
	if err := trafficgen.WritePcap(&capture, 1, n); err != nil {
		b.Fatal(err)
	}
	data := capture.Bytes()
	// The offset of every record, to cut the last round short.
	rd, err := pcapio.NewReader(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	offs := make([]int64, 0, n+1)
	var p pcapio.Packet
	for rd.Next(&p) == nil {
		offs = append(offs, p.Offset)
	}
	offs = append(offs, int64(len(data)))
	if len(offs) != n+1 {
		b.Fatalf("%d records generated, want %d", len(offs)-1, n)
	}
	hdr, recs := data[:offs[0]], data[offs[0]:]
	parts := []io.Reader{bytes.NewReader(hdr)}
	for range b.N / n {
		parts = append(parts, bytes.NewReader(recs))
	}
	parts = append(parts, bytes.NewReader(data[offs[0]:offs[b.N%n]]))

	cfg := DefaultConfig()
	cfg.Dirs = []string{b.TempDir()}
	cfg.DirectIO = true // as stenod import
	sp, err := Open(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	w, err := sp.NewWriter("bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(recs)) / n)
	b.ResetTimer()
	res, err := Import(context.Background(), w, "gen", io.MultiReader(parts...))
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if res.Packets != int64(b.N) {
		b.Fatalf("imported %d packets, want %d", res.Packets, b.N)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}
}
