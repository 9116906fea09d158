package spool_test

import (
	"os"
	"testing"

	"github.com/stenod/stenod/spool"
)

// TestZeroTailCutAtOpen: a crash can leave zero-filled blocks after the last
// record (delayed allocation); Open cuts them off and keeps every packet.
func TestZeroTailCutAtOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(7)
	g.must(t, w, 10)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// The crash: no Close (so no index), and zeros up to the next block.
	spool.Crash(sp)
	files := pcaps(t, dir)
	if len(files) != 1 {
		t.Fatalf("%d pcap files", len(files))
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	if err := os.Truncate(files[0], (size+4095)&^4095); err != nil {
		t.Fatal(err)
	}
	sp2 := open(t, cfg)
	if st, _ := os.Stat(files[0]); st.Size() != size {
		t.Fatalf("after Open the file is %d bytes, want %d", st.Size(), size)
	}
	sameAnswer(t, "after the cut", answer(t, sp2, everything), g.sent)
}
