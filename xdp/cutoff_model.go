//go:build linux

package xdp

import (
	"github.com/stenod/stenod/flow"
)

// CutoffModel is the kernel's cutoff decision in Go (docs/bpf.md,
// "Cutoff"): fed the packets of a capture port in order, it says which
// ones the kernel does not store and keeps the counts of the conns table,
// without its size limit (no LRU eviction). Tests hold the kernel to it;
// it also tells what a cutoff would keep of recorded traffic. Not safe for
// concurrent use.
type CutoffModel struct {
	cfg     CutoffConfig
	matches []modelMatch
	rand    func() uint32
	conns   map[flow.Key]*Conn
}

type modelMatch struct {
	value, mask flow.Key
	eitherPort  bool
	rule        int
	limit       Limit
}

// NewCutoffModel returns the model of c. rand draws the jitter (the
// kernel's bpf_get_prandom_u32); nil is allowed when c.JitterPercent is 0.
// The errors are those of ProgramConfig with c as its Cutoff.
func NewCutoffModel(c CutoffConfig, rand func() uint32) (*CutoffModel, error) {
	m := &CutoffModel{cfg: c, rand: rand, conns: make(map[flow.Key]*Conn)}
	v, err := c.compile()
	if err != nil {
		return nil, err
	}
	for _, cm := range v.Matches[:v.N_matches] {
		m.matches = append(m.matches, modelMatch{
			value:      keyOf(&cm.Match.Value),
			mask:       keyOf(&cm.Match.Mask),
			eitherPort: cm.Match.Flags&1 != 0,
			rule:       int(cm.Rule),
			limit:      Limit{Bytes: cm.LimitBytes, Packets: cm.LimitPackets},
		})
	}
	return m, nil
}

// Packet counts a packet with key k, wireLen bytes on the wire and TCP
// flags tcpFlags (flow.TCPFlags) at unix ns ts, and reports whether the
// kernel cuts it.
func (m *CutoffModel) Packet(k *flow.Key, wireLen uint64, tcpFlags uint8, ts int64) (cut bool) {
	if !m.cfg.Enabled() {
		return false
	}
	ck, rev := ConnKey(k)
	c := m.conns[ck]
	if c == nil {
		c = &Conn{Key: ck, Packets: 1, Bytes: wireLen, Rule: -1, Limit: m.cfg.Default}
		for _, mm := range m.matches {
			if mm.matchesEither(k) {
				c.Rule, c.Limit = mm.rule, mm.limit
				break
			}
		}
		c.Limit.Bytes = m.jitter(c.Limit.Bytes)
		c.Limit.Packets = m.jitter(c.Limit.Packets)
		m.conns[ck] = c
		return false
	}
	packets, bytes := c.Packets, c.Bytes
	c.Packets++
	c.Bytes += wireLen
	if c.Suspended || tcpFlags&0x07 != 0 { // FIN, SYN, RST
		return false
	}
	if !(c.Limit.Bytes != 0 && bytes >= c.Limit.Bytes) && !(c.Limit.Packets != 0 && packets >= c.Limit.Packets) {
		return false
	}
	d := 0
	if rev {
		d = 1
	}
	c.CutPackets[d]++
	c.CutBytes[d] += wireLen
	c.LastCut = ts
	return true
}

// Conn returns the connection of k (either orientation).
func (m *CutoffModel) Conn(k *flow.Key) (Conn, bool) {
	ck, _ := ConnKey(k)
	c, ok := m.conns[ck]
	if !ok {
		return Conn{}, false
	}
	return *c, true
}

// Suspend sets the suspended flag of k's connection, if it is known.
func (m *CutoffModel) Suspend(k *flow.Key) {
	ck, _ := ConnKey(k)
	if c, ok := m.conns[ck]; ok {
		c.Suspended = true
	}
}

// Conns calls fn for every connection, in no particular order.
func (m *CutoffModel) Conns(fn func(c *Conn)) {
	for _, c := range m.conns {
		fn(c)
	}
}

// jitter is jitter() of bpf/stenod.c.
func (m *CutoffModel) jitter(l uint64) uint64 {
	p := uint64(m.cfg.JitterPercent)
	if l == 0 || p == 0 {
		return l
	}
	span := l/100*p + l%100*p/100
	return l + uint64(m.rand())%(span+1)
}

// matchesEither is match_either() of bpf/stenod.c: k or k reversed, with
// RULE_EITHER_PORT also with the ports swapped.
func (mm *modelMatch) matchesEither(k *flow.Key) bool {
	for o := range 4 {
		if o&1 != 0 && !mm.eitherPort {
			continue
		}
		kk := *k
		if o&2 != 0 {
			kk.Src, kk.Dst = kk.Dst, kk.Src
		}
		if ((o>>1)^o)&1 != 0 {
			kk.SrcPort, kk.DstPort = kk.DstPort, kk.SrcPort
		}
		if maskedEqual(&kk, &mm.mask, &mm.value) {
			return true
		}
	}
	return false
}

// maskedEqual reports whether k & mask == value, field by field.
func maskedEqual(k, mask, value *flow.Key) bool {
	for i := range k.Src {
		if k.Src[i]&mask.Src[i] != value.Src[i] || k.Dst[i]&mask.Dst[i] != value.Dst[i] {
			return false
		}
	}
	return k.SrcPort&mask.SrcPort == value.SrcPort && k.DstPort&mask.DstPort == value.DstPort &&
		k.VLAN[0]&mask.VLAN[0] == value.VLAN[0] && k.VLAN[1]&mask.VLAN[1] == value.VLAN[1] &&
		k.MPLS&mask.MPLS == value.MPLS && k.EtherType&mask.EtherType == value.EtherType &&
		k.Proto&mask.Proto == value.Proto && k.Flags&mask.Flags == value.Flags
}
