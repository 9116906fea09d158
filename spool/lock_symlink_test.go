package spool_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stenod/stenod/spool"
)

// TestSymlinkedDirRefused: a writer refuses a spool directory that is a
// symbolic link (ErrSymlink) and writes nothing where it points; a reader
// may still follow it.
func TestSymlinkedDirRefused(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "spool")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if sp, err := spool.Open(testConfig(link), nil); !errors.Is(err, spool.ErrSymlink) {
		if err == nil {
			sp.Close()
		}
		t.Fatalf("writer on a symlinked directory: %v, want ErrSymlink", err)
	}
	if ents, err := os.ReadDir(real); err != nil || len(ents) != 0 {
		t.Errorf("the link's target holds %v (%v), want nothing", ents, err)
	}
	ro := testConfig(link)
	ro.ReadOnly = true
	sp := open(t, ro)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}
