//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcp4Frame is Ethernet + IPv4 + TCP with flags, padded with zeros to size bytes.
func tcp4Frame(src, dst string, sport, dport uint16, flags byte, size int) []byte {
	b := ethHeader(0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8], ip[9] = 64, 6
	copy(ip[12:], netip.MustParseAddr(src).AsSlice())
	copy(ip[16:], netip.MustParseAddr(dst).AsSlice())
	b = append(b, ip...)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12], tcp[13] = 5<<4, flags
	b = append(b, tcp...)
	if len(b) < size {
		b = append(b, make([]byte, size-len(b))...)
	}
	return b
}

// runSocket runs the socket filter over frame with BPF_PROG_TEST_RUN and
// returns its verdict: 0 = drop, else the bytes to keep. The kernel hands a
// socket filter under test the skb with its Ethernet header pulled (a
// packet socket sees it from the Ethernet header on), so a dummy header
// goes in front of the frame.
func runSocket(tb testing.TB, p *Program, frame []byte) uint32 {
	tb.Helper()
	data := append(ethHeader(0x88b5), frame...)
	ret, err := p.SocketFilter().Run(&ebpf.RunOptions{Data: data})
	if err != nil {
		tb.Fatalf("run socket filter on a %d-byte frame: %v", len(frame), err)
	}
	return ret
}

// A cutter runs one of the two programs over a frame and says whether it
// cut it.
type cutter struct {
	name string
	cut  func(tb testing.TB, p *Program, frame []byte) bool
}

var cutters = []cutter{
	{"xdp", func(tb testing.TB, p *Program, frame []byte) bool {
		tb.Helper()
		action, _, _ := mustRun(tb, p, frame)
		if action != xdpDrop && action != xdpPass {
			tb.Fatalf("XDP action %d", action)
		}
		return action == xdpDrop
	}},
	{"socket", func(tb testing.TB, p *Program, frame []byte) bool {
		tb.Helper()
		return runSocket(tb, p, frame) == 0
	}},
}

func cutoffProgram(tb testing.TB, c CutoffConfig) *Program {
	tb.Helper()
	return testProgram(tb, ProgramOptions{Config: ProgramConfig{Cutoff: c}, MaxFlows: 1 << 16})
}

func mustConn(tb testing.TB, p *Program, frame []byte) Conn {
	tb.Helper()
	k := goKey(frame)
	c, ok, err := p.LookupConn(&k)
	if err != nil || !ok {
		tb.Fatalf("connection of %v: found %v, %v", k, ok, err)
	}
	return c
}

