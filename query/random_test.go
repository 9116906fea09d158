package query

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// This file checks the package against a second, deliberately naive
// implementation: random expression trees are generated here, written out
// as query text in every spelling the grammar allows, parsed, and the
// compiled query is compared with a direct interpreter over the generated
// tree (netip.Prefix.Contains instead of masks, a binary tree instead of
// chains, booleans instead of the engine's shortcuts).

type gop int

const (
	gPrim gop = iota
	gNot
	gAnd
	gOr
)

type gexpr struct {
	op   gop
	l, r *gexpr // gNot uses l
	p    gprim
}

type gprim struct {
	kind string // host net port proto tcp udp sctp icmp icmp6 ip ip6 vlan mpls before after
	dir  string // "", "src", "dst"
	pfx  netip.Prefix
	num  int
	t    int64
	cid  string // community-id
	text string
}

var (
	pool4  = []string{"10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.1.1", "8.8.8.8", "0.0.0.0"}
	pool6  = []string{"2001:db8::1", "2001:db8::2", "2001:db8:1::1", "fe80::1", "::ffff:10.0.0.1", "::"}
	pfx4   = []string{"10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/16", "0.0.0.0/0", "10.0.0.1/32", "192.168.0.0/16", "8.8.8.8/31"}
	pfx6   = []string{"2001:db8::/32", "2001:db8::/48", "::/0", "fe80::/10", "2001:db8::1/128", "::/80", "2001:db8:1::/64"}
	ports  = []int{0, 22, 53, 80, 443, 65535}
	protos = []int{0, 1, 6, 17, 50, 58, 132}
	vlans  = []int{0, 1, 100, 4095}
	mplss  = []int{0, 17, 1048575}
	// Request/reply pairs and one-way messages of ICMP and ICMPv6.
	icmpTypes = []int{0, 3, 8, 11, 128, 129, 1, 135, 136}
	// Relative times are whole seconds before now, so they can be written
	// as durations; the others are absolute.
	agos  = []time.Duration{0, 45 * time.Minute, 90 * time.Minute, 3 * time.Hour, 24 * time.Hour, 49*time.Hour + 2*time.Second}
	times = []int64{t0, t0 + 500_000_000, t0 + int64(time.Hour), now.UnixNano() - 1, 0, -1}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// spell writes a keyword in a random case.
func spell(r *rand.Rand, w string) string {
	switch r.IntN(4) {
	case 0:
		return strings.ToUpper(w)
	case 1:
		return strings.ToUpper(w[:1]) + w[1:]
	}
	return w
}

func genPrim(r *rand.Rand) gprim {
	var p gprim
	kinds := []string{"host", "net", "port", "proto", "tcp", "udp", "sctp", "icmp", "icmp6", "ip", "ip6", "vlan", "mpls", "before", "after", "community-id"}
	p.kind = pick(r, kinds)
	if p.kind == "host" || p.kind == "net" || p.kind == "port" {
		p.dir = pick(r, []string{"", "", "src", "dst"})
	}
	var w strings.Builder
	if p.dir != "" {
		w.WriteString(spell(r, p.dir) + " ")
	}
	switch p.kind {
	case "host":
		var a netip.Addr
		if r.IntN(2) == 0 {
			a = netip.MustParseAddr(pick(r, pool4))
		} else {
			a = netip.MustParseAddr(pick(r, pool6))
			if a.Is4In6() {
				a = a.Unmap() // the documented meaning of a mapped address
			}
		}
		p.pfx = netip.PrefixFrom(a, a.BitLen())
		text := a.String()
		if a.Is4() && r.IntN(4) == 0 {
			text = "::ffff:" + text
		} else if r.IntN(3) == 0 {
			text = strings.ToUpper(text)
		}
		w.WriteString(spell(r, "host") + " " + text)
	case "net":
		var pf netip.Prefix
		if r.IntN(2) == 0 {
			pf = netip.MustParsePrefix(pick(r, pfx4))
		} else {
			pf = netip.MustParsePrefix(pick(r, pfx6))
		}
		p.pfx = pf
		// Set random host bits: the parser must clear them.
		b := pf.Addr().AsSlice()
		for i := pf.Bits(); i < len(b)*8; i++ {
			if r.IntN(2) == 0 {
				b[i/8] |= 0x80 >> (i % 8)
			}
		}
		a, _ := netip.AddrFromSlice(b)
		w.WriteString(spell(r, "net") + " ")
		switch r.IntN(4) {
		case 0:
			m := make([]byte, len(b))
			for i := 0; i < pf.Bits(); i++ {
				m[i/8] |= 0x80 >> (i % 8)
			}
			ma, _ := netip.AddrFromSlice(m)
			fmt.Fprintf(&w, "%s %s %s", a, spell(r, "mask"), ma)
		case 1:
			if a.Is4() {
				fmt.Fprintf(&w, "::ffff:%s/%d", a, pf.Bits()+96)
				break
			}
			fmt.Fprintf(&w, "%s / %d", a, pf.Bits())
		default:
			fmt.Fprintf(&w, "%s/%d", a, pf.Bits())
		}
	case "port":
		p.num = pick(r, ports)
		fmt.Fprintf(&w, "%s %d", spell(r, "port"), p.num)
	case "proto":
		p.num = pick(r, protos)
		fmt.Fprintf(&w, "%s %s %d", spell(r, "ip"), spell(r, "proto"), p.num)
	case "vlan":
		p.num = pick(r, vlans)
		fmt.Fprintf(&w, "%s %d", spell(r, "vlan"), p.num)
	case "mpls":
		p.num = pick(r, mplss)
		fmt.Fprintf(&w, "%s %d", spell(r, "mpls"), p.num)
	case "community-id":
		// The ID of a key from the pools, of either direction, so that
		// it matches some test keys.
		for p.cid == "" {
			k := randKey(r)
			if r.IntN(2) == 0 {
				k.Src, k.Dst, k.SrcPort, k.DstPort = k.Dst, k.Src, k.DstPort, k.SrcPort
			}
			p.cid = k.CommunityID(0)
		}
		fmt.Fprintf(&w, "%s %s", spell(r, "community-id"), p.cid)
	case "before", "after":
		w.WriteString(spell(r, p.kind) + " ")
		if r.IntN(2) == 0 {
			d := pick(r, agos)
			p.t = now.Add(-d).UnixNano()
			w.WriteString(spellDuration(r, d) + " " + spell(r, "ago"))
		} else {
			p.t = pick(r, times)
			zone := time.FixedZone("", pick(r, []int{0, 3600, -7 * 3600, 5*3600 + 1800}))
			text := time.Unix(0, p.t).In(zone).Format(time.RFC3339Nano)
			if r.IntN(4) == 0 {
				text = strings.ToLower(text)
			}
			w.WriteString(text)
		}
	default:
		w.WriteString(spell(r, p.kind))
	}
	p.text = w.String()
	return p
}

// spellDuration writes d (whole seconds) in one of the accepted forms.
func spellDuration(r *rand.Rand, d time.Duration) string {
	s := int64(d / time.Second)
	switch r.IntN(3) {
	case 0:
		return fmt.Sprintf("%ds", s)
	case 1:
		if s%60 == 0 {
			return fmt.Sprintf("%dM", s/60)
		}
	}
	var b strings.Builder
	for _, u := range []struct {
		n int64
		c string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if s >= u.n {
			fmt.Fprintf(&b, "%d%s", s/u.n, u.c)
			s %= u.n
		}
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}

func genExpr(r *rand.Rand, depth int) *gexpr {
	if depth <= 0 || r.IntN(3) == 0 {
		return &gexpr{op: gPrim, p: genPrim(r)}
	}
	switch r.IntN(5) {
	case 0:
		return &gexpr{op: gNot, l: genExpr(r, depth-1)}
	case 1, 2:
		return &gexpr{op: gAnd, l: genExpr(r, depth-1), r: genExpr(r, depth-1)}
	}
	return &gexpr{op: gOr, l: genExpr(r, depth-1), r: genExpr(r, depth-1)}
}

// render writes e so that the equal-precedence, left-to-right grammar reads
// it back as the same tree.
func render(r *rand.Rand, e *gexpr) string {
	paren := func(s string) string {
		if r.IntN(2) == 0 {
			return "(" + s + ")"
		}
		return "( " + s + " )"
	}
	maybe := func(s string) string {
		if r.IntN(6) == 0 {
			return paren(s)
		}
		return s
	}
	switch e.op {
	case gPrim:
		return maybe(e.p.text)
	case gNot:
		kid := render(r, e.l)
		if e.l.op == gAnd || e.l.op == gOr {
			kid = paren(kid)
		}
		if r.IntN(2) == 0 {
			return maybe("!" + kid)
		}
		return maybe(spell(r, "not") + " " + kid)
	}
	l, rr := render(r, e.l), render(r, e.r)
	if e.r.op == gAnd || e.r.op == gOr {
		rr = paren(rr)
	}
	var op string
	if e.op == gAnd {
		op = pick(r, []string{" and ", " AND ", " && ", "&&"})
	} else {
		op = pick(r, []string{" or ", " Or ", " || ", "||"})
	}
	return maybe(l + op + rr)
}

func gaddr(k *flow.Key, b *[16]byte) (netip.Addr, bool) {
	switch {
	case k.Flags&flow.FlagIPv4 != 0:
		return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]}), true
	case k.Flags&flow.FlagIPv6 != 0:
		return netip.AddrFrom16(*b), true
	}
	return netip.Addr{}, false
}

