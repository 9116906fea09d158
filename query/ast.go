package query

import (
	"encoding/base64"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/flow"
)

type kind uint8

const (
	kChain kind = iota // terms combined left to right
	kNot
	kHost // pfx is a full-length prefix
	kNet
	kPort
	kProto // ip proto N
	kTCP
	kUDP
	kSCTP
	kICMP
	kICMP6
	kIP
	kIP6
	kVLAN
	kMPLS
	kBefore
	kAfter
	kCommunityID
)

// dir says which side of the key host, net and port compare.
type dir uint8

const (
	dirEither dir = iota
	dirSrc
	dirDst
)

// node is the AST. A chain holds `a op b op c ...` flattened: and and or have
// equal precedence and associate to the left, so a run of them is a list, and
// a parenthesised chain in first position is merged into its parent. That
// keeps evaluation iterative (no recursion per operator) and makes the
// canonical form unique.
type node struct {
	kind  kind
	dir   dir
	pfx   netip.Prefix               // kHost, kNet
	num   uint32                     // kPort, kProto, kVLAN, kMPLS
	t     int64                      // kBefore, kAfter: unix ns, clamped
	cid   [flow.CommunityIDSize]byte // kCommunityID: the digest
	kid   *node                      // kNot
	terms []term                     // kChain, at least two
}

// term is one operand of a chain; or says which operator precedes it (the
// first term's is ignored).
type term struct {
	or bool
	n  *node
}

var simpleNames = [...]string{
	kTCP:   "tcp",
	kUDP:   "udp",
	kSCTP:  "sctp",
	kICMP:  "icmp",
	kICMP6: "icmp6",
	kIP:    "ip",
	kIP6:   "ip6",
}

func (n *node) String() string {
	var b strings.Builder
	n.format(&b)
	return b.String()
}

func (n *node) format(b *strings.Builder) {
	switch n.kind {
	case kChain:
		for i, t := range n.terms {
			if i > 0 {
				if t.or {
					b.WriteString(" or ")
				} else {
					b.WriteString(" and ")
				}
			}
			// A chain can only be a later term (the first is merged), where
			// left-to-right evaluation needs the parentheses.
			if t.n.kind == kChain {
				b.WriteByte('(')
				t.n.format(b)
				b.WriteByte(')')
			} else {
				t.n.format(b)
			}
		}
	case kNot:
		b.WriteString("not ")
		if n.kid.kind == kChain {
			b.WriteByte('(')
			n.kid.format(b)
			b.WriteByte(')')
		} else {
			n.kid.format(b)
		}
	case kHost, kNet, kPort:
		switch n.dir {
		case dirSrc:
			b.WriteString("src ")
		case dirDst:
			b.WriteString("dst ")
		}
		switch n.kind {
		case kHost:
			b.WriteString("host ")
			b.WriteString(n.pfx.Addr().String())
		case kNet:
			b.WriteString("net ")
			b.WriteString(n.pfx.String())
		default:
			b.WriteString("port ")
			b.WriteString(strconv.FormatUint(uint64(n.num), 10))
		}
	case kProto:
		b.WriteString("ip proto ")
		b.WriteString(strconv.FormatUint(uint64(n.num), 10))
	case kVLAN:
		b.WriteString("vlan ")
		b.WriteString(strconv.FormatUint(uint64(n.num), 10))
	case kMPLS:
		b.WriteString("mpls ")
		b.WriteString(strconv.FormatUint(uint64(n.num), 10))
	case kCommunityID:
		b.WriteString("community-id ")
		b.WriteString(flow.CommunityIDPrefix)
		b.WriteString(base64.StdEncoding.EncodeToString(n.cid[:]))
	case kBefore, kAfter:
		if n.kind == kBefore {
			b.WriteString("before ")
		} else {
			b.WriteString("after ")
		}
		b.WriteString(time.Unix(0, n.t).UTC().Format(time.RFC3339Nano))
	default:
		b.WriteString(simpleNames[n.kind])
	}
}

// Time bounds are unix nanoseconds; times outside what an int64 holds
// (before 1677-09-21, after 2262-04-11) are clamped. Clamping keeps every
// answer right for timestamps in [math.MinInt64, math.MaxInt64), the domain
// TimeRange documents.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func clampTime(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// span is a half-open range of timestamps [lo, hi); empty when lo >= hi.
type span struct{ lo, hi int64 }

var everything = span{math.MinInt64, math.MaxInt64}

func (s span) empty() bool { return s.lo >= s.hi }

// hull is the smallest span holding both: a superset of their union.
func hull(a, b span) span {
	if a.empty() {
		return b
	}
	if b.empty() {
		return a
	}
	return span{min(a.lo, b.lo), max(a.hi, b.hi)}
}

func meet(a, b span) span { return span{max(a.lo, b.lo), min(a.hi, b.hi)} }

// bounds returns supersets of the timestamps at which n can be true (for some
// key) and at which it can be false. Tracking both is what makes `not` exact:
// the complement of a superset is not a superset, but not swaps the two.
func bounds(n *node) (t, f span) {
	switch n.kind {
	case kBefore:
		return span{math.MinInt64, n.t}, span{n.t, math.MaxInt64}
	case kAfter:
		return span{n.t, math.MaxInt64}, span{math.MinInt64, n.t}
	case kNot:
		t, f = bounds(n.kid)
		return f, t
	case kChain:
		t, f = bounds(n.terms[0].n)
		for _, x := range n.terms[1:] {
			tt, ff := bounds(x.n)
			if x.or {
				t, f = hull(t, tt), meet(f, ff)
			} else {
				t, f = meet(t, tt), hull(f, ff)
			}
		}
		return t, f
	}
	return everything, everything
}

func timeOnly(n *node) bool {
	switch n.kind {
	case kBefore, kAfter:
		return true
	case kNot:
		return timeOnly(n.kid)
	case kChain:
		for _, t := range n.terms {
			if !timeOnly(t.n) {
				return false
			}
		}
		return true
	}
	return false
}

func hasTime(n *node) bool {
	switch n.kind {
	case kBefore, kAfter:
		return true
	case kNot:
		return hasTime(n.kid)
	case kChain:
		for _, t := range n.terms {
			if hasTime(t.n) {
				return true
			}
		}
	}
	return false
}
