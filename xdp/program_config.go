//go:build linux

package xdp

import (
	"fmt"
	"net/netip"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/gen"
)

// MaxDropRules is the number of drop rules the XDP program evaluates
// (MAX_DROP_RULES in bpf/stenod.h).
const MaxDropRules = len(gen.StenodConfigValue{}.Rules)

// ProgramConfig is what the XDP program reads from its config map on every
// packet. The zero value captures everything: redirect mode, no snap
// length, no drop rules.
type ProgramConfig struct {
	// SnapLen: frames longer than this are counted in
	// ProgramStats.OverSnapLen (the workers cut them). 0 means no limit.
	SnapLen uint32
	// Observe passes every frame to the network stack after accounting it
	// (flows, counters) instead of redirecting it to AF_XDP sockets.
	Observe bool
	// DropRules: a frame matching any rule is dropped (XDP_DROP, in both
	// modes) before it is accounted or captured, and counted in
	// ProgramStats.DroppedByRule. At most MaxDropRules.
	DropRules []DropRule
	// Cutoff limits what is stored of each connection (docs/bpf.md,
	// "Cutoff"): decided by the XDP program in redirect mode and by the
	// socket filter, never in observe mode.
	Cutoff CutoffConfig
}

// DropRule matches frames by their flow key; every set field must match.
// At least one field must be set.
type DropRule struct {
	// Proto is the IP protocol (after IPv6 extension headers); 0 = any.
	Proto uint8
	// Port is a TCP, UDP or SCTP port, source or destination; 0 = any.
	Port uint16
	// Src and Dst are networks the source and destination address must be
	// in; the zero Prefix = any. A set prefix restricts the rule to its
	// address family; Src and Dst, if both set, must be of one family.
	Src, Dst netip.Prefix
}

func (r DropRule) String() string {
	return fmt.Sprintf("proto %d port %d src %v dst %v", r.Proto, r.Port, r.Src, r.Dst)
}

// compile turns r into the masked key match of struct drop_rule.
func (r DropRule) compile() (gen.StenodDropRule, error) {
	var value, mask flow.Key
	var out gen.StenodDropRule
	if r.Proto == 0 && r.Port == 0 && !r.Src.IsValid() && !r.Dst.IsValid() {
		return out, fmt.Errorf("%w: matches every frame", ErrInvalidDropRule)
	}
	if r.Proto != 0 {
		value.Proto, mask.Proto = r.Proto, 0xff
	}
	if r.Port != 0 {
		// Either port: the program also tries the key with ports swapped.
		value.SrcPort, mask.SrcPort = r.Port, 0xffff
		value.Flags |= flow.FlagPorts
		mask.Flags |= flow.FlagPorts
		out.Flags |= uint32(gen.StenodDropRuleFlagRULE_EITHER_PORT)
	}
	var family flow.Flags
	for _, n := range []struct {
		p          netip.Prefix
		value, msk *[16]byte
	}{{r.Src, &value.Src, &mask.Src}, {r.Dst, &value.Dst, &mask.Dst}} {
		if !n.p.IsValid() {
			continue
		}
		f, size := flow.FlagIPv6, 16
		if n.p.Addr().Is4() {
			f, size = flow.FlagIPv4, 4
		}
		if family != 0 && family != f {
			return out, fmt.Errorf("%w: source and destination of different address families", ErrInvalidDropRule)
		}
		family = f
		addr := n.p.Masked().Addr().AsSlice()
		copy(n.value[:], addr)
		for i := range size {
			bits := min(max(n.p.Bits()-8*i, 0), 8)
			n.msk[i] = byte(0xff << (8 - bits))
		}
	}
	value.Flags |= family
	mask.Flags |= family
	out.Value, out.Mask = genKey(&value), genKey(&mask)
	return out, nil
}

// compile turns c into struct config_value.
func (c ProgramConfig) compile() (gen.StenodConfigValue, error) {
	var v gen.StenodConfigValue
	if len(c.DropRules) > MaxDropRules {
		return v, fmt.Errorf("%d drop rules, at most %d: %w", len(c.DropRules), MaxDropRules, ErrTooManyDropRules)
	}
	v.SnapLen = c.SnapLen
	v.Mode = uint32(gen.StenodModeMODE_REDIRECT)
	if c.Observe {
		v.Mode = uint32(gen.StenodModeMODE_OBSERVE)
	}
	for i, r := range c.DropRules {
		rule, err := r.compile()
		if err != nil {
			return v, fmt.Errorf("drop rule %d (%v): %w", i, r, err)
		}
		v.Rules[i] = rule
	}
	v.N_rules = uint32(len(c.DropRules))
	cut, err := c.Cutoff.compile()
	if err != nil {
		return v, err
	}
	v.Cutoff = cut
	return v, nil
}

// genKey converts a flow.Key to the identical struct flow_key of gen.
func genKey(k *flow.Key) gen.StenodFlowKey {
	return gen.StenodFlowKey{
		Src:       k.Src,
		Dst:       k.Dst,
		Sport:     k.SrcPort,
		Dport:     k.DstPort,
		Vlan:      k.VLAN,
		Mpls:      k.MPLS,
		Ethertype: k.EtherType,
		Proto:     k.Proto,
		Flags:     uint8(k.Flags),
	}
}

// keyOf is genKey the other way round.
func keyOf(k *gen.StenodFlowKey) flow.Key {
	return flow.Key{
		Src:       k.Src,
		Dst:       k.Dst,
		SrcPort:   k.Sport,
		DstPort:   k.Dport,
		VLAN:      k.Vlan,
		MPLS:      k.Mpls,
		EtherType: k.Ethertype,
		Proto:     k.Proto,
		Flags:     flow.Flags(k.Flags),
	}
}
