package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// synthKeys returns n distinct keys of mixed kinds.
func synthKeys(n int) []flow.Key {
	keys := make([]flow.Key, n)
	for i := range keys {
		k := &keys[i]
		switch i % 4 {
		case 0, 1:
			k.Flags = flow.FlagIPv4 | flow.FlagPorts
			k.Src = [16]byte{10, 0, byte(i >> 8), byte(i)}
			k.Dst = [16]byte{192, 168, 1, 1}
			k.SrcPort, k.DstPort, k.Proto, k.EtherType = uint16(1024+i), 443, 6, 0x0800
		case 2:
			// ICMPv6 with its type and code (flag bit 7 on disk).
			k.Flags = flow.FlagIPv6 | flow.FlagVLAN0 | flow.FlagVLAN1 | flow.FlagICMP
			k.Src[0], k.Src[15], k.Dst[0] = 0x20, byte(i), 0xfe
			k.VLAN = [2]uint16{100, uint16(i % 4096)}
			k.Proto, k.EtherType = 58, 0x86dd
			k.SrcPort, k.DstPort = uint16(128+i%8), uint16(i%3)
		case 3:
			k.Flags = flow.FlagMPLS
			k.MPLS, k.EtherType = uint32(i), 0x8847
		}
	}
	return keys
}

type pkt struct {
	key     int
	off     int64
	ts      int64
	wireLen int
}

// sum is a stand-in for the record's checksum: distinct per offset.
func (p pkt) sum() uint32 { return uint32(p.off) * 2654435761 }

func buildRandom(t testing.TB, seed uint64, n, nflows int, monotone bool) (*Builder, []flow.Key, []pkt) {
	rng := rand.New(rand.NewPCG(seed, 1))
	keys := synthKeys(nflows)
	b := NewBuilder(n)
	var pkts []pkt
	off := int64(24)
	ts := int64(1_764_000_000_000_000_000)
	for range n {
		p := pkt{key: rng.IntN(nflows), off: off, ts: ts, wireLen: 60 + rng.IntN(1400)}
		if !monotone {
			p.ts += rng.Int64N(1e9) - 5e8
		}
		b.Add(&keys[p.key], p.off, p.ts, p.wireLen, p.sum())
		pkts = append(pkts, p)
		off += 16 + 60 + rng.Int64N(1400)
		ts += rng.Int64N(1e6)
	}
	b.SetVisible(off)
	return b, keys, pkts
}

func checkView(t *testing.T, v View, keys []flow.Key, pkts []pkt) {
	t.Helper()
	want := map[flow.Key][]int64{}
	wantFlow := map[flow.Key]Flow{}
	for _, p := range pkts {
		k := keys[p.key]
		want[k] = append(want[k], p.off)
		f, ok := wantFlow[k]
		if !ok {
			f = Flow{Key: k, First: p.ts, Last: p.ts}
		}
		f.First, f.Last = min(f.First, p.ts), max(f.Last, p.ts)
		f.Packets++
		f.Bytes += uint64(p.wireLen)
		wantFlow[k] = f
	}
	got := map[flow.Key][]int64{}
	var total uint64
	v.Flows(func(id int, f *Flow) bool {
		if *f != wantFlow[f.Key] {
			t.Fatalf("flow %+v, want %+v", *f, wantFlow[f.Key])
		}
		offs, err := v.AppendPositions(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(offs)) != f.Packets {
			t.Fatalf("flow %v: %d positions, %d packets", f.Key, len(offs), f.Packets)
		}
		sums, err := v.AppendSums(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range offs {
			if i >= len(sums) || sums[i] != (pkt{off: o}).sum() {
				t.Fatalf("flow %v: record %d at %d: sums %v do not match its positions", f.Key, i, o, sums)
			}
		}
		total += f.Packets
		got[f.Key] = offs
		return true
	})
	if len(got) != len(want) || total != uint64(len(pkts)) {
		t.Fatalf("got %d flows %d packets, want %d flows %d packets", len(got), total, len(want), len(pkts))
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Fatalf("flow %v: positions differ", k)
		}
	}
	s := v.Summary()
	if s.Packets != uint64(len(pkts)) || s.Flows != len(want) {
		t.Fatalf("summary %+v", s)
	}
}

