package query

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/flow"
)

// MaxDepth is how deeply parentheses and `not` may nest. Evaluation recurses
// only on nesting, so the limit bounds the stack a hostile query can take;
// chains of and/or of any length are evaluated iteratively.
const MaxDepth = 100

type tokKind uint8

const (
	tWord   tokKind = iota
	tLParen         // (
	tRParen         // )
	tNot            // not, !
	tAnd            // and, &&
	tOr             // or, ||
	tSlash          // / in CIDR
	tEOF
)

type token struct {
	kind tokKind
	text string // as written
	pos  int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// isDelim reports whether c ends a word. '/' does, so that `10.0.0.0/8` and
// stenographer's `10.0.0.0 / 8` are the same tokens.
func isDelim(c byte) bool {
	return isSpace(c) || c == '(' || c == ')' || c == '!' || c == '&' || c == '|' || c == '/'
}

func lex(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isSpace(c):
			i++
			continue
		case c == '(' || c == ')' || c == '!' || c == '/':
			k := tSlash
			switch c {
			case '(':
				k = tLParen
			case ')':
				k = tRParen
			case '!':
				k = tNot
			}
			toks = append(toks, token{kind: k, text: s[i : i+1], pos: i})
			i++
			continue
		case c == '&' || c == '|':
			if i+1 < len(s) && s[i+1] == c {
				k := tAnd
				if c == '|' {
					k = tOr
				}
				toks = append(toks, token{kind: k, text: s[i : i+2], pos: i})
				i += 2
				continue
			}
			msg := "a single & is not an operator: write && or and"
			if c == '|' {
				msg = "a single | is not an operator: write || or or"
			}
			return nil, &SyntaxError{Pos: i, Token: s[i : i+1], Msg: msg}
		}
		j := i
		for j < len(s) && !isDelim(s[j]) {
			j++
		}
		w := s[i:j]
		k := tWord
		switch asciiLower(w) {
		case "and":
			k = tAnd
		case "or":
			k = tOr
		case "not":
			k = tNot
		}
		toks = append(toks, token{kind: k, text: w, pos: i})
		i = j
		if asciiLower(w) == "community-id" {
			// Its argument is base64, whose alphabet has '/': it ends at
			// every other delimiter.
			for i < len(s) && isSpace(s[i]) {
				i++
			}
			j = i
			for j < len(s) && (s[j] == '/' || !isDelim(s[j])) {
				j++
			}
			if j > i {
				toks = append(toks, token{kind: tWord, text: s[i:j], pos: i})
				i = j
			}
		}
	}
	return append(toks, token{kind: tEOF, pos: len(s)}), nil
}

type parser struct {
	toks  []token
	i     int
	now   int64 // unix ns, for "ago"
	depth int
	// exactNets refuses a network written with host bits set (net
	// 10.0.0.1/8) instead of clearing them: drop rules, where a typo
	// would drop a whole network, want the network as written.
	exactNets bool
}

func (p *parser) peek() *token { return &p.toks[p.i] }

func (p *parser) next() *token {
	t := &p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

// asciiLower folds ASCII letters only: Unicode folding would let words like
// "MAS\u212A" (Kelvin sign) pass for keywords.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// word returns the lower-cased text of t if it is a word, else "".
func word(t *token) string {
	if t.kind != tWord {
		return ""
	}
	return asciiLower(t.text)
}

func errAt(t *token, format string, args ...any) *SyntaxError {
	return &SyntaxError{Pos: t.pos, Token: t.text, Msg: fmt.Sprintf(format, args...)}
}

func parse(s string, now int64) (*node, error) {
	return (&parser{now: now}).parse(s)
}

func (p *parser) parse(s string) (*node, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p.toks = toks
	if p.peek().kind == tEOF {
		return nil, errAt(p.peek(), "the query is empty")
	}
	n, err := p.chain()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		if t.kind == tRParen {
			return nil, errAt(t, "unbalanced parentheses: this ) has no (")
		}
		return nil, p.expectedOperator(t, "the end of the query")
	}
	return n, nil
}

