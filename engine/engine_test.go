package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// ref is one stored packet as the test knows it, independently of the
// spool, index and engine.
type ref struct {
	ts      int64
	origLen int
	data    []byte
	key     flow.Key
}

// corpus is a spool holding every Ethernet test capture, and the packets
// it must hold.
type corpus struct {
	sp   *spool.Spool
	dir  string
	refs []ref
}

// importAll imports every Ethernet test capture through three writers (as
// three capture workers would), with small files so that answers span many
// files of several streams.
func importAll(t testing.TB) *corpus {
	t.Helper()
	c := &corpus{dir: t.TempDir()}
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{c.dir}
	cfg.RotateSize = 256 << 10
	cfg.WriteBuffer = 64 << 10
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ws []*spool.Writer
	for i := range 3 {
		w, err := sp.NewWriter(fmt.Sprintf("eth%d-q0", i), fmt.Sprintf("eth%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	for i, capt := range testpcaps.Ethernet(t, "") {
		f, err := os.Open(capt.Path)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := spool.Import(context.Background(), ws[i%3], capt.Path, f)
		f.Close()
		// The reference: the first res.Packets packets, read again.
		f, _ = os.Open(capt.Path)
		rd, err := pcapio.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var p pcapio.Packet
		for range res.Packets {
			if err := rd.Next(&p); err != nil {
				t.Fatal(err)
			}
			// The spool keeps at most the snap length of each packet.
			r := ref{ts: p.Timestamp, origLen: p.OrigLen, data: slices.Clone(p.Data[:min(len(p.Data), cfg.SnapLen)])}
			flow.Parse(r.data, &r.key)
			c.refs = append(c.refs, r)
		}
		f.Close()
	}
	for _, w := range ws {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	c.sp = sp
	return c
}

type answer struct {
	ts      int64
	origLen int
	data    []byte
}

func run(t testing.TB, sp *spool.Spool, q *query.Query, opts Options) ([]answer, Result) {
	t.Helper()
	var buf bytes.Buffer
	w, _ := pcapio.NewPcapWriter(&buf, 65535)
	res, err := Run(context.Background(), sp, q, w, opts)
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	return readAnswer(t, buf.Bytes()), res
}

// readAnswer reads the packets of a pcap answer.
func readAnswer(t testing.TB, data []byte) []answer {
	t.Helper()
	rd, err := pcapio.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out []answer
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, answer{p.Timestamp, p.OrigLen, slices.Clone(p.Data)})
	}
	return out
}

func cmpAnswer(a, b answer) int {
	if a.ts != b.ts {
		if a.ts < b.ts {
			return -1
		}
		return 1
	}
	if c := bytes.Compare(a.data, b.data); c != 0 {
		return c
	}
	return a.origLen - b.origLen
}

// check compares the engine's answer with the packets pred selects: the
// same packets, each once, ordered by timestamp. It runs the query twice:
// reading the mapped sealed files record by record, and through the window
// buffer as for files read with pread.
func (c *corpus) check(t *testing.T, q *query.Query, pred func(*ref) bool) int {
	t.Helper()
	c.checkWith(t, q, pred, Options{noMap: true})
	return c.checkWith(t, q, pred, Options{})
}

func (c *corpus) checkWith(t *testing.T, q *query.Query, pred func(*ref) bool, opts Options) int {
	t.Helper()
	got, _ := run(t, c.sp, q, opts)
	for i := 1; i < len(got); i++ {
		if got[i].ts < got[i-1].ts {
			t.Fatalf("query %q: packet %d stamped %d before packet %d stamped %d", q, i, got[i].ts, i-1, got[i-1].ts)
		}
	}
	var want []answer
	for i := range c.refs {
		if r := &c.refs[i]; pred(r) {
			want = append(want, answer{r.ts, r.origLen, r.data})
		}
	}
	slices.SortFunc(got, cmpAnswer)
	slices.SortFunc(want, cmpAnswer)
	if len(got) != len(want) {
		t.Fatalf("query %q: %d packets, want %d", q, len(got), len(want))
	}
	for i := range got {
		if cmpAnswer(got[i], want[i]) != 0 {
			t.Fatalf("query %q: packet %d differs: ts %d/%d len %d/%d", q, i, got[i].ts, want[i].ts, len(got[i].data), len(want[i].data))
		}
	}
	return len(got)
}

// genQuery builds a random query string and, independently of the query
// package, the predicate it means. Sub-expressions are parenthesized, so
// the predicate does not depend on stenographer's left-to-right precedence
// (the query package's own tests cover that).
type generator struct {
	rng  *rand.Rand
	refs []ref
}

func (g *generator) pick() *ref { return &g.refs[g.rng.IntN(len(g.refs))] }

func (g *generator) pickWhere(ok func(*ref) bool) *ref {
	for range 1000 {
		if r := g.pick(); ok(r) {
			return r
		}
	}
	return g.pick()
}

func isIP(r *ref) bool { return r.key.IsIP() }

func (g *generator) primitive() (string, func(*ref) bool) {
	k := func(r *ref) *flow.Key { return &r.key }
	switch g.rng.IntN(18) {
	case 0, 1:
		r := g.pickWhere(isIP)
		a := r.key.SrcAddr()
		if g.rng.IntN(2) == 0 {
			a = r.key.DstAddr()
		}
		dir := []string{"", "src ", "dst "}[g.rng.IntN(3)]
		return dir + "host " + a.String(), func(r *ref) bool {
			if !isIP(r) {
				return false
			}
			s, d := k(r).SrcAddr() == a, k(r).DstAddr() == a
			return dir == "" && (s || d) || dir == "src " && s || dir == "dst " && d
		}
	case 2:
		r := g.pickWhere(isIP)
		a := r.key.SrcAddr()
		bits := []int{8, 16, 24, 32}[g.rng.IntN(4)]
		if a.Is6() {
			bits = []int{16, 32, 48, 64, 128}[g.rng.IntN(5)]
		}
		pfx := netip.PrefixFrom(a, bits).Masked()
		dir := []string{"", "src ", "dst "}[g.rng.IntN(3)]
		text := dir + "net " + pfx.String()
		if a.Is4() && g.rng.IntN(2) == 0 {
			m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), bits).Masked()
			_ = m
			mask := [4]byte{}
			for i := range bits {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			text = dir + "net " + pfx.Addr().String() + " mask " + netip.AddrFrom4(mask).String()
		}
		return text, func(r *ref) bool {
			if !isIP(r) {
				return false
			}
			s, d := pfx.Contains(k(r).SrcAddr()), pfx.Contains(k(r).DstAddr())
			return dir == "" && (s || d) || dir == "src " && s || dir == "dst " && d
		}
	case 3, 4:
		r := g.pickWhere(func(r *ref) bool { return r.key.Flags&flow.FlagPorts != 0 })
		p := r.key.SrcPort
		if g.rng.IntN(2) == 0 {
			p = r.key.DstPort
		}
		dir := []string{"", "src ", "dst "}[g.rng.IntN(3)]
		return fmt.Sprintf("%sport %d", dir, p), func(r *ref) bool {
			if r.key.Flags&flow.FlagPorts == 0 {
				return false
			}
			s, d := r.key.SrcPort == p, r.key.DstPort == p
			return dir == "" && (s || d) || dir == "src " && s || dir == "dst " && d
		}
	case 5:
		r := g.pickWhere(isIP)
		pr := r.key.Proto
		return fmt.Sprintf("ip proto %d", pr), func(r *ref) bool { return isIP(r) && r.key.Proto == pr }
	case 6:
		return "tcp", func(r *ref) bool { return isIP(r) && r.key.Proto == 6 }
	case 7:
		return "udp", func(r *ref) bool { return isIP(r) && r.key.Proto == 17 }
	case 8:
		return "icmp", func(r *ref) bool { return r.key.Flags&flow.FlagIPv4 != 0 && r.key.Proto == 1 }
	case 9:
		return "icmp6", func(r *ref) bool { return r.key.Flags&flow.FlagIPv6 != 0 && r.key.Proto == 58 }
	case 10:
		return "sctp", func(r *ref) bool { return isIP(r) && r.key.Proto == 132 }
	case 11:
		return "ip", func(r *ref) bool { return r.key.Flags&flow.FlagIPv4 != 0 }
	case 12:
		return "ip6", func(r *ref) bool { return r.key.Flags&flow.FlagIPv6 != 0 }
	case 13:
		r := g.pickWhere(func(r *ref) bool { return r.key.Flags&(flow.FlagVLAN0|flow.FlagVLAN1) != 0 })
		v := r.key.VLAN[0]
		if r.key.Flags&flow.FlagVLAN1 != 0 && g.rng.IntN(2) == 0 {
			v = r.key.VLAN[1]
		}
		return fmt.Sprintf("vlan %d", v), func(r *ref) bool {
			return r.key.Flags&flow.FlagVLAN0 != 0 && r.key.VLAN[0] == v || r.key.Flags&flow.FlagVLAN1 != 0 && r.key.VLAN[1] == v
		}
	case 14:
		r := g.pickWhere(func(r *ref) bool { return r.key.Flags&flow.FlagMPLS != 0 })
		m := r.key.MPLS
		return fmt.Sprintf("mpls %d", m), func(r *ref) bool { return r.key.Flags&flow.FlagMPLS != 0 && r.key.MPLS == m }
	default:
		// Time bounds at a packet's own timestamp, so they fall inside files.
		ts := g.pick().ts + int64(g.rng.IntN(3)-1)
		text := time.Unix(0, ts).UTC().Format(time.RFC3339Nano)
		if g.rng.IntN(2) == 0 {
			return "before " + text, func(r *ref) bool { return r.ts < ts }
		}
		return "after " + text, func(r *ref) bool { return r.ts >= ts }
	}
}

