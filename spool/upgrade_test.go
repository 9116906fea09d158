package spool_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/stenod/stenod/index"
)

// indexV1 turns a current index into the version 1 index of the same
// packets (only its header matters: version 1 is never read past it): a 96-byte header (its CRC-32C at 92), no record checksums.
func indexV1(t *testing.T, v2 []byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	iface := uint64(le.Uint16(v2[80:]))
	rest := iface + uint64(le.Uint32(v2[60:]))*24 + le.Uint64(v2[64:]) + le.Uint64(v2[72:])
	h := make([]byte, 96)
	copy(h, v2[:82])
	le.PutUint32(h[8:], 1)
	le.PutUint32(h[92:], crc32.Checksum(h[:92], castagnoli))
	out := append(h, v2[112:112+rest]...)
	return le.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// TestUpgradeFromIndexV1: a spool of version 1 indexes (an upgraded
// sensor's) opens without being re-indexed: start-up reads their
// summaries. A query rebuilds the index it needs, in the current version, and
// answers the same.
func TestUpgradeFromIndexV1(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	sp := open(t, cfg)
	w, err := sp.NewWriter("eth0-q0", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	newGen(7).must(t, w, 5000)
	closeAll(t, w, sp)
	sp = open(t, cfg)
	want := answer(t, sp, "after 1970-01-01T00:00:00Z")
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idx) < 2 {
		t.Fatalf("only %d index files", len(idx))
	}
	v1 := map[string][]byte{}
	for _, p := range idx {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		v1[p] = indexV1(t, data)
		if err := os.WriteFile(p, v1[p], 0o640); err != nil {
			t.Fatal(err)
		}
	}
	sp = open(t, cfg)
	defer sp.Close()
	for _, p := range idx {
		if data, _ := os.ReadFile(p); !bytes.Equal(data, v1[p]) {
			t.Fatalf("%s rewritten at start: the spool was re-indexed", p)
		}
	}
	sameAnswer(t, "after the upgrade", answer(t, sp, "after 1970-01-01T00:00:00Z"), want)
	for _, p := range idx {
		data, _ := os.ReadFile(p)
		if v := binary.LittleEndian.Uint32(data[8:]); v != index.FormatVersion {
			t.Fatalf("%s: version %d after a query, want %d", p, v, index.FormatVersion)
		}
	}
	if c := sp.Counters(); c.FilesRepaired != 0 || c.DamagedRegions != 0 || c.FilesQuarantined != 0 {
		t.Fatalf("an upgrade counted as damage: %+v", c)
	}
}