// TestBuilderAndSealedAgree: a sealed index answers as its live one did,
// with few flows and with enough that the seal sorts packets by flow group
// in several windows (scatterPartitioned).
func TestBuilderAndSealedAgree(t *testing.T) {
	for _, c := range []struct{ n, flows int }{{20000, 300}, {120000, 3000}} {
		for _, monotone := range []bool{true, false} {
			testBuilderAndSealedAgree(t, c.n, c.flows, monotone)
		}
	}
}

func testBuilderAndSealedAgree(t *testing.T, n, flows int, monotone bool) {
	b, keys, pkts := buildRandom(t, 1, n, flows, monotone)
	checkView(t, b, keys, pkts)
	path := filepath.Join(t.TempDir(), "x.idx")
	if err := WriteFile(path, b.Encode("eth1", "")); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	checkView(t, r, keys, pkts)
	sealed := r.Summary()
	if sealed.Version != FormatVersion {
		t.Fatalf("sealed summary of version %d, want %d", sealed.Version, FormatVersion)
	}
	sealed.Version = 0 // a live index has none
	if r.Interface() != "eth1" || sealed.Monotone != monotone || sealed != b.Summary() {
		t.Fatalf("summary %+v, live %+v", r.Summary(), b.Summary())
	}
	if !slices.Equal(r.Blocks(), b.Blocks()) || len(r.Blocks()) != (n+BlockPackets-1)/BlockPackets {
		t.Fatalf("blocks differ")
	}
	for i, blk := range r.Blocks() {
		for _, p := range pkts[i*BlockPackets : min(len(pkts), (i+1)*BlockPackets)] {
			if p.ts < blk.Min || p.ts > blk.Max {
				t.Fatalf("block %d does not cover packet at %d", i, p.off)
			}
		}
	}
}

// TestAddBatchRuns: AddBatch and Add agree on packets that come in runs of
// one flow, the runs crossing look-up groups and batches, and interleaved
// with packets of other flows.
func TestAddBatchRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 1))
	keys := synthKeys(300)
	b := NewBuilder(0)
	var pkts []pkt
	var es []Entry
	off, ts := int64(24), int64(1_764_000_000_000_000_000)
	key := 0
	for range 20000 {
		if rng.IntN(10) < 3 {
			key = rng.IntN(len(keys))
		}
		p := pkt{key: key, off: off, ts: ts + rng.Int64N(1e9), wireLen: 60 + rng.IntN(1400)}
		pkts = append(pkts, p)
		es = append(es, Entry{Key: keys[key], Off: p.off, TS: p.ts, WireLen: p.wireLen, Sum: p.sum()})
		off += 16 + int64(p.wireLen)
		ts += rng.Int64N(1e6)
	}
	for len(es) > 0 {
		n := min(len(es), 1+rng.IntN(3*prefetchGroup))
		if n == 1 {
			b.Add(&es[0].Key, es[0].Off, es[0].TS, es[0].WireLen, es[0].Sum)
		} else {
			b.AddBatch(es[:n])
		}
		es = es[n:]
	}
	b.SetVisible(off)
	checkView(t, b, keys, pkts)
}

// TestAddBatchEncodesAsAdd: a live index fed in batches (long runs of one
// flow, which addRun takes, and mixed packets) encodes to the same bytes,
// blocks and summary as one fed packet by packet, across block boundaries,
// out-of-order timestamps and skipped regions.
func TestAddBatchEncodesAsAdd(t *testing.T) {
	// One flow in batches of up to 5,000 packets crosses a chunk of the
	// packet log (65,536 packets) inside a run.
	for _, tc := range []struct{ flows, batch int }{{1, 5000}, {40, 200}} {
		t.Run(fmt.Sprintf("flows=%d", tc.flows), func(t *testing.T) { testAddBatchEncodesAsAdd(t, tc.flows, tc.batch) })
	}
}

