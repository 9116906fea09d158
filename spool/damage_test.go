package spool_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/spool"
)

// The tests here damage a spool file the way disks, power cuts and people
// do, and check that Open keeps every intact packet before and after the
// damage, readable byte for byte, loses nothing outside it, and counts
// what it skipped.

// damageCase damages the pcap at path, holding the packets sent, and
// returns the byte range [lo, hi) it damaged (lo == hi: only the file
// header, or nothing the records occupy).
type damageCase struct {
	name   string
	damage func(t *testing.T, data []byte, sent []pkt) (lo, hi int64)
	// regions: damaged regions the repair must report.
	regions uint64
	// check, if set, checks the answer instead of the default rule.
	check func(t *testing.T, got, ok, sent []pkt)
}

// recordSpan returns the records of sent that overlap [lo, hi), as packet
// indexes [first, last], and the byte range they take.
func recordSpan(sent []pkt, lo, hi int64) (first, last int, from, to int64) {
	first, last = -1, -1
	for i := range sent {
		s := recordOffset(sent, i)
		e := s + pcapio.RecordHeaderSize + int64(sent[i].capLen)
		if e > lo && s < hi {
			if first < 0 {
				first, from = i, s
			}
			last, to = i, e
		}
	}
	return first, last, from, to
}

func TestRepairResync(t *testing.T) {
	zeros := func(at func(data []byte) int64, n int64) func(*testing.T, []byte, []pkt) (int64, int64) {
		return func(t *testing.T, data []byte, _ []pkt) (int64, int64) {
			lo := at(data)
			clear(data[lo : lo+n])
			return lo, lo + n
		}
	}
	setCapLen := func(i int, f func(c uint32) uint32) func(*testing.T, []byte, []pkt) (int64, int64) {
		return func(t *testing.T, data []byte, sent []pkt) (int64, int64) {
			off := recordOffset(sent, i)
			h := data[off+8:]
			binary.LittleEndian.PutUint32(h, f(binary.LittleEndian.Uint32(h)))
			return off + 8, off + 12
		}
	}
	for _, tc := range []damageCase{
		{name: "flipped-magic-bit", damage: func(t *testing.T, data []byte, _ []pkt) (int64, int64) {
			data[1] ^= 0x04
			return 0, 0
		}},
		{name: "flipped-version-and-linktype-bits", damage: func(t *testing.T, data []byte, _ []pkt) (int64, int64) {
			data[4] ^= 0x10
			data[20] ^= 0x02
			return 0, 0
		}},
		{name: "4KiB-zero-block", regions: 1, damage: zeros(func(data []byte) int64 { return int64(len(data)/2) &^ 4095 }, 4096)},
		{name: "odd-zero-block", regions: 1, damage: zeros(func(data []byte) int64 { return int64(len(data))/3 + 17 }, 1237)},
		{name: "zero-block-over-a-header", regions: 1, damage: func(t *testing.T, data []byte, sent []pkt) (int64, int64) {
			// Zeros from the middle of a record header: its lengths
			// read 0, which must not make a zero-length record.
			off := recordOffset(sent, 100) + 8
			clear(data[off : off+300])
			return off, off + 300
		}},
		{name: "zeros-over-a-timestamp", regions: 1, damage: func(t *testing.T, data []byte, sent []pkt) (int64, int64) {
			// A zero block ending inside a record header, after its
			// timestamp: the lengths survive, the time does not.
			off := recordOffset(sent, 150)
			clear(data[off-100 : off+8])
			return off - 100, off + 8
		}},
		{name: "bad-caplen", regions: 1, damage: setCapLen(120, func(uint32) uint32 { return 0x00f00000 })},
		{name: "caplen-raised", regions: 1, damage: setCapLen(120, func(c uint32) uint32 { return c + 200 })},
		{name: "caplen-far-too-large-for-the-file", regions: 1, damage: setCapLen(120, func(c uint32) uint32 { return c | 0x20000 })},
		{
			// A lowered captured length looks like a packet cut by the
			// snap length; only the misaligned record after it shows the
			// damage by its framing. The sums journal the writer keeps
			// beside the file tells the cut packet from the one written:
			// it is damage, never an answer.
			name: "caplen-lowered", regions: 2, damage: setCapLen(120, func(c uint32) uint32 { return c - 8 }),
			check: func(t *testing.T, got, ok, sent []pkt) {
				cut := sent[120]
				checkKept(t, got, sorted(ok, sent[:120], sent[121:]), 0)
				for _, p := range got {
					if p.ts == cut.ts {
						t.Fatalf("the cut packet %+v is among the answer's", p)
					}
				}
			},
		},
		// The record the garbage starts in keeps its framing; the sums
		// journal shows its tail is not what was written: a region of
		// its own before the garbage's.
		{name: "garbage-block", regions: 2, damage: func(t *testing.T, data []byte, _ []pkt) (int64, int64) {
			lo := int64(len(data)) / 2
			for i := range int64(3000) {
				data[lo+i] = byte(i*7 + 3)
			}
			return lo, lo + 3000
		}},
		{name: "two-regions", regions: 2, damage: func(t *testing.T, data []byte, sent []pkt) (int64, int64) {
			a := recordOffset(sent, 50)
			clear(data[a+3 : a+40])
			b := recordOffset(sent, 200)
			clear(data[b : b+100])
			return a + 3, b + 100
		}},
		{name: "first-record-header", regions: 1, damage: func(t *testing.T, data []byte, sent []pkt) (int64, int64) {
			binary.LittleEndian.PutUint32(data[24+8:], 0xffffffff)
			return 24 + 8, 24 + 12
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ok := sealed(t, dir, "ok-q0", 1, 500)
			path, sent := crashed(t, dir, "eth1-q0", 2, 300)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := tc.damage(t, data, sent)
			if err := os.WriteFile(path, data, 0o640); err != nil {
				t.Fatal(err)
			}
			// The intact packets: those whose records the damage left
			// alone.
			first, last, from, to := recordSpan(sent, lo, hi)
			intact := slices.Clone(sent)
			if first >= 0 {
				intact = slices.Concat(sent[:first], sent[last+1:])
			}

			for round := range 2 {
				sp := open(t, testConfig(dir))
				got := answer(t, sp, everything)
				byFlow := answer(t, sp, "ip or not ip")
				sameAnswer(t, "time-only and flow queries", sorted(byFlow), sorted(got))
				all := sorted(ok, sent)
				for _, p := range got {
					if p.ts < all[0].ts || p.ts > all[len(all)-1].ts {
						t.Fatalf("packet %+v stamped outside the packets sent", p)
					}
				}
				if tc.check != nil {
					tc.check(t, sorted(got), ok, sent)
				} else {
					checkKept(t, sorted(got), sorted(ok, intact), last-first+1)
				}
				c := sp.Counters()
				if round == 1 {
					if c != (spool.Counters{}) {
						t.Fatalf("second Open found something to repair: %+v", c)
					}
				} else {
					if c.DamagedRegions != tc.regions || c.FilesRepaired != 1 {
						t.Fatalf("counters %+v, want %d damaged regions and 1 file repaired", c, tc.regions)
					}
					if tc.regions > 0 && (c.DamagedBytes == 0 || c.DamagedBytes > uint64(to-from)) {
						t.Fatalf("%d damaged bytes, want 1 to %d (the records the damage touched)", c.DamagedBytes, to-from)
					}
				}
				if err := sp.Close(); err != nil {
					t.Fatal(err)
				}
				// The damaged bytes stay; a damaged header is rewritten.
				now, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(now[24:], data[24:]) {
					t.Fatalf("the repair changed the file's records (%d bytes, was %d)", len(now), len(data))
				}
				if !bytes.Equal(now[:24], pcapio.AppendPcapHeader(nil, 65535, pcapio.LinkTypeEthernet)) {
					t.Fatalf("file header % x not rewritten", now[:24])
				}
			}
		})
	}
}

