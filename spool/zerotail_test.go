package spool

import (
	"os"
	"testing"

	"github.com/stenod/stenod/flow"
)

// TestZeroTailCutAtOpen: a crash can leave zero-filled blocks after the last
// record (delayed allocation); Open cuts them off and keeps every packet.
func TestZeroTailCutAtOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dirs = []string{dir}
	sp, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	var k flow.Key
	frame := make([]byte, 100)
	for i := range 10 {
		frame[20] = byte(i)
		flow.Parse(frame, &k)
		if err := w.Append(int64(1e18)+int64(i), 100, frame, &k); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	path, size := w.file.Path, w.written
	// The crash: no Close (so no index), and zeros up to the next block.
	if err := os.Truncate(path, (size+4095)&^4095); err != nil {
		t.Fatal(err)
	}
	sp2, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != size {
		t.Fatalf("after Open the file is %d bytes, want %d", st.Size(), size)
	}
	if fs := sp2.Files(); len(fs) != 1 || fs[0].Summary().Packets != 10 {
		t.Fatalf("after Open: %d files", len(fs))
	}
}