// TestCutoffMatchesModel runs every test capture's packets through both
// programs with a cutoff whose rules and limits cut about half of them,
// and requires each decision, and in the end every connection's counts, to
// be the Go model's (CutoffModel, ConnKey): so the C canonicalisation,
// rule matching, counting and decision are the Go ones, and the socket
// filter decides exactly as the XDP program.
func TestCutoffMatchesModel(t *testing.T) {
	caps := testpcaps.Ethernet(t, "")
	cfg := CutoffConfig{
		Default: Limit{Bytes: 3000},
		Rules: []CutoffRule{
			{Name: "udp", Match: []DropRule{{Proto: 17}}, Limit: Limit{Packets: 3}},
			{Name: "port 443", Match: []DropRule{{Port: 443}}, Limit: Limit{Bytes: 5000, Packets: 8}},
			{Name: "net 10/8", Match: []DropRule{{Src: netip.MustParsePrefix("10.0.0.0/8")}}, Limit: Limit{}},
		},
	}
	var frames [][]byte
	for _, c := range caps {
		for _, pkt := range c.Packets {
			// BPF_PROG_TEST_RUN of a socket filter takes at most
			// about a page; no Ethernet header, no run.
			if len(pkt.Data) >= 14 && len(pkt.Data) <= 3000 {
				frames = append(frames, pkt.Data)
			}
		}
	}
	frames = append(frames, edgeFrames()...)
	decisions := make(map[string][]bool)
	for _, ct := range cutters {
		t.Run(ct.name, func(t *testing.T) {
			p := cutoffProgram(t, cfg)
			model, err := NewCutoffModel(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var cut []bool
			var k flow.Key
			var disagree, cuts int
			for i, f := range frames {
				flow.Parse(f, &k)
				want := model.Packet(&k, uint64(len(f)), flow.TCPFlags(f, &k), 1)
				got := ct.cut(t, p, f)
				cut = append(cut, got)
				if got {
					cuts++
				}
				if got != want {
					disagree++
					if disagree <= 10 {
						t.Errorf("frame %d (%v): cut %v, the model says %v", i, k, got, want)
					}
				}
			}
			decisions[ct.name] = cut
			n := 0
			model.Conns(func(want *Conn) {
				n++
				got, ok, err := p.LookupConn(&want.Key)
				if err != nil || !ok {
					t.Fatalf("connection %v not in the kernel's table: %v", want.Key, err)
				}
				if got.Key != want.Key {
					t.Fatalf("connection %v has the kernel key %v", want.Key, got.Key)
				}
				if (got.LastCut != 0) != (want.LastCut != 0) {
					t.Errorf("connection %v: last cut %d, the model's %d", want.Key, got.LastCut, want.LastCut)
				}
				got.LastCut = want.LastCut
				if got != *want {
					t.Errorf("connection %v:\n got %+v\nwant %+v", want.Key, got, *want)
				}
			})
			var kk flow.Key
			var v ConnValue
			entries := 0
			it := p.Conns().Iterate()
			for it.Next(&kk, &v) {
				entries++
			}
			if err := it.Err(); err != nil || entries != n {
				t.Fatalf("the kernel has %d connections, the model %d (%v)", entries, n, err)
			}
			s := mustStats(t, p)
			if s.CutPackets != uint64(cuts) {
				t.Errorf("stats: %d cut packets, %d cut", s.CutPackets, cuts)
			}
			t.Logf("%d frames, %d connections, %d cut, %d disagreements", len(frames), n, cuts, disagree)
			if cuts < len(frames)/10 || cuts > len(frames)*9/10 {
				t.Errorf("%d of %d frames cut: the test tests little", cuts, len(frames))
			}
		})
	}
	if x, s := decisions["xdp"], decisions["socket"]; len(x) == len(frames) && len(s) == len(frames) {
		for i := range frames {
			if x[i] != s[i] {
				t.Fatalf("frame %d: XDP cut %v, socket filter cut %v", i, x[i], s[i])
			}
		}
	}
}

// connFrames is a TCP connection between A 10.0.0.1:40000 (the canonical
// source: direction 0) and B 10.0.0.2:80: SYN, SYN-ACK, ACK (60 bytes),
// ten 200-byte data packets alternating A->B and B->A, then FIN, FIN, RST.
func connFrames() (frames [][]byte, dirs []int) {
	a := func(flags byte, size int) []byte { return tcp4Frame("10.0.0.1", "10.0.0.2", 40000, 80, flags, size) }
	b := func(flags byte, size int) []byte { return tcp4Frame("10.0.0.2", "10.0.0.1", 80, 40000, flags, size) }
	add := func(f []byte, d int) { frames, dirs = append(frames, f), append(dirs, d) }
	add(a(tcpSYN, 60), 0)
	add(b(tcpSYN|tcpACK, 60), 1)
	add(a(tcpACK, 60), 0)
	for i := range 10 {
		if i%2 == 0 {
			add(a(tcpACK, 200), 0)
		} else {
			add(b(tcpACK, 200), 1)
		}
	}
	add(a(tcpFIN|tcpACK, 60), 0)
	add(b(tcpFIN|tcpACK, 60), 1)
	add(a(tcpRST, 60), 0)
	return frames, dirs
}

func TestCutoffLimits(t *testing.T) {
	frames, dirs := connFrames()
	for _, tc := range []struct {
		name  string
		limit Limit
		// kept: which of connFrames are stored.
		kept string
	}{
		// Bytes before each packet: 0 60 120 180 380 580 780 980 1180...:
		// the data packet that crosses 1000 is stored, the next are
		// cut; FIN, FIN and RST are stored.
		{"bytes", Limit{Bytes: 1000}, "11111111" + "00000" + "111"},
		// Packets before: the 5th packet (4 before it) is cut.
		{"packets", Limit{Packets: 4}, "1111" + "000000000" + "111"},
		{"both", Limit{Bytes: 1000, Packets: 6}, "111111" + "0000000" + "111"},
		{"exact", Limit{Bytes: 980}, "1111111" + "000000" + "111"},
	} {
		for _, ct := range cutters {
			t.Run(tc.name+"/"+ct.name, func(t *testing.T) {
				p := cutoffProgram(t, CutoffConfig{Default: tc.limit})
				rd := cutConnReader(t, p)
				var got strings.Builder
				var want Conn
				for i, f := range frames {
					cut := ct.cut(t, p, f)
					got.WriteByte("10"[btoi(cut)])
					want.Packets++
					want.Bytes += uint64(len(f))
					if cut {
						want.CutPackets[dirs[i]]++
						want.CutBytes[dirs[i]] += uint64(len(f))
					}
				}
				if got.String() != tc.kept {
					t.Fatalf("stored %s, want %s", got.String(), tc.kept)
				}
				c := mustConn(t, p, frames[1]) // either direction finds it
				want.Key, _ = ConnKey(ptr(goKey(frames[0])))
				want.Limit, want.Rule, want.LastCut = tc.limit, -1, c.LastCut
				if c != want || c.LastCut == 0 || want.Key.SrcAddr() != netip.MustParseAddr("10.0.0.1") {
					t.Fatalf("connection\n got %+v\nwant %+v", c, want)
				}
				if d := time.Since(time.Unix(0, c.LastCut)); d < 0 || d > time.Minute {
					t.Errorf("last cut %v is %v ago", time.Unix(0, c.LastCut), d)
				}
				cutP, cutB := c.CutPackets[0]+c.CutPackets[1], c.CutBytes[0]+c.CutBytes[1]
				s := mustStats(t, p)
				if s.CutPackets != cutP || s.CutBytes != cutB {
					t.Errorf("stats: cut %d packets %d bytes, the connection %d, %d", s.CutPackets, s.CutBytes, cutP, cutB)
				}
				cs, err := p.CutoffStats()
				if err != nil {
					t.Fatal(err)
				}
				wantCS := CutoffStats{Packets: cutP, Bytes: cutB, Rules: []RuleCut{{Rule: -1, Name: "default", Packets: cutP, Bytes: cutB}}}
				if !equalCutoffStats(cs, wantCS) {
					t.Errorf("cutoff stats %+v, want %+v", cs, wantCS)
				}
				// One record, for the first cut, with the canonical key.
				rec, ok := rd()
				if !ok || rec.Key != c.Key || rec.FirstCut == 0 {
					t.Fatalf("cut_conns record %+v (%v), want key %v", rec, ok, c.Key)
				}
				if rec, ok := rd(); ok {
					t.Fatalf("a second cut_conns record %+v", rec)
				}
			})
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

func equalCutoffStats(a, b CutoffStats) bool {
	if a.Packets != b.Packets || a.Bytes != b.Bytes || len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		if a.Rules[i] != b.Rules[i] {
			return false
		}
	}
	return true
}

// cutConnReader returns a reader of p's cut_conns ring buffer that never blocks.
func cutConnReader(tb testing.TB, p *Program) func() (CutConnRecord, bool) {
	tb.Helper()
	rd, err := ringbuf.NewReader(p.CutConns())
	if err != nil {
		tb.Fatalf("ringbuf reader: %v", err)
	}
	tb.Cleanup(func() { rd.Close() })
	rd.SetDeadline(time.Unix(1, 0))
	return func() (CutConnRecord, bool) {
		tb.Helper()
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return CutConnRecord{}, false
		}
		if err != nil {
			tb.Fatalf("read cut_conns: %v", err)
		}
		var r CutConnRecord
		if len(rec.RawSample) != CutConnRecordSize {
			tb.Fatalf("cut_conns record of %d bytes, want %d", len(rec.RawSample), CutConnRecordSize)
		}
		if err := r.UnmarshalBinary(rec.RawSample); err != nil {
			tb.Fatal(err)
		}
		return r, true
	}
}

// TestCutoffJitter enters many connections and checks each one's limits
// against the jitter's bounds, and that they vary.
func TestCutoffJitter(t *testing.T) {
	base := Limit{Bytes: 20000, Packets: 100}
	const pct, conns = 25, 400
	for _, ct := range cutters {
		t.Run(ct.name, func(t *testing.T) {
			p := cutoffProgram(t, CutoffConfig{Default: base, JitterPercent: pct})
			bytes, packets := map[uint64]bool{}, map[uint64]bool{}
			for i := range conns {
				f := udp4Frame("10.0.0.1", "10.0.0.2", uint16(1000+i), 53, 80)
				ct.cut(t, p, f)
				c := mustConn(t, p, f)
				if c.Limit.Bytes < base.Bytes || c.Limit.Bytes > base.Bytes*(100+pct)/100 ||
					c.Limit.Packets < base.Packets || c.Limit.Packets > base.Packets*(100+pct)/100 {
					t.Fatalf("connection %d: limit %+v outside %+v + %d%%", i, c.Limit, base, pct)
				}
				bytes[c.Limit.Bytes], packets[c.Limit.Packets] = true, true
			}
			// 5001 and 26 possible values: 400 draws see far more than these.
			if len(bytes) < conns/2 || len(packets) < 20 {
				t.Fatalf("%d distinct byte limits, %d packet limits over %d connections", len(bytes), len(packets), conns)
			}
		})
	}
	// A limit of 0 stays 0 (no limit), whatever the jitter.
	p := cutoffProgram(t, CutoffConfig{Default: Limit{Packets: 10}, JitterPercent: 100})
	f := udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 60)
	mustRun(t, p, f)
	if c := mustConn(t, p, f); c.Limit.Bytes != 0 || c.Limit.Packets < 10 || c.Limit.Packets > 20 {
		t.Fatalf("limit %+v: want no byte limit, 10-20 packets", c.Limit)
	}
}

// TestCutoffRules checks that the first matching rule gives a connection
// its limits, in either orientation of its first packet, that a rule with
// the zero Limit never cuts, and the cut counts per rule.
func TestCutoffRules(t *testing.T) {
	host := netip.MustParsePrefix("10.0.0.5/32")
	cfg := CutoffConfig{
		Default: Limit{Bytes: 1000},
		Rules: []CutoffRule{
			{Name: "port 443", Match: []DropRule{{Port: 443}}, Limit: Limit{Bytes: 2000}},
			{Name: "host 10.0.0.5", Match: []DropRule{{Src: host}, {Dst: host}}, Limit: Limit{}},
			{Name: "src host 10.0.0.9", Match: []DropRule{{Src: netip.MustParsePrefix("10.0.0.9/32")}}, Limit: Limit{Packets: 5}},
		},
	}
	for _, ct := range cutters {
		t.Run(ct.name, func(t *testing.T) {
			p := cutoffProgram(t, cfg)
			for _, tc := range []struct {
				name  string
				first []byte // the first packet, then 40 of 100 bytes
				rule  int
				limit Limit
				cut   uint64
			}{
				{"first match wins", udp4Frame("10.0.0.5", "10.0.0.7", 1000, 443, 100), 0, Limit{Bytes: 2000}, 21},
				{"server first", udp4Frame("10.0.0.7", "10.0.0.6", 443, 1000, 100), 0, Limit{Bytes: 2000}, 21},
				{"never", udp4Frame("10.0.0.5", "10.0.0.7", 1000, 80, 100), 1, Limit{}, 0},
				{"reversed", udp4Frame("10.0.0.7", "10.0.0.9", 80, 1234, 100), 2, Limit{Packets: 5}, 36},
				{"default", udp4Frame("10.0.0.7", "10.0.0.8", 1, 2, 100), -1, Limit{Bytes: 1000}, 31},
			} {
				for range 41 {
					ct.cut(t, p, tc.first)
				}
				c := mustConn(t, p, tc.first)
				cut := c.CutPackets[0] + c.CutPackets[1]
				if c.Rule != tc.rule || c.Limit != tc.limit || cut != tc.cut {
					t.Errorf("%s: rule %d, limit %+v, %d cut; want %d, %+v, %d", tc.name, c.Rule, c.Limit, cut, tc.rule, tc.limit, tc.cut)
				}
			}
			cs, err := p.CutoffStats()
			if err != nil {
				t.Fatal(err)
			}
			want := CutoffStats{Packets: 21 + 21 + 36 + 31, Bytes: 100 * (21 + 21 + 36 + 31), Rules: []RuleCut{
				{0, "port 443", 42, 4200}, {1, "host 10.0.0.5", 0, 0}, {2, "src host 10.0.0.9", 36, 3600}, {-1, "default", 31, 3100},
			}}
			if !equalCutoffStats(cs, want) {
				t.Errorf("cutoff stats\n got %+v\nwant %+v", cs, want)
			}
		})
	}
}

// TestCutoffControlAndSuspend: SYN, FIN and RST pass a connection past its
// limit; a suspended connection is no longer cut, in both directions.
func TestCutoffControlAndSuspend(t *testing.T) {
	a := func(flags byte) []byte { return tcp4Frame("10.0.0.1", "10.0.0.2", 40000, 80, flags, 100) }
	b := func(flags byte) []byte { return tcp4Frame("10.0.0.2", "10.0.0.1", 80, 40000, flags, 100) }
	other := udp4Frame("10.0.0.3", "10.0.0.4", 5, 6, 100)
	for _, ct := range cutters {
		t.Run(ct.name, func(t *testing.T) {
			p := cutoffProgram(t, CutoffConfig{Default: Limit{Packets: 1}})
			ct.cut(t, p, a(tcpACK))
			ct.cut(t, p, other)
			for _, f := range []struct {
				frame []byte
				cut   bool
			}{
				{a(tcpACK), true}, {b(tcpACK), true}, {a(tcpSYN), false}, {b(tcpSYN | tcpACK), false},
				{a(tcpFIN | tcpACK), false}, {b(tcpRST), false}, {a(tcpRST | tcpACK), false}, {a(tcpACK | 0x08), true},
				{other, true},
			} {
				if got := ct.cut(t, p, f.frame); got != f.cut {
					t.Fatalf("%v: cut %v, want %v", goKey(f.frame), got, f.cut)
				}
			}
			n, err := p.SuspendConns(func(k *flow.Key) bool { return k.Proto == 6 })
			if err != nil || n != 1 {
				t.Fatalf("suspend: %d, %v; want 1", n, err)
			}
			before := mustConn(t, p, a(0))
			for _, f := range [][]byte{a(tcpACK), b(tcpACK), a(tcpACK)} {
				if ct.cut(t, p, f) {
					t.Fatalf("suspended connection: %v cut", goKey(f))
				}
			}
			after := mustConn(t, p, a(0))
			if !after.Suspended || after.Packets != before.Packets+3 || after.CutPackets != before.CutPackets {
				t.Fatalf("suspended connection before %+v, after %+v", before, after)
			}
			if !ct.cut(t, p, other) {
				t.Fatal("the other connection is no longer cut")
			}
			if n, err := p.SuspendConns(func(*flow.Key) bool { return true }); err != nil || n != 1 {
				t.Fatalf("suspend all: %d, %v; want 1 (the other one)", n, err)
			}
		})
	}
}

// TestCutoffSuspendBpftool runs the bpftool recipe of docs/bpf.md on the
// pinned conns map and checks that it suspends the connection it names,
// and only that one.
func TestCutoffSuspendBpftool(t *testing.T) {
	testutil.RequireCommand(t, "bpftool")
	testutil.RequireCommand(t, "jq")
	root := bpffs(t)
	recipe := docRecipe(t, "suspend")
	p, err := LoadProgram(ProgramOptions{
		Interface: "lo", PinRoot: root, NoXDP: true, MaxFlows: 1024,
		Config: ProgramConfig{Cutoff: CutoffConfig{Default: Limit{Packets: 1}}},
	})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	t.Cleanup(func() {
		if err := errors.Join(p.Close(), p.Remove()); err != nil {
			t.Error(err)
		}
	})
	if _, err := os.Stat(filepath.Join(p.PinDir(), PinLink)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NoXDP: link pin %v", err)
	}
	for _, name := range []string{PinConns, PinCutConns, PinCutStats, PinSocket, PinProgram} {
		if _, err := os.Stat(filepath.Join(p.PinDir(), name)); err != nil {
			t.Fatalf("pin %s: %v", name, err)
		}
	}
	target := udp4Frame("10.0.0.7", "10.0.0.5", 1000, 53, 100)         // reply direction of a conversation of 10.0.0.5
	target6 := tcp6Frame("2001:db8::5", "2001:db8::1", 1, 2, nil, 100) // not an IPv4 endpoint 10.0.0.5
	other := udp4Frame("10.0.0.7", "10.0.0.6", 1000, 53, 100)
	for _, f := range [][]byte{target, target6, other} {
		mustRun(t, p, f)
		if action, _, _ := mustRun(t, p, f); action != xdpDrop {
			t.Fatalf("%v: not cut before the recipe", goKey(f))
		}
	}
	script := "P=" + p.PinDir() + "\nIP=10.0.0.5\n" + recipe
	out, err := exec.Command("bash", "-euo", "pipefail", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("recipe:\n%s\n%v\n%s", script, err, out)
	}
	for _, f := range []struct {
		frame []byte
		cut   bool
	}{{target, false}, {target6, true}, {other, true}} {
		if action, _, _ := mustRun(t, p, f.frame); (action == xdpDrop) != f.cut {
			t.Errorf("after the recipe, %v: action %d, want cut %v", goKey(f.frame), action, f.cut)
		}
	}
	if c := mustConn(t, p, target); !c.Suspended || c.Packets != 3 || c.CutPackets[0]+c.CutPackets[1] != 1 {
		t.Errorf("suspended connection %+v: want suspended, 3 packets, 1 cut", c)
	}
}

// docRecipe returns the shell block of docs/bpf.md that follows the
// comment "<!-- recipe NAME -->".
func docRecipe(tb testing.TB, name string) string {
	tb.Helper()
	doc, err := os.ReadFile("../docs/bpf.md")
	if err != nil {
		tb.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- recipe " + regexp.QuoteMeta(name) + "[^>]*-->\\s*```sh\n(.*?)```")
	m := re.FindSubmatch(doc)
	if m == nil {
		tb.Fatalf("docs/bpf.md has no recipe %q", name)
	}
	return string(m[1])
}

// TestSocketFilterSnapLength checks what the socket filter returns for
// packets it keeps: the snap length, or the whole packet without one,
// with the cutoff on or off. (A VLAN tag the stack took out of the frame
// makes it 4 less: afpacket's veth test checks that.)
func TestSocketFilterSnapLength(t *testing.T) {
	f := udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 300)
	for _, tc := range []struct {
		snap   uint32
		cutoff CutoffConfig
		want   []uint32
	}{
		{0, CutoffConfig{}, []uint32{300, 300, 300}},
		{100, CutoffConfig{}, []uint32{100, 100, 100}},
		{1000, CutoffConfig{}, []uint32{1000, 1000, 1000}},
		{100, CutoffConfig{Default: Limit{Packets: 2}}, []uint32{100, 100, 0}},
		{0, CutoffConfig{Default: Limit{Bytes: 1}}, []uint32{300, 0, 0}},
	} {
		p := testProgram(t, ProgramOptions{Config: ProgramConfig{SnapLen: tc.snap, Cutoff: tc.cutoff}, MaxFlows: 1024})
		for i, want := range tc.want {
			if got := runSocket(t, p, f); got != want {
				t.Errorf("snap %d, cutoff %+v, packet %d: %d, want %d", tc.snap, tc.cutoff, i, got, want)
			}
		}
	}
}

// TestCutoffObserveDoesNotDecide: in observe mode the XDP program neither
// cuts nor counts connections (the socket filter beside it does).
func TestCutoffObserveDoesNotDecide(t *testing.T) {
	p := testProgram(t, ProgramOptions{Config: ProgramConfig{Observe: true, Cutoff: CutoffConfig{Default: Limit{Packets: 1}}}, MaxFlows: 1024})
	f := udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 100)
	for range 3 {
		if action, _, _ := mustRun(t, p, f); action != xdpPass {
			t.Fatalf("observe mode: action %d", action)
		}
	}
	k := goKey(f)
	if _, ok, err := p.LookupConn(&k); ok || err != nil {
		t.Fatalf("observe mode entered the connection (%v)", err)
	}
	if runSocket(t, p, f) == 0 || runSocket(t, p, f) != 0 {
		t.Fatal("the socket filter beside it does not cut the second packet")
	}
}