func testAddBatchEncodesAsAdd(t *testing.T, flows, batch int) {
	rng := rand.New(rand.NewPCG(5, uint64(flows)))
	keys := synthKeys(flows)
	one, batched := NewBuilder(0), NewBuilder(0)
	off, ts := int64(24), int64(1_764_000_000_000_000_000)
	key := 0
	for range 60 {
		var es []Entry
		for range 1 + rng.IntN(batch) {
			if rng.IntN(20) == 0 {
				key = rng.IntN(len(keys))
			}
			e := Entry{Key: keys[key], Off: off, TS: ts, WireLen: 60 + rng.IntN(1400)}
			if rng.IntN(500) == 0 {
				e.TS -= 1e6 // out of order
			}
			e.Sum = uint32(e.Off) * 2654435761
			es = append(es, e)
			off += 16 + int64(e.WireLen)
			ts += rng.Int64N(1e6)
		}
		for i := range es {
			e := &es[i]
			one.Add(&e.Key, e.Off, e.TS, e.WireLen, e.Sum)
		}
		batched.AddBatch(es)
		if rng.IntN(8) == 0 {
			one.Skip(off)
			batched.Skip(off)
			off += 1000
		}
		// Both say the same throughout, Monotone included.
		if a, b := one.Summary(), batched.Summary(); a != b {
			t.Fatalf("summary packet by packet %+v, in batches %+v", a, b)
		}
	}
	one.SetVisible(off)
	batched.SetVisible(off)
	if a, b := one.Blocks(), batched.Blocks(); !slices.Equal(a, b) {
		t.Fatalf("blocks differ: %d packet by packet, %d in batches", len(a), len(b))
	}
	if !bytes.Equal(one.Encode("eth0", "f"), batched.Encode("eth0", "f")) {
		t.Fatal("encodings differ")
	}
	// The live lists of each flow's packets, which the encoding does not
	// use, too.
	for id := range flows {
		a, _ := one.AppendPositions(nil, id)
		b, _ := batched.AppendPositions(nil, id)
		as, _ := one.AppendSums(nil, id)
		bs, _ := batched.AppendSums(nil, id)
		if !slices.Equal(a, b) || !slices.Equal(as, bs) {
			t.Fatalf("flow %d: positions or sums differ: %d packet by packet, %d in batches", id, len(a), len(b))
		}
	}
	if n := one.Summary().Packets; batch > 1000 && n <= chunkLen {
		t.Fatalf("%d packets: no second chunk", n)
	}
}

func TestVisibleEndHidesUnwrittenPackets(t *testing.T) {
	b := NewBuilder(0)
	k := synthKeys(1)[0]
	b.Add(&k, 24, 1, 60, 0)
	b.Add(&k, 100, 2, 60, 0)
	b.SetVisible(100)
	offs, _ := b.AppendPositions(nil, 0)
	if !slices.Equal(offs, []int64{24}) {
		t.Fatalf("got %v", offs)
	}
}

func TestCorruptionDetected(t *testing.T) {
	b, _, _ := buildRandom(t, 2, 3000, 50, true)
	data := b.Encode("eth0", "")
	if _, err := Decode(data); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += 7 {
		c := slices.Clone(data)
		c[i] ^= 0x40
		if _, err := Decode(c); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("flipped byte %d: got %v", i, err)
		}
	}
	for _, n := range []int{0, 10, headerSize, len(data) - 1} {
		if _, err := Decode(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: got %v", n, err)
		}
	}
	c := slices.Clone(data)
	c[8] = 9
	if _, err := Decode(c); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: got %v", err)
	}
}

