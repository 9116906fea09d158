package index

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// TestOpenRefusesImpossibleFiles: Open and ReadSummary refuse what cannot
// be an index before reading more than its header, and never follow a
// symbolic link or block on a FIFO.
func TestOpenRefusesImpossibleFiles(t *testing.T) {
	b, _, _ := buildRandom(t, 1, 5000, 100, true)
	b.SetVisible(1 << 30)
	data := b.Encode("eth0", "")
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
	}{
		{"sparse-100GB", func(t *testing.T, path string) {
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(f.Truncate(100<<30), f.Close()); err != nil {
				t.Fatal(err)
			}
		}},
		{"sparse-100GB-after-a-valid-header", func(t *testing.T, path string) {
			if err := os.WriteFile(path, data, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 100<<30); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, path string) {
			if err := os.WriteFile(path, data[:len(data)-1], 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"header-only", func(t *testing.T, path string) {
			if err := os.WriteFile(path, data[:headerSize], 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o750); err != nil {
				t.Fatal(err)
			}
		}},
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink-to-a-valid-index", func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "target.idx")
			if err := os.WriteFile(target, data, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.idx")
			tc.make(t, path)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			_, err := Open(path)
			_, serr := ReadSummary(path)
			runtime.ReadMemStats(&m1)
			if !errors.Is(err, ErrCorrupt) || !errors.Is(serr, ErrCorrupt) {
				t.Fatalf("Open: %v; ReadSummary: %v; want ErrCorrupt", err, serr)
			}
			if n := m1.TotalAlloc - m0.TotalAlloc; n > 1<<20 {
				t.Fatalf("allocated %d bytes to refuse it", n)
			}
		})
	}
	t.Run("limit", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.idx")
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenLimit(path, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenLimit(path, int64(len(data))-1); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("OpenLimit below the size: %v", err)
		}
	})
}

// TestSkipMakesHoleBlock: Skip ends the block before a damaged region with
// a hole block that overlaps no time range, and the next packet starts a
// block of its own; a sealed index keeps them.
func TestSkipMakesHoleBlock(t *testing.T) {
	b := NewBuilder(0)
	// AddBatch with named fields, so that the test does not depend on
	// Add's arguments.
	b.AddBatch([]Entry{{Off: 24, TS: 100, WireLen: 60}, {Off: 100, TS: 200, WireLen: 60}})
	b.Skip(176)
	b.AddBatch([]Entry{{Off: 500, TS: 300, WireLen: 60}})
	b.SetVisible(576)
	want := []Block{{24, 100, 200}, {176, math.MaxInt64, math.MinInt64}, {500, 300, 300}}
	r, err := Decode(b.Encode("", ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []View{b, r} {
		got := v.Blocks()
		if len(got) != len(want) {
			t.Fatalf("blocks %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("blocks %v, want %v", got, want)
			}
		}
	}
}