func (p *gprim) matchKey(k *flow.Key) bool {
	v4, v6 := k.Flags&flow.FlagIPv4 != 0, k.Flags&flow.FlagIPv6 != 0
	ip := v4 || v6
	switch p.kind {
	case "host", "net":
		sides := []*[16]byte{&k.Src, &k.Dst}
		if p.dir == "src" {
			sides = sides[:1]
		} else if p.dir == "dst" {
			sides = sides[1:]
		}
		for _, s := range sides {
			if a, ok := gaddr(k, s); ok && p.pfx.Contains(a) {
				return true
			}
		}
		return false
	case "port":
		if k.Flags&flow.FlagPorts == 0 {
			return false
		}
		return (p.dir != "dst" && int(k.SrcPort) == p.num) || (p.dir != "src" && int(k.DstPort) == p.num)
	case "proto":
		return ip && int(k.Proto) == p.num
	case "tcp":
		return ip && k.Proto == 6
	case "udp":
		return ip && k.Proto == 17
	case "sctp":
		return ip && k.Proto == 132
	case "icmp":
		return v4 && k.Proto == 1
	case "icmp6":
		return v6 && k.Proto == 58
	case "ip":
		return v4
	case "ip6":
		return v6
	case "vlan":
		return k.Flags&flow.FlagVLAN0 != 0 && int(k.VLAN[0]) == p.num ||
			k.Flags&flow.FlagVLAN1 != 0 && int(k.VLAN[1]) == p.num
	case "mpls":
		return k.Flags&flow.FlagMPLS != 0 && int(k.MPLS) == p.num
	case "community-id":
		return k.CommunityID(0) == p.cid
	}
	panic(p.kind)
}