// expectedOperator is the error for a token where a primitive has ended.
func (p *parser) expectedOperator(t *token, orWhat string) *SyntaxError {
	prev := &p.toks[p.i-1]
	switch word(t) {
	case "host", "net", "port", "src", "dst", "ip", "ip6", "tcp", "udp", "sctp",
		"icmp", "icmp6", "vlan", "mpls", "before", "after", "community-id":
		return errAt(t, "missing and/or between %q and %q", prev.text, t.text)
	}
	if word(t) == "proto" {
		return errAt(t, "proto only follows ip: ip proto N (it matches IPv4 and IPv6)")
	}
	if t.kind == tSlash {
		return errAt(t, "unexpected /: only net takes a prefix length (net 10.0.0.0/8)")
	}
	return errAt(t, "expected and, or, or %s after %q", orWhat, prev.text)
}

func (p *parser) chain() (*node, error) {
	first, err := p.unary()
	if err != nil {
		return nil, err
	}
	var c *node
	if first.kind == kChain {
		c = first // (a or b) and c == a or b and c: merge
	} else {
		c = &node{kind: kChain, terms: []term{{n: first}}}
	}
	for {
		op := p.peek()
		if op.kind != tAnd && op.kind != tOr {
			break
		}
		p.next()
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		c.terms = append(c.terms, term{or: op.kind == tOr, n: n})
	}
	if len(c.terms) == 1 {
		return c.terms[0].n, nil
	}
	return c, nil
}

func (p *parser) enter(t *token) error {
	p.depth++
	if p.depth > MaxDepth {
		return errAt(t, "parentheses and not nest more than %d deep", MaxDepth)
	}
	return nil
}

func (p *parser) unary() (*node, error) {
	t := p.peek()
	switch t.kind {
	case tNot:
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		n, err := p.unary()
		p.depth--
		if err != nil {
			return nil, err
		}
		return &node{kind: kNot, kid: n}, nil
	case tLParen:
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		if r := p.peek(); r.kind == tRParen {
			return nil, errAt(r, "empty parentheses")
		}
		n, err := p.chain()
		p.depth--
		if err != nil {
			return nil, err
		}
		r := p.peek()
		if r.kind == tEOF {
			return nil, errAt(r, "unbalanced parentheses: the ( at %d is not closed", t.pos)
		}
		if r.kind != tRParen {
			return nil, p.expectedOperator(r, ")")
		}
		p.next()
		return n, nil
	case tWord:
		return p.primitive()
	case tEOF:
		if p.i == 0 {
			return nil, errAt(t, "the query is empty")
		}
		return nil, errAt(t, "expected a primitive after %q", p.toks[p.i-1].text)
	}
	return nil, errAt(t, "expected a primitive (host, net, port, tcp, ...) or ( or not, found %q", t.text)
}

const primitives = "host, net, port, ip proto, tcp, udp, sctp, icmp, icmp6, ip, ip6, vlan, mpls, before, after"

func (p *parser) primitive() (*node, error) {
	t := p.next()
	w := word(t)
	d := dirEither
	if w == "src" || w == "dst" {
		d = dirSrc
		if w == "dst" {
			d = dirDst
		}
		q := p.peek()
		switch qw := word(q); qw {
		case "host", "net", "port":
		case "":
			return nil, errAt(q, "%s must be followed by host, net or port", w)
		default:
			return nil, errAt(q, "%s applies only to host, net and port, not to %s", w, q.text)
		}
		t = p.next()
		w = word(t)
	}
	switch w {
	case "host":
		a, err := p.addr(t, w)
		if err != nil {
			return nil, err
		}
		a = a.Unmap()
		return &node{kind: kHost, dir: d, pfx: netip.PrefixFrom(a, a.BitLen())}, nil
	case "net":
		pfx, err := p.net(t)
		if err != nil {
			return nil, err
		}
		return &node{kind: kNet, dir: d, pfx: pfx}, nil
	case "port":
		n, err := p.number(t, "port", math.MaxUint16)
		if err != nil {
			return nil, err
		}
		return &node{kind: kPort, dir: d, num: n}, nil
	case "ip":
		if word(p.peek()) != "proto" {
			return &node{kind: kIP}, nil
		}
		p.next()
		n, err := p.number(t, "ip proto", math.MaxUint8)
		if err != nil {
			return nil, err
		}
		return &node{kind: kProto, num: n}, nil
	case "ip6":
		return &node{kind: kIP6}, nil
	case "tcp":
		return &node{kind: kTCP}, nil
	case "udp":
		return &node{kind: kUDP}, nil
	case "sctp":
		return &node{kind: kSCTP}, nil
	case "icmp":
		return &node{kind: kICMP}, nil
	case "icmp6":
		return &node{kind: kICMP6}, nil
	case "vlan":
		n, err := p.number(t, "vlan", 1<<12-1)
		if err != nil {
			return nil, err
		}
		return &node{kind: kVLAN, num: n}, nil
	case "mpls":
		n, err := p.number(t, "mpls", 1<<20-1)
		if err != nil {
			return nil, err
		}
		return &node{kind: kMPLS, num: n}, nil
	case "community-id":
		a := p.next()
		if a.kind != tWord {
			return nil, errAt(a, "community-id needs an ID, such as community-id 1:wCb3OG7yAFWelaUydu0D+125CLM=")
		}
		sum, err := flow.ParseCommunityID(a.text)
		if err != nil {
			return nil, errAt(a, "%s", strings.TrimPrefix(err.Error(), "community id: "))
		}
		return &node{kind: kCommunityID, cid: sum}, nil
	case "before", "after":
		ts, err := p.timeArg(t, w)
		if err != nil {
			return nil, err
		}
		k := kBefore
		if w == "after" {
			k = kAfter
		}
		return &node{kind: k, t: ts}, nil
	case "proto":
		return nil, errAt(t, "write ip proto N (it matches IPv4 and IPv6)")
	case "mask":
		return nil, errAt(t, "mask only follows a network address: net 10.0.0.0 mask 255.0.0.0")
	case "ago":
		return nil, errAt(t, "ago only follows a duration: before 3h ago")
	}
	if _, err := netip.ParseAddr(t.text); err == nil {
		return nil, errAt(t, "an address needs host before it: host %s", t.text)
	}
	return nil, errAt(t, "unknown word; expected one of %s", primitives)
}