func TestCutoffConfigErrors(t *testing.T) {
	p := testProgram(t, ProgramOptions{MaxFlows: 1024, Config: ProgramConfig{Cutoff: CutoffConfig{Default: Limit{Bytes: 1}}}})
	rule := func(name string, n int) CutoffRule {
		return CutoffRule{Name: name, Match: make([]DropRule, n), Limit: Limit{Bytes: 1}}
	}
	ok := CutoffRule{Name: "port 22", Match: []DropRule{{Port: 22}}, Limit: Limit{Packets: 5}}
	many := make([]DropRule, MaxCutoffMatches)
	for i := range many {
		many[i] = DropRule{Port: uint16(i + 1)}
	}
	for _, tc := range []struct {
		c    CutoffConfig
		want error
		name string
	}{
		{CutoffConfig{JitterPercent: 101}, ErrInvalidCutoff, "jitter"},
		{CutoffConfig{Rules: []CutoffRule{ok, {Name: "nothing", Limit: Limit{Bytes: 1}}}}, ErrInvalidCutoff, `cutoff rule 1 ("nothing")`},
		{CutoffConfig{Rules: []CutoffRule{ok, rule("empty match", 1)}}, ErrInvalidDropRule, `cutoff rule 1 ("empty match") match 0`},
		{CutoffConfig{Rules: []CutoffRule{ok, {Name: "big", Match: many}}}, ErrTooManyCutoffMatches, `cutoff rule 1 ("big")`},
	} {
		err := p.SetConfig(ProgramConfig{Cutoff: tc.c})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%+v: %v, want %v naming %s", tc.c, err, tc.want, tc.name)
		}
	}
	if err := p.SetConfig(ProgramConfig{Cutoff: CutoffConfig{Rules: []CutoffRule{{Name: "all", Match: many, Limit: Limit{Bytes: 1}}}}}); err != nil {
		t.Errorf("%d matches: %v", MaxCutoffMatches, err)
	}
	if (CutoffConfig{Rules: []CutoffRule{{Name: "never", Match: []DropRule{{Port: 1}}}}}).Enabled() {
		t.Error("only a never rule: enabled")
	}
	// Loaded without the cutoff, the program has no room for connections.
	off := testProgram(t, ProgramOptions{MaxFlows: 1024})
	if err := off.SetConfig(ProgramConfig{Cutoff: CutoffConfig{Default: Limit{Bytes: 1}}}); !errors.Is(err, ErrCutoffNotLoaded) {
		t.Errorf("enabling the cutoff on a program loaded without: %v, want ErrCutoffNotLoaded", err)
	}
	if err := off.SetConfig(ProgramConfig{SnapLen: 100}); err != nil {
		t.Error(err)
	}
}