func (g *generator) expr(depth int) (string, func(*ref) bool) {
	if depth == 0 || g.rng.IntN(3) == 0 {
		return g.primitive()
	}
	switch g.rng.IntN(5) {
	case 0:
		s, p := g.expr(depth - 1)
		return "not (" + s + ")", func(r *ref) bool { return !p(r) }
	case 1, 2:
		a, pa := g.expr(depth - 1)
		b, pb := g.expr(depth - 1)
		op := []string{"and", "&&"}[g.rng.IntN(2)]
		return "(" + a + ") " + op + " (" + b + ")", func(r *ref) bool { return pa(r) && pb(r) }
	default:
		a, pa := g.expr(depth - 1)
		b, pb := g.expr(depth - 1)
		op := []string{"or", "||"}[g.rng.IntN(2)]
		return "(" + a + ") " + op + " (" + b + ")", func(r *ref) bool { return pa(r) || pb(r) }
	}
}

func TestAnswersMatchIndependentEvaluation(t *testing.T) {
	c := importAll(t)
	if len(c.refs) < 10000 {
		t.Fatalf("only %d packets imported", len(c.refs))
	}
	files := len(c.sp.Files())
	t.Logf("%d packets in %d spool files", len(c.refs), files)
	if hs, err := c.sp.Snapshot(math.MinInt64, math.MaxInt64); err != nil {
		t.Fatal(err)
	} else {
		mapped := 0
		for _, h := range hs {
			if h.Mapped() {
				mapped++
			}
		}
		if err := spool.CloseAll(hs); err != nil {
			t.Fatal(err)
		}
		if mapped != files {
			t.Fatalf("%d of %d sealed files mapped: the mapped read path is not tested", mapped, files)
		}
	}
	g := &generator{rng: rand.New(rand.NewPCG(42, 7)), refs: c.refs}
	n := 400
	if testing.Short() {
		n = 60
	}
	nonEmpty, total := 0, 0
	for i := range n {
		s, pred := g.expr(1 + i%4)
		q, err := query.Parse(s, time.Now())
		if err != nil {
			t.Fatalf("generated query %q: %v", s, err)
		}
		got := c.check(t, q, pred)
		total += got
		if got > 0 {
			nonEmpty++
		}
	}
	t.Logf("%d queries, %d with a non-empty answer, %d packets compared", n, nonEmpty, total)
	if nonEmpty < n/3 {
		t.Fatalf("only %d of %d queries matched anything: the generator is too narrow", nonEmpty, n)
	}
}

