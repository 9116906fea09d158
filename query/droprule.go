package query

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DropRule is a pre-capture drop rule in the form the XDP program matches
// (xdp.DropRule, field for field, so one converts to the other): a frame
// matches when every set field does.
type DropRule struct {
	// Proto is the IP protocol (after IPv6 extension headers); 0: any.
	Proto uint8
	// Port is a TCP, UDP or SCTP port, source or destination; 0: any.
	Port uint16
	// Src and Dst are networks the source and destination address must be
	// in; the zero Prefix: any. A set prefix restricts the rule to its
	// address family, so a /0 prefix (from ip, ip6, icmp, icmp6) matches
	// the family alone.
	Src, Dst netip.Prefix
}

// ErrDropRule is wrapped by the errors of ParseDropRules for a valid query
// that drop rules cannot express.
var ErrDropRule = errors.New("not expressible as a drop rule")

// dropRuleSubset is what ParseDropRules takes, for its error messages.
const dropRuleSubset = "drop rules take host, net, port, ip proto, tcp, udp, sctp, icmp, icmp6, ip and ip6, combined with and, or and parentheses"

// ParseDropRules compiles a query into drop rules that together match
// exactly the frames the query matches: a frame is dropped when it matches
// any of them. The query is written in the query language, restricted to
// what the XDP program can match (dropRuleSubset): no not, no time, no
// vlan or mpls, ports in either direction only, and networks without host
// bits set. An or, and an undirected host or net (source or destination),
// becomes more than one rule; a query that takes more than max rules is
// refused.
//
// Errors: a *SyntaxError for what Parse refuses and for a network with
// host bits set; an error wrapping ErrDropRule for the rest.
func ParseDropRules(s string, max int) ([]DropRule, error) {
	root, err := (&parser{exactNets: true}).parse(s)
	if err != nil {
		return nil, err
	}
	rules, err := dropRules(root, max)
	switch {
	case err != nil:
		return nil, err
	case len(rules) == 0:
		return nil, fmt.Errorf("query: %w: it matches no frame", ErrDropRule)
	case len(rules) > max:
		return nil, errTooMany(max)
	}
	return rules, nil
}

func errTooMany(max int) error {
	return fmt.Errorf("query: %w: it takes more than %d rules (each or, and each host or net without src or dst, adds one)", ErrDropRule, max)
}

// dropRules returns n in disjunctive normal form, each conjunction as one
// rule, leaving out the conjunctions no frame can match.
func dropRules(n *node, max int) ([]DropRule, error) {
	switch n.kind {
	case kChain:
		acc, err := dropRules(n.terms[0].n, max)
		if err != nil {
			return nil, err
		}
		for _, t := range n.terms[1:] {
			rs, err := dropRules(t.n, max)
			if err != nil {
				return nil, err
			}
			if t.or {
				acc = append(acc, rs...)
			} else {
				var prod []DropRule
				for _, a := range acc {
					for _, b := range rs {
						r, ok, err := a.and(b)
						if err != nil {
							return nil, err
						}
						if ok {
							prod = append(prod, r)
						}
					}
				}
				acc = prod
			}
			acc = dedup(acc)
			if len(acc) > max {
				return nil, errTooMany(max)
			}
		}
		return acc, nil
	case kHost, kNet:
		switch n.dir {
		case dirSrc:
			return []DropRule{{Src: n.pfx}}, nil
		case dirDst:
			return []DropRule{{Dst: n.pfx}}, nil
		}
		return []DropRule{{Src: n.pfx}, {Dst: n.pfx}}, nil
	case kPort:
		switch {
		case n.dir != dirEither:
			return nil, dropRuleErr(n, "a drop rule matches a port in either direction: write port %d", n.num)
		case n.num == 0:
			return nil, dropRuleErr(n, "port 0 cannot be matched")
		}
		return []DropRule{{Port: uint16(n.num)}}, nil
	case kProto:
		if n.num == 0 {
			return nil, dropRuleErr(n, "protocol 0 cannot be matched")
		}
		return []DropRule{{Proto: uint8(n.num)}}, nil
	case kTCP:
		return []DropRule{{Proto: 6}}, nil
	case kUDP:
		return []DropRule{{Proto: 17}}, nil
	case kSCTP:
		return []DropRule{{Proto: 132}}, nil
	case kICMP:
		return []DropRule{{Proto: 1, Src: ipv4}}, nil
	case kICMP6:
		return []DropRule{{Proto: 58, Src: ipv6}}, nil
	case kIP:
		return []DropRule{{Src: ipv4}}, nil
	case kIP6:
		return []DropRule{{Src: ipv6}}, nil
	case kNot:
		return nil, dropRuleErr(n, "a drop rule cannot say what a frame is not: drop what it is")
	case kBefore, kAfter:
		return nil, dropRuleErr(n, "a drop rule applies to frames as they arrive, at any time")
	case kCommunityID:
		return nil, dropRuleErr(n, "the XDP program does not hash flows: write the addresses, ports and protocol")
	}
	return nil, dropRuleErr(n, "%s", dropRuleSubset)
}

