package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stenod/stenod/internal/trafficgen"
)

// mappedSpool writes files sealed files of generated traffic (packets
// each) into a new spool, closes it and opens it again, so that no index is
// cached yet.
func mappedSpool(t *testing.T, cfg Config, files, packets int) *Spool {
	t.Helper()
	sp, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		var capture bytes.Buffer
		if err := trafficgen.WritePcap(&capture, uint64(i+1), packets); err != nil {
			t.Fatal(err)
		}
		if _, err := Import(context.Background(), w, "gen", &capture); err != nil {
			t.Fatal(err)
		}
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(w.Close(), sp.Close()); err != nil {
		t.Fatal(err)
	}
	if sp, err = Open(cfg, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	})
	return sp
}

func mappedConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Dirs = []string{t.TempDir()}
	cfg.MinFreePercent = 0
	return cfg
}

func snapshot(t *testing.T, sp *Spool) []*Handle {
	t.Helper()
	hs, err := sp.Snapshot(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// sameAsPread requires that h reads the whole data its index covers as
// pread does.
func sameAsPread(t *testing.T, h *Handle) {
	t.Helper()
	end := h.View.Summary().DataEnd
	got, want := make([]byte, end), make([]byte, end)
	if _, err := h.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PCAP.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: mapped bytes differ from the file's", h.File.Path)
	}
}

// TestMappedSurvivesDeletion: the budget deletes a file while a query reads
// it through its mapping; the query reads on, and the last handle to close
// unmaps the file.
func TestMappedSurvivesDeletion(t *testing.T) {
	sp := mappedSpool(t, mappedConfig(t), 1, 3000)
	hs := snapshot(t, sp)
	h := hs[0]
	if !h.Mapped() {
		t.Fatal("a sealed file with a cached index is not mapped")
	}
	hs2 := snapshot(t, sp)
	m := h.m
	if hs2[0].m != m || m.refs.Load() != 3 {
		t.Fatalf("second snapshot: mapping %p (want %p), %d references (want 3: cache and two handles)", hs2[0].m, m, m.refs.Load())
	}
	if err := CloseAll(hs2); err != nil {
		t.Fatal(err)
	}
	f := h.File
	f.ds.mu.Lock()
	freed := sp.remove(f.ds, f, true)
	f.ds.mu.Unlock()
	if _, err := os.Stat(f.Path); freed == 0 || err == nil {
		t.Fatalf("freed %d; %s still there", freed, f.Path)
	}
	if m.refs.Load() != 1 || m.data == nil {
		t.Fatalf("after deletion: %d references (want the handle's), data %v", m.refs.Load(), m.data != nil)
	}
	sameAsPread(t, h)
	if hs := snapshot(t, sp); len(hs) != 0 {
		t.Fatalf("a deleted file in a new snapshot: %v", hs)
	}
	if err := CloseAll(hs); err != nil {
		t.Fatal(err)
	}
	if m.refs.Load() != 0 || m.data != nil {
		t.Fatalf("after the last close: %d references, still mapped %v", m.refs.Load(), m.data != nil)
	}
}

// TestMappedSurvivesEviction: a file's index leaves the cache while a query
// reads it; the handle keeps the mapping, the cache's reference goes, and
// the next snapshot maps the file again.
func TestMappedSurvivesEviction(t *testing.T) {
	cfg := mappedConfig(t)
	cfg.MaxCachedIndexes = 1
	sp := mappedSpool(t, cfg, 3, 2000)
	hs := snapshot(t, sp)
	if len(hs) != 3 {
		t.Fatalf("%d handles, want 3", len(hs))
	}
	mapped := 0
	for _, h := range hs {
		if h.Mapped() {
			mapped++
		}
	}
	// Each index is cached and then evicted by the next one's load, in
	// whatever order they finish; the files mapped while cached stay mapped
	// for their handles.
	if mapped == 0 {
		t.Fatal("no file mapped")
	}
	for _, h := range hs {
		sameAsPread(t, h)
	}
	var ms []*mapping
	for _, h := range hs {
		if h.m != nil {
			ms = append(ms, h.m)
		}
	}
	if err := CloseAll(hs); err != nil {
		t.Fatal(err)
	}
	sp.unmapping.Wait()
	live := 0
	for _, m := range ms {
		if m.data != nil {
			live++
			if m.refs.Load() != 1 {
				t.Errorf("a mapping still there has %d references, want the cache's", m.refs.Load())
			}
		}
	}
	if live > cfg.MaxCachedIndexes {
		t.Fatalf("%d mappings left after the handles closed, want at most %d (the cache's)", live, cfg.MaxCachedIndexes)
	}
}

// TestMappedShortFile: a sealed file shorter than its index says is not
// mapped, and reading past its end fails as pread does.
func TestMappedShortFile(t *testing.T) {
	sp := mappedSpool(t, mappedConfig(t), 1, 2000)
	f := sp.Files()[0]
	end := f.Summary().DataEnd
	if err := os.Truncate(f.Path, end/2); err != nil {
		t.Fatal(err)
	}
	hs := snapshot(t, sp)
	defer func() {
		// Its size is what it was when the handle was taken: no error.
		if err := CloseAll(hs); err != nil {
			t.Error(err)
		}
	}()
	if hs[0].Mapped() {
		t.Fatal("a file shorter than its index is mapped")
	}
	buf := make([]byte, 64)
	if _, err := hs[0].ReadAt(buf, end-64); !errors.Is(err, io.EOF) {
		t.Fatalf("read past the end: %v, want EOF", err)
	}
}

// TestMappedTruncatedUnderReader: a file truncated after it was mapped makes
// reads fail with an error, not SIGBUS.
func TestMappedTruncatedUnderReader(t *testing.T) {
	sp := mappedSpool(t, mappedConfig(t), 1, 20000)
	hs := snapshot(t, sp)
	h := hs[0]
	if !h.Mapped() {
		t.Fatal("not mapped")
	}
	end := h.View.Summary().DataEnd
	if end < 3*int64(os.Getpagesize()) {
		t.Fatalf("file of %d bytes too small for the test", end)
	}
	if err := os.Truncate(h.File.Path, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_, err := h.ReadAt(buf, end-100)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, errMappedFault) {
		t.Fatalf("read of a truncated mapped file: %v", err)
	}
	// The goroutine goes on as before: a fault elsewhere is not ours to
	// turn into an error.
	if _, err := h.ReadAt(buf, end-100); err == nil {
		t.Fatal("second read of a truncated mapped file succeeded")
	}
	// Bytes of the last page before the new end read as zeros, not as a
	// fault: readers find them out by the records' checksums, and Close
	// lets the mapping go as usual.
	if err := CloseAll(hs); err != nil {
		t.Fatalf("close after truncation: %v", err)
	}
}

// TestMappedConcurrentQueriesAndDeletion: queries snapshot and read the
// files while the cache evicts their indexes and the budget deletes them;
// every read sees the file's bytes, and at the end nothing is mapped.
func TestMappedConcurrentQueriesAndDeletion(t *testing.T) {
	cfg := mappedConfig(t)
	cfg.MaxCachedIndexes = 2
	sp := mappedSpool(t, cfg, 6, 1500)
	want := map[string][]byte{}
	for _, f := range sp.Files() {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		want[f.Path] = data[:f.Summary().DataEnd]
	}
	var mu sync.Mutex
	var seen []*mapping
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				hs, err := sp.Snapshot(math.MinInt64, math.MaxInt64)
				if err != nil {
					t.Error(err)
					return
				}
				for _, h := range hs {
					got := make([]byte, h.View.Summary().DataEnd)
					if _, err := h.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[h.File.Path]) {
						t.Errorf("%s (mapped %v): read %v, bytes equal %v", h.File.Path, h.Mapped(), err, bytes.Equal(got, want[h.File.Path]))
					}
					if h.m != nil {
						mu.Lock()
						seen = append(seen, h.m)
						mu.Unlock()
					}
				}
				if err := CloseAll(hs); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for _, f := range sp.Files() {
		time.Sleep(5 * time.Millisecond)
		f.ds.mu.Lock()
		sp.remove(f.ds, f, true)
		f.ds.mu.Unlock()
	}
	close(done)
	wg.Wait()
	sp.unmapping.Wait()
	if len(seen) == 0 {
		t.Fatal("no query read through a mapping")
	}
	for _, m := range seen {
		if m.data != nil || m.refs.Load() != 0 {
			t.Fatalf("a mapping of a deleted file is left: %d references", m.refs.Load())
		}
	}
}
