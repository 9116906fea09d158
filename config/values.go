//go:build linux

package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/xdp"
)

// sizeUnits are the units ParseSize knows, matched case-insensitively:
// decimal (kB = 1000) and binary (KiB = 1024), as storage vendors and the
// kernel write them.
var sizeUnits = []struct {
	name string
	mult int64
}{
	{"b", 1},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"pb", 1e15},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"pib", 1 << 50},
}

// ParseSize parses a byte count: a number of bytes ("1048576") or a number
// with a unit ("1GiB", "500MB", "1.5 TiB", "64KiB"). The result must be a
// whole number of bytes, at least 0.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	bad := fmt.Errorf(`size %q: want a number of bytes or a number with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), such as "1GiB" or "500MB"`, s)
	if num == "" {
		return 0, bad
	}
	mult := int64(1)
	if unit != "" {
		found := false
		for _, u := range sizeUnits {
			if u.name == unit {
				mult, found = u.mult, true
				break
			}
		}
		if !found {
			return 0, bad
		}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, bad
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q: not a whole number of bytes", s)
	}
	return int64(v), nil
}

// FormatSize writes n in its shortest form, with a unit when one divides
// it ("1GiB", "64KiB", "500GB"), binary units first.
func FormatSize(n int64) string {
	best := strconv.FormatInt(n, 10)
	if n <= 0 {
		return best
	}
	for _, u := range []struct {
		name string
		mult int64
	}{
		{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3},
	} {
		if n%u.mult == 0 {
			s := strconv.FormatInt(n/u.mult, 10) + u.name
			if len(s) < len(best) || len(s) == len(best) && !strings.HasSuffix(best, "B") {
				best = s
			}
		}
	}
	return best
}

// ParseDuration parses a Go duration ("5m", "1h30m", "100ms"; "0" for none)
// and also accepts days ("7d"). Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(t, "d"); ok && !strings.ContainsAny(days, "hmsuµn") {
		var n int64
		n, err = strconv.ParseInt(days, 10, 64)
		if err == nil && (n < 0 || n > 100_000) {
			err = errors.New("out of range")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(t)
	}
	if err != nil {
		return 0, fmt.Errorf(`duration %q: want a number with a unit, such as "5m", "100ms", "2h" or "7d"`, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// FormatDuration writes d as ParseDuration reads it, without zero
// components: "5m", "1h", "100ms".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Protocol names a drop rule may use for "proto".
var protoNames = map[string]uint8{"icmp": 1, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132}

func protoName(p uint8) string {
	for name, n := range protoNames {
		if n == p {
			return name
		}
	}
	return strconv.Itoa(int(p))
}

// ParseDropRule parses a drop rule written like a tcpdump filter: primitives
// joined by spaces or "and", every one of which must match:
//
//	proto N | ip proto N | tcp | udp | sctp | icmp | icmp6
//	port N                       (source or destination)
//	src net PREFIX | src host ADDR | dst net PREFIX | dst host ADDR
//	net PREFIX | host ADDR       (source or destination)
//
// A rule with "net" or "host" without a direction becomes two rules, one
// for each direction, as the XDP program matches source and destination
// separately.
func ParseDropRule(s string) ([]xdp.DropRule, error) {
	f := strings.Fields(s)
	var r xdp.DropRule
	var either netip.Prefix
	var haveProto, havePort bool
	bad := func(format string, args ...any) ([]xdp.DropRule, error) {
		return nil, fmt.Errorf("drop rule %q: %s", s, fmt.Sprintf(format, args...))
	}
	arg := func(i int) (string, bool) {
		if i+1 < len(f) {
			return f[i+1], true
		}
		return "", false
	}
	for i := 0; i < len(f); i++ {
		w := strings.ToLower(f[i])
		switch w {
		case "and", "&&":
			continue
		case "ip":
			if i+1 < len(f) && f[i+1] == "proto" {
				continue
			}
			return bad("%q: only \"ip proto N\" is known", w)
		case "tcp", "udp", "sctp", "icmp", "icmp6", "proto":
			if haveProto {
				return bad("more than one protocol")
			}
			haveProto = true
			if w != "proto" {
				r.Proto = protoNames[w]
				continue
			}
			v, ok := arg(i)
			if !ok {
				return bad("proto without a number")
			}
			i++
			if n, ok := protoNames[strings.ToLower(v)]; ok {
				r.Proto = n
				continue
			}
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil || n == 0 {
				return bad("protocol %q: want 1 to 255 or tcp, udp, sctp, icmp, icmp6", v)
			}
			r.Proto = uint8(n)
		case "port":
			if havePort {
				return bad("more than one port")
			}
			havePort = true
			v, ok := arg(i)
			if !ok {
				return bad("port without a number")
			}
			i++
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return bad("port %q: want 1 to 65535", v)
			}
			r.Port = uint16(n)
		case "src", "dst", "net", "host":
			dir := ""
			if w == "src" || w == "dst" {
				dir = w
				v, ok := arg(i)
				if !ok {
					return bad("%s without an address", w)
				}
				i++
				w = strings.ToLower(v)
				if w != "net" && w != "host" {
					// "src 10.0.0.0/8": the kind is implied.
					i--
					w = "net"
				}
			}
			v, ok := arg(i)
			if !ok {
				return bad("%s without an address", w)
			}
			i++
			p, err := parsePrefix(v)
			if err != nil {
				return bad("%v", err)
			}
			if w == "host" && p.Bits() != p.Addr().BitLen() {
				return bad("host %s: an address, not a network (use net)", v)
			}
			var dst *netip.Prefix
			switch dir {
			case "src":
				dst = &r.Src
			case "dst":
				dst = &r.Dst
			default:
				dst = &either
			}
			if dst.IsValid() {
				return bad("more than one %s address", map[string]string{"src": "source", "dst": "destination", "": "undirected"}[dir])
			}
			*dst = p
		default:
			return bad("unknown word %q", f[i])
		}
	}
	if either.IsValid() {
		if r.Src.IsValid() || r.Dst.IsValid() {
			return bad("net or host without src/dst cannot be combined with src or dst")
		}
		a, b := r, r
		a.Src, b.Dst = either, either
		for _, x := range []xdp.DropRule{a, b} {
			if err := checkDropRule(x); err != nil {
				return bad("%v", err)
			}
		}
		return []xdp.DropRule{a, b}, nil
	}
	if err := checkDropRule(r); err != nil {
		return bad("%v", err)
	}
	return []xdp.DropRule{r}, nil
}

// parsePrefix takes a network ("10.0.0.0/8") or an address (a /32 or /128
// network). Host bits must be zero.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("network %q: %v", s, err)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("network %q has host bits set (did you mean %v?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q: want an IPv4 or IPv6 address or network", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// checkDropRule refuses what the XDP program would refuse at load time.
func checkDropRule(r xdp.DropRule) error {
	if r.Proto == 0 && r.Port == 0 && !r.Src.IsValid() && !r.Dst.IsValid() {
		return errors.New("matches every frame")
	}
	if r.Src.IsValid() && r.Dst.IsValid() && r.Src.Addr().Is4() != r.Dst.Addr().Is4() {
		return errors.New("source and destination of different address families")
	}
	return nil
}

// FormatDropRule writes r as ParseDropRule reads it.
func FormatDropRule(r xdp.DropRule) string {
	var parts []string
	if r.Proto != 0 {
		if name := protoName(r.Proto); name != strconv.Itoa(int(r.Proto)) {
			parts = append(parts, name)
		} else {
			parts = append(parts, "proto "+name)
		}
	}
	if r.Port != 0 {
		parts = append(parts, "port "+strconv.Itoa(int(r.Port)))
	}
	for _, n := range []struct {
		dir string
		p   netip.Prefix
	}{{"src", r.Src}, {"dst", r.Dst}} {
		if !n.p.IsValid() {
			continue
		}
		if n.p.Bits() == n.p.Addr().BitLen() {
			parts = append(parts, n.dir+" host "+n.p.Addr().String())
		} else {
			parts = append(parts, n.dir+" net "+n.p.String())
		}
	}
	return strings.Join(parts, " and ")
}

// dropRuleObject is the object form of a drop rule in the file.
type dropRuleObject struct {
	Proto json.RawMessage `json:"proto"`
	Port  *uint16         `json:"port"`
	Src   string          `json:"src"`
	Dst   string          `json:"dst"`
}

// jsonDropRules decodes an array whose items are rule strings or objects
// {"proto": 17 or "udp", "port": 53, "src": "10.0.0.0/8", "dst": "::1"}.
// Errors name the item: "capture.drop_rules[2]".
func jsonDropRules(raw json.RawMessage, name, source string) ([]xdp.DropRule, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("want an array of rules (strings such as \"proto 17 port 53\", or objects), got %s", abbrev(raw))
	}
	out := []xdp.DropRule{}
	for i, item := range items {
		itemKey := fmt.Sprintf("%s[%d]", name, i)
		rules, err := jsonDropRule(item, itemKey, source)
		if err != nil {
			var ke *KeyError
			if errors.As(err, &ke) {
				return nil, err
			}
			return nil, &KeyError{Source: source, Key: itemKey, Err: err}
		}
		out = append(out, rules...)
	}
	return out, nil
}