// TestHeaderChecksum: ReadSummary, which prunes files by the header's time
// range without reading the rest, refuses a header with any byte changed.
func TestHeaderChecksum(t *testing.T) {
	b, _, _ := buildRandom(t, 5, 2000, 20, true)
	data := b.Encode("eth0", "")
	path := filepath.Join(t.TempDir(), "h.idx")
	if err := WriteFile(path, data); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadSummary(path); err != nil || s.Packets != 2000 {
		t.Fatalf("summary %+v, %v", s, err)
	}
	for i := 8; i < headerSize; i++ {
		c := slices.Clone(data)
		c[i] ^= 0x10
		if err := os.WriteFile(path, c, 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSummary(path); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("header byte %d changed: ReadSummary says %v", i, err)
		}
	}
}

func TestWriteFileLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "a.idx"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "a.idx" {
		t.Fatalf("dir holds %v", ents)
	}
}

// TestWriteTemp: two writers of one index each get a temporary file of
// their own, hidden and ending .tmp (what a spool's repair removes), with
// the index's permissions; Rename puts one in place, Abort removes the
// other, and after a Rename, Abort removes nothing.
func TestWriteTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.idx")
	x, err := WriteTemp(path, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := WriteTemp(path, []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tf := range []*TempFile{x, y} {
		name := filepath.Base(tf.tmp)
		st, err := os.Stat(tf.tmp)
		if err != nil || !strings.HasPrefix(name, ".a.idx.") || !strings.HasSuffix(name, ".tmp") || st.Mode().Perm() != 0o640 {
			t.Fatalf("temporary file %s: %v %v", name, st, err)
		}
	}
	if x.tmp == y.tmp {
		t.Fatalf("both writers got %s", x.tmp)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the index is in place before Rename: %v", err)
	}
	if err := x.Rename(); err != nil {
		t.Fatal(err)
	}
	if err := x.SyncDir(); err != nil {
		t.Fatal(err)
	}
	if err := y.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := x.Abort(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if got, _ := os.ReadFile(path); len(ents) != 1 || string(got) != "x" {
		t.Fatalf("dir holds %v, the index %q", ents, got)
	}
}

// FuzzDecode: a corrupt index is detected, never trusted: Decode and every
// read of what it accepted must not panic, and positions stay in range.
func FuzzDecode(f *testing.F) {
	b, _, _ := buildRandom(f, 3, 500, 20, false)
	f.Add(b.Encode("eth0", ""))
	f.Add(NewBuilder(0).Encode("", ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		end := r.Summary().DataEnd
		r.Flows(func(id int, f *Flow) bool {
			offs, err := r.AppendPositions(nil, id)
			if err == nil && uint64(len(offs)) != f.Packets {
				t.Fatalf("flow %d: %d positions for %d packets", id, len(offs), f.Packets)
			}
			if sums, err := r.AppendSums(nil, id); err == nil && uint64(len(sums)) != f.Packets {
				t.Fatalf("flow %d: %d sums for %d packets", id, len(sums), f.Packets)
			}
			for _, o := range offs {
				if o < 0 || o >= end {
					t.Fatalf("position %d outside [0,%d)", o, end)
				}
			}
			return true
		})
	})
}

// BenchmarkBuilderAdd grows its Builders from nothing, as the spool does:
// their growth is part of the cost per packet.
func BenchmarkBuilderAdd(b *testing.B) {
	const packets = 1 << 22 // a file's worth; the spool rotates at 1 GiB
	keys := synthKeys(4096)
	bl := NewBuilder(0)
	b.ReportAllocs()
	off := int64(24)
	i := 0
	for b.Loop() {
		if i == packets { // a rotation, as the spool does
			bl = NewBuilder(0)
			i = 0
		}
		bl.Add(&keys[i&4095], off, int64(i), 100, uint32(i))
		off += 116
		i++
	}
}

// BenchmarkBuilderAddBatch adds packets of many flows in random order, as
// trafgen's random ports or a busy tap produce them, one by one and in the
// spool's flush batches: the batches overlap the cache misses.
func BenchmarkBuilderAddBatch(b *testing.B) {
	const packets = 1 << 20
	for _, flows := range []int{1, 64, 65536, 262144} {
		keys := synthKeys(flows)
		rng := rand.New(rand.NewPCG(1, 2))
		// The entries are made beforehand and read in order, as the
		// spool's pending entries are, so that the benchmark measures
		// the index and not its own cache misses on keys.
		es := make([]Entry, packets)
		for i := range es {
			es[i] = Entry{Key: keys[rng.IntN(flows)], Off: int64(24 + 116*i), TS: int64(i), WireLen: 100}
		}
		for _, batched := range []bool{false, true} {
			name := fmt.Sprintf("flows=%d/batched=%v", flows, batched)
			b.Run(name, func(b *testing.B) {
				const batch = 4096
				bl := NewBuilder(packets)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i == packets { // a rotation, as the spool does
						bl = NewBuilder(packets)
						i = 0
					}
					if !batched {
						e := &es[i]
						bl.Add(&e.Key, e.Off, e.TS, e.WireLen, e.Sum)
						i++
						continue
					}
					// One loop iteration per packet, a batch every batch.
					i++
					if i%batch == 0 {
						bl.AddBatch(es[i-batch : i])
					}
				}
			})
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	bl, _, _ := buildRandom(b, 4, 100000, 1000, true)
	b.ReportAllocs()
	for b.Loop() {
		bl.Encode("eth0", "")
	}
}

func BenchmarkDecode(b *testing.B) {
	bl, _, _ := buildRandom(b, 4, 100000, 1000, true)
	data := bl.Encode("eth0", "")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBuilderTCPFlags(t *testing.T) {
	b := NewBuilder(0)
	var k1, k2 flow.Key
	k1.Proto, k2.Proto = 6, 17
	b.AddBatch([]Entry{
		{Key: k1, Off: 24, TS: 1, WireLen: 60, TCPFlags: flow.TCPSyn},
		{Key: k1, Off: 100, TS: 2, WireLen: 60, TCPFlags: flow.TCPAck},
		{Key: k2, Off: 200, TS: 3, WireLen: 70},
	})
	b.Add(&k1, 300, 4, 60, 0)
	b.AddBatch([]Entry{{Key: k1, Off: 400, TS: 5, WireLen: 60, TCPFlags: flow.TCPFin | flow.TCPAck}})
	got := b.CopyFlows(make([]LiveFlow, 0, 1), 0)
	if len(got) != 1 || got[0].Packets != 4 || got[0].TCPFlags != flow.TCPSyn|flow.TCPAck|flow.TCPFin || got[0].Last != 5 {
		t.Fatalf("first chunk: %+v", got)
	}
	got = b.CopyFlows(got[:0], 1)
	if len(got) != 1 || got[0].Key != k2 || got[0].TCPFlags != 0 || got[0].Bytes != 70 {
		t.Fatalf("second chunk: %+v", got)
	}
	if got = b.CopyFlows(got[:0], 2); len(got) != 0 {
		t.Fatalf("past the end: %+v", got)
	}
}

// A flow record claiming both ports and an ICMP type and code is refused:
// no parser writes it, so the index is damaged.
func TestFlowRecordPortsAndICMP(t *testing.T) {
	f := Flow{Key: flow.Key{Flags: flow.FlagIPv4 | flow.FlagICMP, Proto: 1, SrcPort: 8, EtherType: 0x0800}, First: 10, Last: 20, Packets: 1, Bytes: 60}
	var got Flow
	d := decoder{b: appendFlow(nil, &f, 0, 1, FormatVersion)}
	d.flow(&got, 0, FormatVersion)
	if d.err != nil || got.Key != f.Key {
		t.Fatalf("ICMP flow: %v, %v", d.err, got.Key)
	}
	f.Key.Flags |= flow.FlagPorts
	d = decoder{b: appendFlow(nil, &f, 0, 1, FormatVersion)}
	d.flow(&got, 0, FormatVersion)
	if d.err == nil {
		t.Fatal("a flow with ports and an ICMP type decoded")
	}
}

// The cut counts AddCut reports: on a flow with packets in the file, on
// one without, and on one whose first packet comes after cut ones (which
// then has two records); live and sealed agree, but a sealed index keeps
// its flows within its time range.
func TestCutCounts(t *testing.T) {
	keys := synthKeys(4)
	a, b2, c, d := &keys[0], &keys[1], &keys[2], &keys[3]
	const t0 = int64(1_764_000_000_000_000_000)
	b := NewBuilder(0)
	b.Add(a, 24, t0, 100, 1)
	b.Add(b2, 140, t0+10, 100, 2)
	b.AddCut(a, 3, 4500, t0+20)
	b.AddCut(c, 2, 3000, t0+30)
	b.AddCut(d, 1, 1500, t0+40)
	b.AddCut(c, 1, 1500, t0+50)
	b.Add(d, 256, t0+60, 100, 3)
	b.AddCut(d, 2, 3000, t0+70)
	b.AddCut(a, 1, 1500, t0+1000) // after the last stored packet
	b.SetVisible(372)

	type flowAt struct {
		key   flow.Key
		first int64
	}
	want := map[flowAt]Flow{
		{*a, t0}:       {Key: *a, First: t0, Last: t0 + 1000, Packets: 1, Bytes: 100, CutPackets: 4, CutBytes: 6000},
		{*b2, t0 + 10}: {Key: *b2, First: t0 + 10, Last: t0 + 10, Packets: 1, Bytes: 100},
		{*c, t0 + 30}:  {Key: *c, First: t0 + 30, Last: t0 + 50, CutPackets: 3, CutBytes: 4500},
		{*d, t0 + 40}:  {Key: *d, First: t0 + 40, Last: t0 + 40, CutPackets: 1, CutBytes: 1500},
		{*d, t0 + 60}:  {Key: *d, First: t0 + 60, Last: t0 + 70, Packets: 1, Bytes: 100, CutPackets: 2, CutBytes: 3000},
	}
	check := func(what string, v View, want map[flowAt]Flow) {
		t.Helper()
		n := 0
		v.Flows(func(id int, f *Flow) bool {
			n++
			if w := want[flowAt{f.Key, f.First}]; *f != w {
				t.Errorf("%s: flow %+v, want %+v", what, *f, w)
			}
			offs, err := v.AppendPositions(nil, id)
			if err != nil || uint64(len(offs)) != f.Packets {
				t.Errorf("%s: flow %v: positions %v, %v", what, f.Key, offs, err)
			}
			return true
		})
		if n != len(want) {
			t.Errorf("%s: %d flows, want %d", what, n, len(want))
		}
	}
	check("live", b, want)

	r, err := Decode(b.Encode("eth0", ""))
	if err != nil {
		t.Fatal(err)
	}
	// Sealed, every flow lies within the stored packets' time range.
	last := t0 + 60
	want[flowAt{*a, t0}] = Flow{Key: *a, First: t0, Last: last, Packets: 1, Bytes: 100, CutPackets: 4, CutBytes: 6000}
	want[flowAt{*d, t0 + 60}] = Flow{Key: *d, First: t0 + 60, Last: last, Packets: 1, Bytes: 100, CutPackets: 2, CutBytes: 3000}
	check("sealed", r, want)

	// Version 2, which had no cut counts, still reads.
	b = NewBuilder(0)
	b.Add(a, 24, t0, 100, 1)
	b.Add(b2, 140, t0+10, 100, 2)
	b.Add(d, 256, t0+60, 100, 3)
	b.SetVisible(372)
	r2, err := Decode(b.encode(2, "eth0", ""))
	if err != nil {
		t.Fatal(err)
	}
	if s := r2.Summary(); s.Version != 2 || s.Packets != 3 {
		t.Fatalf("version 2 summary %+v", s)
	}
	r2.Flows(func(_ int, f *Flow) bool {
		if f.CutPackets != 0 || f.CutBytes != 0 {
			t.Errorf("version 2 flow with cut counts: %+v", *f)
		}
		return true
	})
}

// BenchmarkSealFlows seals a live index of 2 Mi packets in random order
// over some number of flows, as a spool file of trafgen's random ports or
// a busy tap gives it: encodes it and reads the encoding back, as the
// spool's seal does. ns/packet is the seal's cost per packet.
func BenchmarkSealFlows(b *testing.B) {
	const packets = 1 << 21
	for _, flows := range []int{1, 1024, 65536} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			keys := synthKeys(flows)
			rng := rand.New(rand.NewPCG(1, 2))
			bl := NewBuilder(packets)
			es := make([]Entry, 4096)
			for i := 0; i < packets; i += len(es) {
				for j := range es {
					es[j] = Entry{Key: keys[rng.IntN(flows)], Off: int64(24 + 76*(i+j)), TS: int64(i + j), WireLen: 60, Sum: uint32(i + j)}
				}
				bl.AddBatch(es)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(bl.Encode("eth0", "")); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/packets, "ns/packet")
		})
	}
}

// TestFlowsWalkReadsWhileWriting: a walk of a live index's flows whose fn
// asks for each flow's positions (as the histogram does) goes on while
// the writer adds packets. With the read lock held through fn, the
// nested read lock waited behind the waiting writer, which waited for the
// walk: both stopped for good, and capture with them.
func TestFlowsWalkReadsWhileWriting(t *testing.T) {
	b := NewBuilder(0)
	keys := synthKeys(600)
	var es []Entry
	for i := range 1200 {
		es = append(es, Entry{Key: keys[i%len(keys)], Off: int64(24 + 100*i), TS: int64(i), WireLen: 84})
	}
	b.AddBatch(es)
	b.SetVisible(1 << 40)
	stop := make(chan struct{})
	var wrote atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b.AddBatch(es[:10])
			wrote.Add(1)
		}
	}()
	walked := make(chan int)
	go func() {
		n := 0
		// At least 100 walks, and on until the writer has written
		// alongside: with one CPU the walks could all end before it ran.
		for i := 0; i < 100 || wrote.Load() < 10; i++ {
			b.Flows(func(id int, f *Flow) bool {
				offs, _ := b.AppendPositions(nil, id)
				if len(offs) == 0 {
					t.Errorf("flow %d: no positions", id)
					return false
				}
				n++
				return true
			})
		}
		walked <- n
	}()
	select {
	case n := <-walked:
		close(stop)
		<-writerDone
		if n < 100*len(keys) {
			t.Errorf("walked %d flows", n)
		}
	case <-time.After(time.Minute):
		t.Fatal("the walk and the writer are stuck: deadlock")
	}
}

// TestUvarintLen: the seal sizes each flow's positions with uvarintLen
// and then writes them with binary.PutUvarint: they must agree on every
// length.
func TestUvarintLen(t *testing.T) {
	var buf [binary.MaxVarintLen64]byte
	check := func(x uint64) {
		if got, want := uvarintLen(x), binary.PutUvarint(buf[:], x); got != want {
			t.Fatalf("uvarintLen(%d) = %d, PutUvarint writes %d", x, got, want)
		}
	}
	for shift := range 64 {
		x := uint64(1) << shift
		check(x - 1)
		check(x)
		check(x + 1)
	}
	check(math.MaxUint64)
}