// TestEveryPrimitive runs each primitive kind at least once against the
// whole corpus, and the special cases of DESIGN.md.
func TestEveryPrimitive(t *testing.T) {
	c := importAll(t)
	g := &generator{rng: rand.New(rand.NewPCG(1, 2)), refs: c.refs}
	seen := map[string]bool{}
	for len(seen) < 14 { // host net port ip tcp udp icmp icmp6 sctp ip6 vlan mpls before after
		s, pred := g.primitive()
		word := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(s, "src "), "dst "))[0]
		q, err := query.Parse(s, time.Now())
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		c.check(t, q, pred)
		seen[word] = true
	}
	all := func(*ref) bool { return true }
	// A time-only query returns every packet in range, parsed or not.
	for _, s := range []string{"after 1970-01-01T00:00:00Z", "before 2200-01-01T00:00:00Z"} {
		q, _ := query.Parse(s, time.Now())
		if n := c.check(t, q, all); n != len(c.refs) {
			t.Fatalf("%q: %d packets of %d", s, n, len(c.refs))
		}
	}
	// not is per packet: not port 80 includes ARP and other non-IP frames.
	q, _ := query.Parse("not port 80", time.Now())
	c.check(t, q, func(r *ref) bool {
		return r.key.Flags&flow.FlagPorts == 0 || r.key.SrcPort != 80 && r.key.DstPort != 80
	})
}

