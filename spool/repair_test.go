package spool_test

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// Each test leaves one damaged state in a spool directory, next to a
// healthy sealed file of another stream, and checks that Open repairs it
// and that a query returns exactly the whole records written before the
// damage, each once.

// sealed writes n packets of a stream and closes its writer and spool.
func sealed(t *testing.T, dir, stream string, seed uint64, n int) []pkt {
	t.Helper()
	sp := open(t, testConfig(dir))
	w, err := sp.NewWriter(stream, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(seed)
	g.must(t, w, n)
	closeAll(t, w, sp)
	return g.sent
}

// crashed writes n packets of a stream and flushes them, then "dies" once
// its sums journal has caught up: the writer is never closed, so the file
// has no sealed index. It returns the file's path and the packets.
func crashed(t *testing.T, dir, stream string, seed uint64, n int) (string, []pkt) {
	t.Helper()
	sp := open(t, testConfig(dir))
	w, err := sp.NewWriter(stream, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(seed)
	g.must(t, w, n)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	spool.CatchUpJournal(w)
	spool.Crash(sp)
	m := glob(t, dir, "*"+stream+".pcap")
	if len(m) != 1 {
		t.Fatalf("want one file of %s, have %v", stream, m)
	}
	return m[0], g.sent
}

// sorted orders packets so that answers compare as multisets: the engine
// merges two streams whose timestamps interleave.
func sorted(ps ...[]pkt) []pkt {
	all := slices.Concat(ps...)
	slices.SortFunc(all, func(a, b pkt) int {
		return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.sum, b.sum), cmp.Compare(a.origLen, b.origLen))
	})
	return all
}

// checkRepaired opens dir and checks the answer to everything, then opens
// it again: a second Open finds nothing to repair and answers the same.
func checkRepaired(t *testing.T, dir string, want []pkt) *spool.Spool {
	t.Helper()
	var sp *spool.Spool
	for range 2 {
		sp = open(t, testConfig(dir))
		sameAnswer(t, "after repair", sorted(answer(t, sp, everything)), sorted(want))
		for _, p := range pcaps(t, dir) {
			idx := strings.TrimSuffix(p, ".pcap") + ".idx"
			r, err := index.Open(idx)
			if err != nil {
				t.Fatalf("after repair: %v", err)
			}
			if st, _ := os.Stat(p); st.Size() != r.Summary().DataEnd {
				t.Fatalf("%s: %d bytes, index covers %d", p, st.Size(), r.Summary().DataEnd)
			}
		}
		if err := sp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return sp
}

// recordOffset returns the offset of packet i of a file holding ps.
func recordOffset(ps []pkt, i int) int64 {
	off := int64(pcapio.PcapHeaderSize)
	for _, p := range ps[:i] {
		off += pcapio.RecordHeaderSize + int64(p.capLen)
	}
	return off
}

func TestRepairTornLastRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(last pkt) int64 // bytes of the last record kept
	}{
		{"mid-header", func(pkt) int64 { return 7 }},
		{"mid-data", func(p pkt) int64 { return pcapio.RecordHeaderSize + int64(p.capLen)/2 }},
		{"one-byte-short", func(p pkt) int64 { return pcapio.RecordHeaderSize + int64(p.capLen) - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ok := sealed(t, dir, "ok-q0", 1, 500)
			path, sent := crashed(t, dir, "eth1-q0", 2, 300)
			last := len(sent) - 1
			whole := recordOffset(sent, last)
			if err := os.Truncate(path, whole+tc.cut(sent[last])); err != nil {
				t.Fatal(err)
			}
			checkRepaired(t, dir, append(ok, sent[:last]...))
			if st, _ := os.Stat(path); st.Size() != whole {
				t.Fatalf("torn record not cut off: %d bytes, want %d", st.Size(), whole)
			}
		})
	}
}

func TestRepairPcapWithoutIndex(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	path, sent := crashed(t, dir, "eth1-q0", 2, 300)
	if exists(strings.TrimSuffix(path, ".pcap") + ".idx") {
		t.Fatal("an active file has an index")
	}
	checkRepaired(t, dir, append(ok, sent...))
}

func TestRepairCorruptIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(size int) int
	}{
		{"body", func(size int) int { return size / 2 }}, // found when loaded, by the checksum
		{"magic", func(int) int { return 3 }},            // found at Open, from the header
		{"checksum", func(size int) int { return size - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ok := sealed(t, dir, "ok-q0", 1, 500)
			sent := sealed(t, dir, "eth1-q0", 2, 300)
			idx := glob(t, dir, "*eth1-q0.idx")[0]
			data, err := os.ReadFile(idx)
			if err != nil {
				t.Fatal(err)
			}
			data[tc.at(len(data))] ^= 0x10
			if err := os.WriteFile(idx, data, 0o640); err != nil {
				t.Fatal(err)
			}
			checkRepaired(t, dir, append(ok, sent...))
		})
	}
}

func TestRepairIndexWithoutPcap(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	sealed(t, dir, "eth1-q0", 2, 300)
	p := glob(t, dir, "*eth1-q0.pcap")[0]
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, ok)
	if m := glob(t, dir, "*eth1-q0*"); len(m) != 0 {
		t.Fatalf("index without pcap survived Open: %v", m)
	}
}

func TestRepairHiddenTemp(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	tmp := filepath.Join(dir, ".20260101T000000.000000000Z-eth1-q0.idx.tmp")
	if err := os.WriteFile(tmp, []byte("STENODIX half"), 0o640); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, ok)
	if exists(tmp) {
		t.Fatal("temporary file survived Open")
	}
}

// TestRepairPartialHeader: the process died before a whole file header
// reached the disk. Nothing was stored in the file; it goes.
func TestRepairPartialHeader(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	path := filepath.Join(dir, "20260101T000001.000000000Z-eth1-q0.pcap")
	hdr := pcapio.AppendPcapHeader(nil, 65535, pcapio.LinkTypeEthernet)
	if err := os.WriteFile(path, hdr[:10], 0o640); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, ok)
	if exists(path) {
		t.Fatal("pcap with a partial header survived Open")
	}
}

func TestRepairEmptyPcap(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	path := filepath.Join(dir, "20260101T000001.000000000Z-eth1-q0.pcap")
	if err := os.WriteFile(path, pcapio.AppendPcapHeader(nil, 65535, pcapio.LinkTypeEthernet), 0o640); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, ok)
	if exists(path) {
		t.Fatal("pcap without packets survived Open")
	}
}

// TestRepairCrashBeforeIndexRename: the seal fsynced the pcap and was
// writing the index to its hidden temporary file when the process died.
func TestRepairCrashBeforeIndexRename(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	sent := sealed(t, dir, "eth1-q0", 2, 300)
	idx := glob(t, dir, "*eth1-q0.idx")[0]
	data, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(idx)+".tmp")
	if err := errors.Join(os.WriteFile(tmp, data[:len(data)/2], 0o640), os.Remove(idx)); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, append(ok, sent...))
	if exists(tmp) {
		t.Fatal("temporary index survived Open")
	}
}