// arg returns the word after keyword kw, or an error saying what kw needs.
func (p *parser) arg(kw *token, needs string) (*token, error) {
	t := p.peek()
	if t.kind != tWord {
		return nil, errAt(t, "%s needs %s", asciiLower(kw.text), needs)
	}
	return p.next(), nil
}

// addr parses the address after host or net. An IPv4-mapped IPv6 address
// (::ffff:10.0.0.1) is the IPv4 address: flow keys never hold one for an
// IPv4 packet, so taking it literally could only ever match IPv6 packets
// that carry mapped addresses, which is not what someone pasting such an
// address from a dual-stack log means.
func (p *parser) addr(kw *token, w string) (netip.Addr, error) {
	t, err := p.arg(kw, "an IPv4 or IPv6 address")
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(t.text)
	if err != nil {
		return netip.Addr{}, errAt(t, "%s needs an IPv4 or IPv6 address", w)
	}
	if a.Zone() != "" {
		return netip.Addr{}, errAt(t, "%s needs an IPv4 or IPv6 address without a %%zone", w)
	}
	return a, nil
}

func (p *parser) net(kw *token) (netip.Prefix, error) {
	at := p.peek()
	a, err := p.addr(kw, "net")
	if err != nil {
		return netip.Prefix{}, err
	}
	switch t := p.peek(); {
	case t.kind == tSlash:
		p.next()
		bits, err := p.number(t, "/", uint32(a.BitLen()))
		if err != nil {
			if a.Is4() {
				err.(*SyntaxError).Msg = "an IPv4 prefix length must be 0..32"
			} else {
				err.(*SyntaxError).Msg = "an IPv6 prefix length must be 0..128"
			}
			return netip.Prefix{}, err
		}
		// Mapped: only a prefix within ::ffff:0:0/96 is an IPv4 network.
		if a.Is4In6() && bits >= 96 {
			a, bits = a.Unmap(), bits-96
		}
		return p.masked(at, netip.PrefixFrom(a, int(bits)))
	case word(t) == "mask":
		p.next()
		mt, err := p.arg(t, "a netmask like 255.255.0.0")
		if err != nil {
			return netip.Prefix{}, err
		}
		m, err := netip.ParseAddr(mt.text)
		if err != nil || m.Zone() != "" {
			return netip.Prefix{}, errAt(mt, "mask needs a netmask like 255.255.0.0")
		}
		a, m = a.Unmap(), m.Unmap()
		if a.Is4() != m.Is4() {
			if a.Is4() {
				return netip.Prefix{}, errAt(mt, "the network %s is IPv4 but the mask is not", at.text)
			}
			return netip.Prefix{}, errAt(mt, "the network %s is IPv6 but the mask is not", at.text)
		}
		bits := maskBits(m)
		if bits < 0 {
			return netip.Prefix{}, errAt(mt, "the mask is not contiguous: it must be ones followed by zeros, like 255.255.240.0")
		}
		return p.masked(at, netip.PrefixFrom(a, bits))
	default:
		return netip.Prefix{}, errAt(t, "net needs a prefix length or a mask after the address: net 10.0.0.0/8 or net 10.0.0.0 mask 255.0.0.0")
	}
}