func dropRuleErr(n *node, format string, args ...any) error {
	return fmt.Errorf("query: %v: %w: %s", n, ErrDropRule, fmt.Sprintf(format, args...))
}

// The families alone: what ip and ip6 match.
var (
	ipv4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	ipv6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

// and returns the rule matching what both a and b match; ok is false when
// no frame can match both. Two different ports can both match (one on
// each side), but not in one rule: an error.
func (a DropRule) and(b DropRule) (r DropRule, ok bool, err error) {
	r = DropRule{Proto: max(a.Proto, b.Proto), Port: max(a.Port, b.Port)}
	var okSrc, okDst bool
	r.Src, okSrc = meetPrefix(a.Src, b.Src)
	r.Dst, okDst = meetPrefix(a.Dst, b.Dst)
	switch {
	case a.Proto != 0 && b.Proto != 0 && a.Proto != b.Proto, !okSrc, !okDst:
		return r, false, nil
	case r.Src.IsValid() && r.Dst.IsValid() && r.Src.Addr().Is4() != r.Dst.Addr().Is4():
		// A frame has one address family.
		return r, false, nil
	case a.Port != 0 && b.Port != 0 && a.Port != b.Port:
		return r, false, fmt.Errorf("query: port %d and port %d: %w: a drop rule matches one port", a.Port, b.Port, ErrDropRule)
	}
	// ip and dst net X: X says the family.
	if r.Src.Bits() == 0 && r.Dst.IsValid() {
		r.Src = netip.Prefix{}
	}
	return r, true, nil
}

// meetPrefix returns the intersection of two networks (the zero Prefix
// being every address); ok is false when it is empty.
func meetPrefix(a, b netip.Prefix) (netip.Prefix, bool) {
	switch {
	case !a.IsValid():
		return b, true
	case !b.IsValid():
		return a, true
	case a.Addr().Is4() != b.Addr().Is4():
		return netip.Prefix{}, false
	case a.Bits() <= b.Bits() && a.Contains(b.Addr()):
		return b, true
	case b.Bits() <= a.Bits() && b.Contains(a.Addr()):
		return a, true
	}
	return netip.Prefix{}, false
}

func dedup(rs []DropRule) []DropRule {
	var out []DropRule
	for _, r := range rs {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// String writes r in the query language, as ParseDropRules reads it back
// into r alone.
func (r DropRule) String() string {
	var parts []string
	proto, src := r.Proto, r.Src
	if src.IsValid() && src.Bits() == 0 && !r.Dst.IsValid() {
		// The family alone: ip or ip6, or with its ICMP, icmp or icmp6.
		fam, icmp, icmpProto := "ip", "icmp", uint8(1)
		if src.Addr().Is6() {
			fam, icmp, icmpProto = "ip6", "icmp6", 58
		}
		if proto == icmpProto {
			fam, proto = icmp, 0
		}
		parts, src = append(parts, fam), netip.Prefix{}
	}
	switch proto {
	case 0:
	case 6:
		parts = append(parts, "tcp")
	case 17:
		parts = append(parts, "udp")
	case 132:
		parts = append(parts, "sctp")
	default:
		parts = append(parts, "ip proto "+strconv.Itoa(int(proto)))
	}
	if r.Port != 0 {
		parts = append(parts, "port "+strconv.Itoa(int(r.Port)))
	}
	for _, n := range []struct {
		dir string
		p   netip.Prefix
	}{{"src", src}, {"dst", r.Dst}} {
		switch {
		case !n.p.IsValid():
		case n.p.Bits() == n.p.Addr().BitLen():
			parts = append(parts, n.dir+" host "+n.p.Addr().String())
		default:
			parts = append(parts, n.dir+" net "+n.p.String())
		}
	}
	return strings.Join(parts, " and ")
}