func (e *gexpr) eval(k *flow.Key, ts int64) bool {
	switch e.op {
	case gNot:
		return !e.l.eval(k, ts)
	case gAnd:
		return e.l.eval(k, ts) && e.r.eval(k, ts)
	case gOr:
		return e.l.eval(k, ts) || e.r.eval(k, ts)
	}
	switch e.p.kind {
	case "before":
		return ts < e.p.t
	case "after":
		return ts >= e.p.t
	}
	return e.p.matchKey(k)
}

// verdict is Kleene's logic with ByTime as unknown, written as truth tables.
func (e *gexpr) verdict(k *flow.Key) Verdict {
	switch e.op {
	case gNot:
		return [...]Verdict{No: Yes, Yes: No, ByTime: ByTime}[e.l.verdict(k)]
	case gAnd:
		return [3][3]Verdict{
			No:     {No, No, No},
			Yes:    {No, Yes, ByTime},
			ByTime: {No, ByTime, ByTime},
		}[e.l.verdict(k)][e.r.verdict(k)]
	case gOr:
		return [3][3]Verdict{
			No:     {No, Yes, ByTime},
			Yes:    {Yes, Yes, Yes},
			ByTime: {ByTime, Yes, ByTime},
		}[e.l.verdict(k)][e.r.verdict(k)]
	}
	if e.p.kind == "before" || e.p.kind == "after" {
		if e.p.t == math.MinInt64 {
			return boolVerdict(e.p.kind == "after")
		}
		return ByTime
	}
	return boolVerdict(e.p.matchKey(k))
}

