//go:build linux

package main

import (
	"testing"
)

func TestMeminfo(t *testing.T) {
	m, err := meminfo()
	if err != nil {
		t.Fatal(err)
	}
	// Bytes, not the file's kB: MemTotal of any machine that runs this
	// is above 64 MiB.
	if m["MemTotal"] < 64<<20 || m["MemFree"] == 0 || m["MemFree"] > m["MemTotal"] {
		t.Errorf("MemTotal %d, MemFree %d", m["MemTotal"], m["MemFree"])
	}
	if _, ok := m["Dirty"]; !ok {
		t.Error("no Dirty")
	}
}

func TestTouchFreeMemoryKeepsMargin(t *testing.T) {
	m, err := meminfo()
	if err != nil {
		t.Fatal(err)
	}
	// A margin above what is free touches nothing.
	n, _, err := touchFreeMemory(m["MemTotal"])
	if err != nil || n != 0 {
		t.Fatalf("touched %d bytes, %v; want none", n, err)
	}
	// One chunk: 1 GiB over the margin.
	if m["MemFree"] < 3<<30 {
		t.Skip("less than 3 GiB free")
	}
	n, _, err = touchFreeMemory(m["MemFree"] - 3<<29)
	if err != nil || n != 1<<30 {
		t.Fatalf("touched %d bytes, %v; want 1 GiB", n, err)
	}
}
