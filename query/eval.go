package query

import (
	"encoding/binary"

	"github.com/stenod/stenod/flow"
)

type opcode uint8

const (
	opChain opcode = iota // terms[a : a+n]
	opNot                 // child ins[a]
	opAddr                // host and net: (addr & mask) == val on a key of family fam
	opPort
	opProto // proto == num on a key of family fam
	opFam   // the key has family fam (ip, ip6)
	opVLAN
	opMPLS
	opBefore
	opAfter
	opCommunityID // the key's Community ID, hashed with seed, is val and num
)

// instr is one compiled node. Nodes live in one slice and refer to each other
// by index, so evaluating walks plain memory: no interfaces, no closures, no
// allocation, and addresses compare as two 64-bit words.
type instr struct {
	op   opcode
	dir  dir
	fam  flow.Flags // opAddr, opProto, opFam: the key must have one of these
	seed uint16     // opCommunityID
	num  uint32
	t    int64
	val  [2]uint64
	mask [2]uint64
	a, n int32
}

type cterm struct {
	or bool
	i  int32
}

type prog struct {
	ins   []instr
	terms []cterm
	root  int32
	seed  uint16 // the Community ID seed, for opCommunityID
	// hasCommunityID: some instruction is opCommunityID.
	hasCommunityID bool
}

const anyIP = flow.FlagIPv4 | flow.FlagIPv6

func (p *prog) compile(n *node) int32 {
	var in instr
	switch n.kind {
	case kChain:
		// Children first, so their terms don't interleave with ours.
		kids := make([]cterm, len(n.terms))
		for i, t := range n.terms {
			kids[i] = cterm{or: t.or, i: p.compile(t.n)}
		}
		in = instr{op: opChain, a: int32(len(p.terms)), n: int32(len(kids))}
		p.terms = append(p.terms, kids...)
	case kNot:
		in = instr{op: opNot, a: p.compile(n.kid)}
	case kHost, kNet:
		in = instr{op: opAddr, dir: n.dir}
		var v, m [16]byte
		a := n.pfx.Addr()
		if a.Is4() {
			// Only the first 4 bytes of an IPv4 key are compared, so
			// whatever follows them cannot spoil a match.
			in.fam = flow.FlagIPv4
			a4 := a.As4()
			copy(v[:], a4[:])
		} else {
			in.fam = flow.FlagIPv6
			v = a.As16()
		}
		for i := 0; i < n.pfx.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		in.val = [2]uint64{binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])}
		in.mask = [2]uint64{binary.BigEndian.Uint64(m[:8]), binary.BigEndian.Uint64(m[8:])}
	case kPort:
		in = instr{op: opPort, dir: n.dir, num: n.num}
	case kProto:
		in = instr{op: opProto, fam: anyIP, num: n.num}
	case kTCP:
		in = instr{op: opProto, fam: anyIP, num: 6}
	case kUDP:
		in = instr{op: opProto, fam: anyIP, num: 17}
	case kSCTP:
		in = instr{op: opProto, fam: anyIP, num: 132}
	case kICMP:
		in = instr{op: opProto, fam: flow.FlagIPv4, num: 1}
	case kICMP6:
		in = instr{op: opProto, fam: flow.FlagIPv6, num: 58}
	case kIP:
		in = instr{op: opFam, fam: flow.FlagIPv4}
	case kIP6:
		in = instr{op: opFam, fam: flow.FlagIPv6}
	case kVLAN:
		in = instr{op: opVLAN, num: n.num}
	case kMPLS:
		in = instr{op: opMPLS, num: n.num}
	case kCommunityID:
		// The 20-byte digest as 16 + 4: no pointer, so the program stays
		// plain memory.
		in = instr{op: opCommunityID, seed: p.seed, num: binary.BigEndian.Uint32(n.cid[16:])}
		p.hasCommunityID = true
		in.val[0] = binary.BigEndian.Uint64(n.cid[:8])
		in.val[1] = binary.BigEndian.Uint64(n.cid[8:16])
	case kBefore:
		in = instr{op: opBefore, t: n.t}
	case kAfter:
		in = instr{op: opAfter, t: n.t}
	default:
		panic("query: compile: unknown node kind")
	}
	p.ins = append(p.ins, in)
	return int32(len(p.ins) - 1)
}