func (e *gexpr) timeOnly() bool {
	switch e.op {
	case gNot:
		return e.l.timeOnly()
	case gAnd, gOr:
		return e.l.timeOnly() && e.r.timeOnly()
	}
	return e.p.kind == "before" || e.p.kind == "after"
}

func (e *gexpr) times(out *[]int64) {
	switch e.op {
	case gPrim:
		if e.p.kind == "before" || e.p.kind == "after" {
			*out = append(*out, e.p.t)
		}
	default:
		e.l.times(out)
		if e.r != nil {
			e.r.times(out)
		}
	}
}

// testKeys returns the hand-built keys plus random keys drawn from the same
// pools the queries use, so that primitives match often.
func testKeys(r *rand.Rand, n int) []*flow.Key {
	var ks []*flow.Key
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range keys {
			if !yield(n) {
				return
			}
		}
	}) {
		k := keys[name]
		ks = append(ks, &k)
	}
	for range n {
		k := randKey(r)
		if r.IntN(3) == 0 {
			k = withVLAN(k, uint16(pick(r, vlans)))
			if r.IntN(2) == 0 {
				k = withVLAN(k, k.VLAN[0], uint16(pick(r, vlans)))
			}
		}
		if r.IntN(4) == 0 {
			k = withMPLS(k, uint32(pick(r, mplss)))
		}
		ks = append(ks, &k)
	}
	return ks
}

// randKey draws a key without tags from the pools.
func randKey(r *rand.Rand) flow.Key {
	var k flow.Key
	switch r.IntN(5) {
	case 0:
		k.EtherType = pick(r, []uint16{0, 0x0806, 0x88cc, 0x8100})
	case 1, 2:
		k = ipKey(pick(r, pool4), pick(r, pool4), uint8(pick(r, protos)), -1, -1)
	default:
		k = ipKey(pick(r, pool6), pick(r, pool6), uint8(pick(r, protos)), -1, -1)
	}
	if k.IsIP() && (k.Proto == 6 || k.Proto == 17 || k.Proto == 132) && r.IntN(4) != 0 {
		k.Flags |= flow.FlagPorts
		k.SrcPort, k.DstPort = uint16(pick(r, ports)), uint16(pick(r, ports))
	}
	if k.IsIP() && (k.Proto == 1 || k.Proto == 58) && r.IntN(4) != 0 {
		k.Flags |= flow.FlagICMP
		k.SrcPort, k.DstPort = uint16(pick(r, icmpTypes)), uint16(pick(r, []int{0, 1}))
	}
	if k.IsIP() && r.IntN(6) == 0 {
		k.Flags |= flow.FlagFragment
	}
	return k
}

