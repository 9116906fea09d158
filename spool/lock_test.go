package spool_test

import (
	"errors"
	"testing"

	"github.com/stenod/stenod/spool"
)

// TestSecondWriterRefused: a directory a writer holds is refused to a
// second writer, naming the directory, without touching it; readers may
// open it meanwhile; once the writer closes, the next one gets it.
func TestSecondWriterRefused(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	sp := open(t, testConfig(dir))

	_, err := spool.Open(testConfig(other, dir), nil)
	if !errors.Is(err, spool.ErrInUse) {
		t.Fatalf("second writer: %v, want ErrInUse", err)
	}
	t.Log(err)
	// The refused Open released the lock it had taken on the other
	// directory.
	sp2 := open(t, testConfig(other))
	if err := sp2.Close(); err != nil {
		t.Fatal(err)
	}

	ro := testConfig(dir)
	ro.ReadOnly = true
	rsp := open(t, ro)
	if err := rsp.Close(); err != nil {
		t.Fatal(err)
	}

	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp = open(t, testConfig(dir))
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}