func (in *instr) addrIs(a *[16]byte) bool {
	return binary.BigEndian.Uint64(a[:8])&in.mask[0] == in.val[0] &&
		binary.BigEndian.Uint64(a[8:])&in.mask[1] == in.val[1]
}

// matchKey evaluates a primitive that depends on the key only.
func (in *instr) matchKey(k *flow.Key) bool {
	switch in.op {
	case opAddr:
		if k.Flags&in.fam == 0 {
			return false
		}
		switch in.dir {
		case dirSrc:
			return in.addrIs(&k.Src)
		case dirDst:
			return in.addrIs(&k.Dst)
		}
		return in.addrIs(&k.Src) || in.addrIs(&k.Dst)
	case opPort:
		if k.Flags&flow.FlagPorts == 0 {
			return false
		}
		p := uint16(in.num)
		switch in.dir {
		case dirSrc:
			return k.SrcPort == p
		case dirDst:
			return k.DstPort == p
		}
		return k.SrcPort == p || k.DstPort == p
	case opProto:
		return k.Flags&in.fam != 0 && uint32(k.Proto) == in.num
	case opFam:
		return k.Flags&in.fam != 0
	case opVLAN:
		v := uint16(in.num)
		return k.Flags&flow.FlagVLAN0 != 0 && k.VLAN[0] == v ||
			k.Flags&flow.FlagVLAN1 != 0 && k.VLAN[1] == v
	case opMPLS:
		return k.Flags&flow.FlagMPLS != 0 && k.MPLS == in.num
	case opCommunityID:
		// A SHA-1 per key (about 140 ns): the dearest primitive, but only
		// ever evaluated on flow keys, and on the packets of flows it
		// matched.
		sum, ok := flow.CommunityIDHash(k, in.seed)
		return ok && binary.BigEndian.Uint64(sum[:8]) == in.val[0] &&
			binary.BigEndian.Uint64(sum[8:16]) == in.val[1] && binary.BigEndian.Uint32(sum[16:]) == in.num
	}
	return false
}

func (p *prog) packet(i int32, k *flow.Key, ts int64) bool {
	in := &p.ins[i]
	switch in.op {
	case opChain:
		terms := p.terms[in.a : in.a+in.n]
		acc := p.packet(terms[0].i, k, ts)
		for _, t := range terms[1:] {
			// Left to right: `x or y` with x true, or `x and y` with x
			// false, leaves acc as it is.
			if t.or != acc {
				acc = p.packet(t.i, k, ts)
			}
		}
		return acc
	case opNot:
		return !p.packet(in.a, k, ts)
	case opBefore:
		return ts < in.t
	case opAfter:
		return ts >= in.t
	}
	return in.matchKey(k)
}

func boolVerdict(b bool) Verdict {
	if b {
		return Yes
	}
	return No
}

// flow is Kleene's three-valued logic with ByTime as unknown: sound (Yes and
// No are never wrong) but not complete, which is all the engine needs.
func (p *prog) flow(i int32, k *flow.Key, cid *uint64, first, last int64) Verdict {
	in := &p.ins[i]
	switch in.op {
	case opChain:
		terms := p.terms[in.a : in.a+in.n]
		acc := p.flow(terms[0].i, k, cid, first, last)
		for _, t := range terms[1:] {
			if t.or {
				if acc == Yes {
					continue
				}
				if r := p.flow(t.i, k, cid, first, last); r != No {
					acc = r // Yes, or ByTime over No/ByTime
				}
			} else {
				if acc == No {
					continue
				}
				if r := p.flow(t.i, k, cid, first, last); r != Yes {
					acc = r
				}
			}
		}
		return acc
	case opNot:
		switch v := p.flow(in.a, k, cid, first, last); v {
		case Yes:
			return No
		case No:
			return Yes
		default:
			return v
		}
	case opBefore:
		switch {
		case last < in.t:
			return Yes
		case first >= in.t:
			return No
		}
		return ByTime
	case opAfter:
		switch {
		case first >= in.t:
			return Yes
		case last < in.t:
			return No
		}
		return ByTime
	}
	if in.op == opCommunityID && cid != nil && *cid != in.val[0] {
		// The flow's ID, hashed before, differs in its first 8 bytes: no
		// SHA-1 needed. Equal, the whole ID is compared below.
		return No
	}
	return boolVerdict(in.matchKey(k))
}