// checkKept fails unless got holds every packet of want, and at most
// spare packets more (the damaged records whose headers survived and whose
// content repair cannot check: see TestRepairResync).
func checkKept(t *testing.T, got, want []pkt, spare int) {
	t.Helper()
	left := map[pkt]int{}
	for _, p := range got {
		left[p]++
	}
	for _, p := range want {
		if left[p] == 0 {
			t.Fatalf("intact packet %+v lost (%d packets, want %d)", p, len(got), len(want))
		}
		left[p]--
	}
	extra := 0
	for _, n := range left {
		extra += n
	}
	if extra > spare {
		t.Fatalf("%d packets that were not sent intact, want at most %d", extra, spare)
	}
}

// TestRepairZeroLengthRecord: a zero-length record with a real timestamp
// (imports keep them; tcpdump reads them) is a record, not the end.
func TestRepairZeroLengthRecord(t *testing.T) {
	dir := t.TempDir()
	sp := open(t, testConfig(dir))
	w, err := sp.NewWriter("import", "import")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(3)
	g.must(t, w, 100)
	ts := g.sent[len(g.sent)-1].ts
	if err := w.Append(ts, 0, nil, &flow.Key{}); err != nil {
		t.Fatal(err)
	}
	g.sent = append(g.sent, pkt{ts: ts, sum: crc32.ChecksumIEEE(nil)})
	g.must(t, w, 100)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	spool.Crash(sp)
	sp = open(t, testConfig(dir))
	defer sp.Close()
	sameAnswer(t, "after repair", sorted(answer(t, sp, everything)), sorted(g.sent))
	if c := sp.Counters(); c.DamagedRegions != 0 || c.FilesRepaired != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// TestRepairCutShortSealed: a sealed pcap cut short, its index intact, is
// re-indexed at Open from what is left: the whole records stay, the torn
// one goes.
func TestRepairCutShortSealed(t *testing.T) {
	dir := t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	sent := sealed(t, dir, "eth1-q0", 2, 300)
	path := glob(t, dir, "*eth1-q0.pcap")[0]
	whole := recordOffset(sent, 200)
	if err := os.Truncate(path, whole+10); err != nil {
		t.Fatal(err)
	}
	checkRepaired(t, dir, append(ok, sent[:200]...))
	if st, _ := os.Stat(path); st.Size() != whole {
		t.Fatalf("torn record not cut off: %d bytes, want %d", st.Size(), whole)
	}
}

// TestRepairImpossibleFiles: things in place of an index or a pcap that
// cannot be one are refused without being read, moved into quarantine
// where they are not regular files, and never stop Open.
func TestRepairImpossibleFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		// spoil replaces the index of a sealed file (idx) or puts
		// something in a pcap's place; outside is a directory outside
		// the spool.
		spoil func(t *testing.T, dir, idx, outside string)
		// quarantined: the names the quarantine folder must then hold.
		quarantined []string
		// lost: the sealed file's packets are no longer in the spool.
		lost bool
	}{
		{name: "index-is-a-directory", quarantined: []string{"eth1-q0.idx"}, spoil: func(t *testing.T, dir, idx, _ string) {
			must(t, os.Remove(idx), os.Mkdir(idx, 0o750), os.WriteFile(filepath.Join(idx, "x"), []byte("x"), 0o640))
		}},
		{name: "index-is-a-symlink", quarantined: []string{"eth1-q0.idx"}, spoil: func(t *testing.T, dir, idx, outside string) {
			target := filepath.Join(outside, "target.idx")
			must(t, os.Rename(idx, target), os.Symlink(target, idx))
		}},
		{name: "index-is-a-fifo", quarantined: []string{"eth1-q0.idx"}, spoil: func(t *testing.T, dir, idx, _ string) {
			must(t, os.Remove(idx), unix.Mkfifo(idx, 0o640))
		}},
		{name: "index-is-sparse-100GB", spoil: func(t *testing.T, dir, idx, _ string) {
			f, err := os.OpenFile(idx, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			must(t, f.Truncate(100<<30), f.Close())
		}},
		{name: "index-truncated", spoil: func(t *testing.T, dir, idx, _ string) {
			st, err := os.Stat(idx)
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.Truncate(idx, st.Size()-5))
		}},
		{name: "pcap-is-a-symlink-outside", lost: true, quarantined: []string{"eth1-q0.pcap"}, spoil: func(t *testing.T, dir, idx, outside string) {
			pcap := strings.TrimSuffix(idx, ".idx") + ".pcap"
			target := filepath.Join(outside, "precious.pcap")
			must(t, os.Rename(pcap, target), os.Symlink(target, pcap))
		}},
		{name: "pcap-is-a-directory", lost: true, quarantined: []string{"eth1-q0.pcap"}, spoil: func(t *testing.T, dir, idx, outside string) {
			pcap := strings.TrimSuffix(idx, ".idx") + ".pcap"
			must(t, os.Remove(pcap), os.Mkdir(pcap, 0o750))
		}},
		{name: "pcap-of-garbage", lost: true, quarantined: []string{"eth1-q0.pcap"}, spoil: func(t *testing.T, dir, idx, outside string) {
			pcap := strings.TrimSuffix(idx, ".idx") + ".pcap"
			junk := bytes.Repeat([]byte("not a packet, "), 1000)
			must(t, os.Remove(idx), os.WriteFile(pcap, junk, 0o640))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			ok := sealed(t, dir, "ok-q0", 1, 500)
			sent := sealed(t, dir, "eth1-q0", 2, 300)
			idx := glob(t, dir, "*eth1-q0.idx")[0]
			tc.spoil(t, dir, idx, outside)
			before := snapshotDir(t, outside)

			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			began := time.Now()
			sp := open(t, testConfig(dir))
			took := time.Since(began)
			runtime.ReadMemStats(&ms1)
			if took > 10*time.Second || ms1.TotalAlloc-ms0.TotalAlloc > 256<<20 {
				t.Fatalf("Open took %v and allocated %d bytes", took, ms1.TotalAlloc-ms0.TotalAlloc)
			}
			want := append(ok, sent...)
			if tc.lost {
				want = ok
			}
			sameAnswer(t, "after Open", sorted(answer(t, sp, everything)), sorted(want))
			c := sp.Counters()
			if c.FilesQuarantined != uint64(len(tc.quarantined)) {
				t.Fatalf("counters %+v, want %d files quarantined", c, len(tc.quarantined))
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			var q []string
			if qd := filepath.Join(dir, "quarantine"); exists(qd) {
				for name := range spoolFiles(t, qd) {
					q = append(q, name[strings.IndexByte(name, '-')+1:])
				}
			}
			slices.Sort(q)
			if !slices.Equal(q, tc.quarantined) {
				t.Fatalf("quarantine holds %v, want %v", q, tc.quarantined)
			}
			if !tc.lost {
				if _, err := index.Open(idx); err != nil {
					t.Fatalf("index not rebuilt: %v", err)
				}
			}
			// Nothing outside the spool was touched.
			if after := snapshotDir(t, outside); !mapsEqual(before, after) {
				t.Fatalf("files outside the spool changed: %v, were %v", after, before)
			}
		})
	}
}