// critical returns timestamps covering every interval the query's time
// bounds cut the line into: the answer is constant between them.
func critical(e *gexpr) []int64 {
	var ts []int64
	e.times(&ts)
	out := []int64{math.MinInt64, math.MinInt64 + 1, 0, math.MaxInt64 - 1}
	for _, t := range ts {
		for _, d := range []int64{-1, 0, 1} {
			if v := t + d; (d >= 0 || v < t) && (d <= 0 || v > t) && v != math.MaxInt64 {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestAgainstInterpreter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ks := testKeys(r, 60)
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		e := genExpr(r, 1+i%5)
		text := render(r, e)
		q, err := Parse(text, now)
		if err != nil {
			t.Fatalf("Parse(%q): %v", text, err)
		}
		checkQuery(t, text, q, e, ks)
		if t.Failed() {
			return
		}
	}
}

func checkQuery(t *testing.T, text string, q *Query, e *gexpr, ks []*flow.Key) {
	t.Helper()
	// Canonical form: a fixed point, the same AST.
	c := q.String()
	q2, err := Parse(c, now.Add(time.Hour))
	if err != nil {
		t.Fatalf("%q: canonical %q: %v", text, c, err)
	}
	if q2.String() != c || !reflect.DeepEqual(q.root, q2.root) {
		t.Fatalf("%q: canonical %q re-parses as %q", text, c, q2.String())
	}
	if q.TimeOnly() != e.timeOnly() {
		t.Fatalf("%q: TimeOnly() = %v", text, q.TimeOnly())
	}
	lo, hi := q.TimeRange()
	tss := critical(e)
	for _, k := range ks {
		v := q.MatchFlow(k)
		if want := e.verdict(k); v != want {
			t.Fatalf("%q (%s) on %v: MatchFlow = %v, want %v", text, c, k, v, want)
		}
		if w := q.MatchFlowWithID(k, flow.CommunityIDHead(k, 0), math.MinInt64, math.MaxInt64); w != v {
			t.Fatalf("%q on %v: MatchFlowWithID = %v, MatchFlow %v", text, k, w, v)
		}
		for _, ts := range tss {
			got := q.MatchPacket(k, ts)
			if want := e.eval(k, ts); got != want {
				t.Fatalf("%q (%s) on %v at %d: MatchPacket = %v, want %v", text, c, k, ts, got, want)
			}
			if v == Yes && !got || v == No && got {
				t.Fatalf("%q on %v at %d: MatchFlow %v but MatchPacket %v", text, k, ts, v, got)
			}
			if got && (ts < lo || ts >= hi) {
				t.Fatalf("%q on %v: matches at %d outside TimeRange [%d, %d)", text, k, ts, lo, hi)
			}
			// A single instant decides every time primitive.
			if d := q.MatchFlowDuring(k, ts, ts); d != boolVerdict(got) {
				t.Fatalf("%q on %v: MatchFlowDuring(%d, %d) = %v, MatchPacket %v", text, k, ts, ts, d, got)
			}
		}
		// Spans between critical points: Yes and No must hold throughout.
		for j := 0; j+1 < len(tss); j += 2 {
			first, last := tss[j], tss[j+1+(j%3)%max(1, len(tss)-j-1)]
			d := q.MatchFlowDuring(k, first, last)
			if d == ByTime {
				continue
			}
			for _, ts := range tss {
				if ts >= first && ts <= last && q.MatchPacket(k, ts) != (d == Yes) {
					t.Fatalf("%q on %v: MatchFlowDuring(%d, %d) = %v, but MatchPacket(%d) disagrees", text, k, first, last, d, ts)
				}
			}
		}
		if q.TimeOnly() {
			for _, ts := range tss {
				if q.MatchPacket(k, ts) != q.MatchPacket(nil, ts) {
					t.Fatalf("%q: time-only query depends on the key %v at %d", text, k, ts)
				}
			}
		}
	}
}
