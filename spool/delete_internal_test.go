package spool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stenod/stenod/internal/trafficgen"
)

// TestViewOfFileDeletedBeforeIndexLoad: a query has opened a file's pcap
// when the budget deletes the pair, before the query loads the index. The
// query gets a whole index, rebuilt from its descriptor, and no index is
// written back next to the deleted pcap.
func TestViewOfFileDeletedBeforeIndexLoad(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dirs = []string{dir}
	cfg.MinFreePercent = 0
	sp, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	var capture bytes.Buffer
	if err := trafficgen.WritePcap(&capture, 1, 5000); err != nil {
		t.Fatal(err)
	}
	res, err := Import(context.Background(), w, "gen", &capture)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp, err = Open(cfg, nil) // nothing cached
	if err != nil {
		t.Fatal(err)
	}
	f := sp.Files()[0]
	pcap, err := os.Open(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer pcap.Close()
	f.ds.mu.Lock()
	freed := sp.remove(f.ds, f, true)
	f.ds.mu.Unlock()
	if freed == 0 || len(sp.Files()) != 0 {
		t.Fatalf("freed %d; files %v", freed, sp.Files())
	}
	v, _, err := sp.view(f, pcap)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Summary().Packets; got != uint64(res.Packets) {
		t.Fatalf("rebuilt index has %d packets, want %d", got, res.Packets)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Fatalf("files after deletion and rebuild: %v", m)
	}
	if c := sp.Counters(); c.FilesDeleted != 1 || c.PacketsDeleted != uint64(res.Packets) || c.BytesDeleted != uint64(freed) {
		t.Fatalf("counters %+v", c)
	}
}