// TestConnKey checks the Go canonicalisation on its own; the kernel's is
// compared with it by TestCutoffMatchesModel.
func TestConnKey(t *testing.T) {
	k := goKey(udp4Frame("10.0.0.2", "10.0.0.1", 80, 40000, 60))
	c, rev := ConnKey(&k)
	if !rev || c.SrcAddr() != netip.MustParseAddr("10.0.0.1") || c.SrcPort != 40000 || c.DstPort != 80 {
		t.Fatalf("ConnKey(%v) = %v, %v", k, c, rev)
	}
	if c2, rev2 := ConnKey(&c); c2 != c || rev2 {
		t.Fatalf("ConnKey of a canonical key %v = %v, %v", c, c2, rev2)
	}
	// Same addresses: the ports decide; equal: not reversed.
	k = goKey(udp4Frame("10.0.0.1", "10.0.0.1", 9, 8, 60))
	if c, rev := ConnKey(&k); !rev || c.SrcPort != 8 {
		t.Fatalf("ConnKey(%v) = %v, %v", k, c, rev)
	}
	k.Flags |= flow.FlagFragment | flow.FlagICMP
	if c, _ := ConnKey(&k); c.Flags&flow.FlagFragment != 0 || c.SrcPort != 0 || c.DstPort != 0 {
		t.Fatalf("ConnKey(%v) = %v: fragment flag or ICMP type kept", k, c)
	}
}