// masked clears the host bits of pfx, written at token at, or refuses them
// with exactNets.
func (p *parser) masked(at *token, pfx netip.Prefix) (netip.Prefix, error) {
	m := pfx.Masked()
	if p.exactNets && m != pfx {
		return netip.Prefix{}, errAt(at, "the network has host bits set (did you mean %v?)", m)
	}
	return m, nil
}

// maskBits returns the number of leading ones of m, or -1 if m is not
// all ones followed by all zeros.
func maskBits(m netip.Addr) int {
	b := m.AsSlice()
	n := 0
	for n < len(b)*8 && b[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	for i := n; i < len(b)*8; i++ {
		if b[i/8]&(0x80>>(i%8)) != 0 {
			return -1
		}
	}
	return n
}

// number parses the decimal number after keyword kw (named what in errors),
// in 0..max.
func (p *parser) number(kw *token, what string, max uint32) (uint32, error) {
	t := p.peek()
	if t.kind != tWord || !allDigits(t.text) {
		if t.kind == tEOF {
			return 0, errAt(t, "%s needs a number 0..%d", what, max)
		}
		if what == "port" && t.kind == tWord && isLetter(t.text[0]) {
			return 0, errAt(t, "port needs a number 0..65535 (service names are not supported)")
		}
		return 0, errAt(t, "%s needs a number 0..%d", what, max)
	}
	p.next()
	v, err := strconv.ParseUint(t.text, 10, 32)
	if err != nil || v > uint64(max) {
		return 0, errAt(t, "%s must be 0..%d", what, max)
	}
	return uint32(v), nil
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// timeArg parses the argument of before/after: an RFC 3339 time or a duration
// followed by ago, resolved against p.now.
func (p *parser) timeArg(kw *token, w string) (int64, error) {
	const needs = "an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"
	t, err := p.arg(kw, needs)
	if err != nil {
		return 0, err
	}
	if d, ok, derr := parseDuration(t.text); ok {
		if derr != "" {
			return 0, errAt(t, "%s", derr)
		}
		a := p.peek()
		if word(a) != "ago" {
			return 0, errAt(a, "a duration needs ago after it: %s %s ago", w, t.text)
		}
		p.next()
		if p.now < math.MinInt64+d {
			return math.MinInt64, nil
		}
		return p.now - d, nil
	}
	if allDigits(t.text) {
		return 0, errAt(t, "a duration needs a unit (s, m, h or d): %s %sm ago", w, t.text)
	}
	// RFC 3339 allows lower-case t and z; Go's parser does not.
	tm, err := time.Parse(time.RFC3339, strings.Map(func(r rune) rune {
		if r == 't' || r == 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, t.text))
	if err != nil {
		return 0, errAt(t, "%s needs %s", w, needs)
	}
	return clampTime(tm), nil
}

// parseDuration parses one or more <digits><unit> with unit s, m, h or d
// (case-insensitive). ok is false if s does not have that shape; msg says
// what is wrong if it does but is out of range.
func parseDuration(s string) (d int64, ok bool, msg string) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false, ""
	}
	var total uint64
	overflow := false
	for i := 0; i < len(s); {
		j := i
		var v uint64
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			if v > (math.MaxInt64-9)/10 {
				overflow = true
			} else {
				v = v*10 + uint64(s[j]-'0')
			}
			j++
		}
		if j == i || j == len(s) {
			return 0, false, ""
		}
		var unit uint64
		switch s[j] | 0x20 {
		case 's':
			unit = uint64(time.Second)
		case 'm':
			unit = uint64(time.Minute)
		case 'h':
			unit = uint64(time.Hour)
		case 'd':
			unit = 24 * uint64(time.Hour)
		default:
			return 0, false, ""
		}
		if overflow || v > math.MaxInt64/unit {
			overflow = true
		} else if total += v * unit; total > math.MaxInt64 {
			overflow = true
		}
		i = j + 1
	}
	if overflow {
		return 0, true, "the duration is too long (at most 106751d)"
	}
	return int64(total), true, ""
}