func jsonDropRule(raw json.RawMessage, itemKey, source string) ([]xdp.DropRule, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return ParseDropRule(s)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("want a rule string or object, got %s", abbrev(raw))
	}
	// Unknown fields are named with their path, as everywhere else.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	for f := range fields {
		switch f {
		case "proto", "port", "src", "dst":
		default:
			return nil, &KeyError{Source: source, Key: itemKey + "." + f, Err: ErrUnknownKey}
		}
	}
	var o dropRuleObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("want {\"proto\": number or name, \"port\": number, \"src\": network, \"dst\": network}: %v", err)
	}
	var r xdp.DropRule
	if len(o.Proto) > 0 {
		var n uint8
		var s string
		switch {
		case json.Unmarshal(o.Proto, &n) == nil && n != 0:
			r.Proto = n
		case json.Unmarshal(o.Proto, &s) == nil && protoNames[strings.ToLower(s)] != 0:
			r.Proto = protoNames[strings.ToLower(s)]
		default:
			return nil, &KeyError{Source: source, Key: itemKey + ".proto", Err: fmt.Errorf("want 1 to 255 or tcp, udp, sctp, icmp, icmp6, got %s", abbrev(o.Proto))}
		}
	}
	if o.Port != nil {
		if *o.Port == 0 {
			return nil, &KeyError{Source: source, Key: itemKey + ".port", Err: errors.New("want 1 to 65535")}
		}
		r.Port = *o.Port
	}
	for _, a := range []struct {
		key string
		s   string
		p   *netip.Prefix
	}{{"src", o.Src, &r.Src}, {"dst", o.Dst, &r.Dst}} {
		if a.s == "" {
			continue
		}
		p, err := parsePrefix(a.s)
		if err != nil {
			return nil, &KeyError{Source: source, Key: itemKey + "." + a.key, Err: err}
		}
		*a.p = p
	}
	if err := checkDropRule(r); err != nil {
		return nil, err
	}
	return []xdp.DropRule{r}, nil
}