func TestLimits(t *testing.T) {
	c := importAll(t)
	q, _ := query.Parse("tcp", time.Now())
	all, res := run(t, c.sp, q, Options{})
	if res.Limited || int64(len(all)) != res.Packets {
		t.Fatalf("unlimited: %+v", res)
	}
	got, res := run(t, c.sp, q, Options{LimitPackets: 100})
	if len(got) != 100 || !res.Limited {
		t.Fatalf("limit 100 packets: got %d, %+v", len(got), res)
	}
	for i := range got {
		if cmpAnswer(got[i], all[i]) != 0 {
			t.Fatalf("limited answer is not a prefix of the whole answer at %d", i)
		}
	}
	var want int64
	n := 0
	for _, a := range all {
		if want+16+int64(len(a.data)) > 50000 {
			break
		}
		want += 16 + int64(len(a.data))
		n++
	}
	got, res = run(t, c.sp, q, Options{LimitBytes: 50000})
	if len(got) != n || res.Bytes != want || !res.Limited {
		t.Fatalf("limit 50000 bytes: %d packets %d bytes, want %d packets %d bytes", len(got), res.Bytes, n, want)
	}
}

func TestPcapngAnswerCarriesInterfaces(t *testing.T) {
	c := importAll(t)
	q, _ := query.Parse("udp", time.Now())
	var buf bytes.Buffer
	w, _ := pcapio.NewPcapngWriter(&buf, 65535)
	res, err := Run(context.Background(), c.sp, q, w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	n := int64(0)
	for {
		_, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ifc, _ := r.Interface(ci.InterfaceIndex)
		names[ifc.Name]++
		n++
	}
	if n != res.Packets || len(names) != 3 {
		t.Fatalf("read %d of %d packets; interfaces %v", n, res.Packets, names)
	}
}

// TestReopenRepairsAndAnswersTheSame: a spool reopened after its indexes
// were deleted or corrupted answers exactly as before.
func TestReopenRepairsAndAnswersTheSame(t *testing.T) {
	c := importAll(t)
	q, err := query.Parse("tcp or icmp or vlan 1 or after 2015-01-01T00:00:00Z", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before, _ := run(t, c.sp, q, Options{})
	idx, _ := filepath.Glob(filepath.Join(c.dir, "*.idx"))
	if len(idx) < 3 {
		t.Fatalf("only %d index files", len(idx))
	}
	if err := os.Remove(idx[0]); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(idx[1])
	data[len(data)/2] ^= 1
	os.WriteFile(idx[1], data, 0o640)
	os.WriteFile(filepath.Join(c.dir, ".x.idx.tmp"), []byte("half"), 0o640)
	cfg := c.sp.Config()
	sp, err := spool.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := run(t, sp, q, Options{})
	if len(after) != len(before) {
		t.Fatalf("after repair %d packets, before %d", len(after), len(before))
	}
	for i := range after {
		if cmpAnswer(after[i], before[i]) != 0 {
			t.Fatalf("packet %d differs after repair", i)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dir, ".x.idx.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file survived Open: %v", err)
	}
}

// truncating truncates the spool's pcap files when the first packet of the
// answer is written.
type truncating struct {
	pcapio.PacketWriter
	paths []string
	done  bool
	err   error
}

func (w *truncating) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	if !w.done {
		w.done = true
		for _, p := range w.paths {
			w.err = errors.Join(w.err, os.Truncate(p, pcapio.PcapHeaderSize))
		}
	}
	return w.PacketWriter.WritePacket(ts, origLen, data, iface)
}

// TestTruncatedUnderQuery: pcap files truncated by someone else while a
// query reads them (mapped) neither crash the query (SIGBUS) nor give it a
// wrong packet: every packet it returns is one of the spool's, byte for
// byte, and every other one it was to return is counted as damaged,
// whichever read notices first (a fault on the mapping, pread past the end,
// or the zeros of a mapped file's last page past its new end).
func TestTruncatedUnderQuery(t *testing.T) {
	c := importAll(t)
	q, _ := query.Parse("after 1970-01-01T00:00:00Z", time.Now())
	all, _ := run(t, c.sp, q, Options{}) // caches the indexes: the files get mapped
	paths, _ := filepath.Glob(filepath.Join(c.dir, "*.pcap"))
	var buf bytes.Buffer
	pw, _ := pcapio.NewPcapWriter(&buf, 65535)
	w := &truncating{PacketWriter: pw, paths: paths}
	res, err := Run(context.Background(), c.sp, q, w, Options{})
	if w.err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("query over truncated files: %v", err)
	}
	if res.Packets+res.Damaged != int64(len(all)) || res.Damaged == 0 {
		t.Fatalf("query over truncated files: %d packets and %d damaged, want %d in all", res.Packets, res.Damaged, len(all))
	}
	got := readAnswer(t, buf.Bytes())
	want := map[string]int{}
	for _, a := range all {
		want[answerKey(a)]++
	}
	for i, a := range got {
		if want[answerKey(a)] == 0 {
			t.Fatalf("packet %d of the answer is not one of the spool's", i)
		}
		want[answerKey(a)]--
	}
	// Wait for the indexes of the cut files to be rebuilt.
	if err := c.sp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.sp.Counters().FilesRepaired; got == 0 {
		t.Errorf("no file repaired")
	}
}

