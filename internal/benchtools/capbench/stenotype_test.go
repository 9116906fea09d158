//go:build linux

package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeBlocks writes a stenotype packet file of whole blocks, each with
// TPACKET_V3's version and the given packet count.
func writeBlocks(t *testing.T, path string, version uint32, counts ...uint32) {
	t.Helper()
	b := make([]byte, len(counts)*stenotypeBlockSize)
	for i, n := range counts {
		blk := b[i*stenotypeBlockSize:]
		binary.LittleEndian.PutUint32(blk[0:], version)
		binary.LittleEndian.PutUint32(blk[4:], 48)  // offset_to_priv
		binary.LittleEndian.PutUint32(blk[8:], 1)   // block_status: TP_STATUS_USER
		binary.LittleEndian.PutUint32(blk[12:], n)  // num_pkts
		binary.LittleEndian.PutUint32(blk[16:], 48) // offset_to_first_pkt
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestStenotypePackets(t *testing.T) {
	dir := t.TempDir()
	writeBlocks(t, filepath.Join(dir, "1796422536004029"), 2, 9000, 8990)
	// The file being written is hidden until stenotype closes it.
	writeBlocks(t, filepath.Join(dir, ".1796422596004029"), 2, 17)
	n, err := stenotypePackets(dir)
	if err != nil || n != 9000+8990+17 {
		t.Fatalf("stenotypePackets = %d, %v; want %d", n, err, 9000+8990+17)
	}

	bad := filepath.Join(dir, "1796422656004029")
	writeBlocks(t, bad, 2, 1)
	f, err := os.OpenFile(bad, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, stenotypeBlockSize)
	binary.LittleEndian.PutUint32(blk, 1) // TPACKET_V2's version
	if _, err := f.Write(blk); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = stenotypePackets(dir)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "block at 1048576") {
		t.Fatalf("a block that is not TPACKET_V3: err = %v, want one naming %s and the block's offset", err, bad)
	}
}

func TestThreadCPUs(t *testing.T) {
	cpus, err := threadCPUs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cpus[os.Getpid()]; !ok || len(cpus) < 2 {
		t.Fatalf("threadCPUs of this test: %v, want the main thread and the runtime's others", cpus)
	}
}