// TestQuarantineDirIsChecked: a symbolic link in the quarantine folder's
// place is not followed; the file stays where it is, out of the spool.
func TestQuarantineDirIsChecked(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	ok := sealed(t, dir, "ok-q0", 1, 500)
	pcap := filepath.Join(dir, "20260101T000001.000000000Z-eth1-q0.pcap")
	must(t, os.WriteFile(pcap, bytes.Repeat([]byte{0xee}, 5000), 0o640), os.Symlink(outside, filepath.Join(dir, "quarantine")))
	sp := open(t, testConfig(dir))
	sameAnswer(t, "after Open", sorted(answer(t, sp, everything)), sorted(ok))
	must(t, sp.Close())
	if !exists(pcap) || len(snapshotDir(t, outside)) != 0 {
		t.Fatal("a file was moved through a symbolic link")
	}
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotDir returns each file of dir with the CRC-32 of its contents.
func snapshotDir(t *testing.T, dir string) map[string]uint32 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = crc32.ChecksumIEEE(data)
	}
	return out
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRepairRandomDamage: zeros or random bytes at random places, of
// random lengths; every record the damage left alone is kept, whole.
func TestRepairRandomDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		dir := t.TempDir()
		path, sent := crashed(t, dir, "eth1-q0", uint64(10+i), 300)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 1 + rng.IntN(6000)
		lo := 24 + rng.IntN(len(data)-24-n)
		random := rng.IntN(2) == 0
		for j := lo; j < lo+n; j++ {
			if random {
				data[j] = byte(rng.Uint32())
			} else {
				data[j] = 0
			}
		}
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		first, last, from, to := recordSpan(sent, int64(lo), int64(lo+n))
		intact := slices.Concat(sent[:first], sent[last+1:])
		sp := open(t, testConfig(dir))
		got := answer(t, sp, everything)
		c := sp.Counters()
		must(t, sp.Close())
		t.Logf("%d: %d bytes (random %v) at %d: records %d-%d; %d packets back; %+v", i, n, random, lo, first, last, len(got), c)
		checkKept(t, sorted(got), sorted(intact), last-first+1)
		if c.DamagedBytes > uint64(to-from) {
			t.Fatalf("%d damaged bytes, more than the %d the damaged records took", c.DamagedBytes, to-from)
		}
	}
}

// TestRepairSealedFileHeader: a sealed file's damaged file header is
// rewritten at Open although its index is intact, so that tcpdump reads
// the file again.
func TestRepairSealedFileHeader(t *testing.T) {
	dir := t.TempDir()
	sent := sealed(t, dir, "eth1-q0", 2, 300)
	path := glob(t, dir, "*eth1-q0.pcap")[0]
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte{0xd4}, 0) // the microsecond magic's first byte
	must(t, err, f.Close())
	sp := open(t, testConfig(dir))
	sameAnswer(t, "after Open", sorted(answer(t, sp, everything)), sorted(sent))
	if c := sp.Counters(); c.FilesRepaired != 1 {
		t.Fatalf("counters %+v", c)
	}
	must(t, sp.Close())
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	got, err := readPcap(fh)
	if err != nil {
		t.Fatal(err)
	}
	sameAnswer(t, "the file read directly", got, sent)
}