func answerKey(a answer) string { return fmt.Sprintf("%d/%d/%x", a.ts, a.origLen, a.data) }

// TestSortByOffset: the radix sort orders candidates as a comparison sort
// does, keeping each candidate's flow, for offsets of every width.
func TestSortByOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 5, radixMin - 1, radixMin, 5000, 70000} {
		for _, end := range []int64{1 << 16, 1 << 30, 1 << 41} {
			if int64(n) > end/2 {
				continue
			}
			seen := map[int64]bool{}
			var cs []cand
			for len(cs) < n {
				off := rng.Int64N(end)
				if !seen[off] {
					seen[off] = true
					cs = append(cs, cand{off: off, flow: int32(off % 7)})
				}
			}
			want := slices.Clone(cs)
			slices.SortFunc(want, func(a, b cand) int { return cmp.Compare(a.off, b.off) })
			got := sortByOffset(cs, end)
			if !slices.Equal(got, want) {
				t.Fatalf("%d candidates below %d: radix order differs", n, end)
			}
		}
	}
}

// TestReadersAgree: reading a file's records from its mapping, with pread
// through the window, and switching from the one to the other halfway (as a
// query does when the mapping's pages prove to be on disk) gives the same
// records.
func TestReadersAgree(t *testing.T) {
	c := importAll(t)
	hs, err := c.sp.Snapshot(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := spool.CloseAll(hs); err != nil {
			t.Error(err)
		}
	})
	records := 0
	for _, h := range hs {
		if !h.Mapped() {
			t.Fatalf("%s not mapped", h.File.Path)
		}
		end := h.View.Summary().DataEnd
		var offs []int64
		var sums []uint32
		for id := range h.View.Summary().Flows {
			if offs, err = h.View.AppendPositions(offs, id); err != nil {
				t.Fatal(err)
			}
			if sums, err = h.View.AppendSums(sums, id); err != nil {
				t.Fatal(err)
			}
		}
		sumAt := map[int64]uint32{}
		for i, o := range offs {
			sumAt[o] = sums[i]
		}
		slices.Sort(offs)
		mapped, switched, pread := newRecordReader(h, end, false), newRecordReader(h, end, false), newRecordReader(h, end, true)
		for i, off := range offs {
			if i == len(offs)/2 {
				switched.slow.Store(slowFaults)
			}
			ahead := int64(recordGuess)
			if i+1 < len(offs) {
				ahead = offs[i+1] - off + recordGuess
			}
			var got [3]answer
			for j, rr := range []*recordReader{&mapped, &switched, &pread} {
				hdr, data, err := rr.record(off, ahead, sumAt[off])
				if err != nil {
					t.Fatal(err)
				}
				got[j] = answer{hdr.Timestamp, hdr.OrigLen, slices.Clone(data)}
			}
			if cmpAnswer(got[0], got[2]) != 0 || cmpAnswer(got[1], got[2]) != 0 {
				t.Fatalf("%s offset %d: the readers disagree", h.File.Path, off)
			}
			records++
		}
	}
	if records != len(c.refs) {
		t.Fatalf("compared %d records, want %d", records, len(c.refs))
	}
}
