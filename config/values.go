//go:build linux

package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/xdp"
)

// Size is a byte count as the file writes it: a number of bytes
// (1048576) or a string with a unit ("1GiB", "500MB", "1.5 TiB"), decimal
// (kB = 1000) or binary (KiB = 1024), case-insensitive, as storage vendors
// and the kernel write them. It must be a whole number of bytes, at least 0.
type Size int64

type sizeUnit struct {
	name string
	mult int64
}

var sizeUnits = []sizeUnit{
	// Binary first: String prefers them.
	{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"B", 1},
}

func (s *Size) UnmarshalText(text []byte) error {
	str := string(text)
	t := strings.TrimSpace(str)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	bad := fmt.Errorf(`size %q: want a number of bytes or a number with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), such as "1GiB" or "500MB"`, str)
	j := slices.IndexFunc(sizeUnits, func(u sizeUnit) bool { return strings.EqualFold(u.name, unit) })
	if num == "" || unit != "" && j < 0 {
		return bad
	}
	mult := int64(1)
	if j >= 0 {
		mult = sizeUnits[j].mult
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return fmt.Errorf("size %q: too large", str)
		}
		*s = Size(n * mult)
		return nil
	}
	f, err := strconv.ParseFloat(num, 64)
	switch v := f * float64(mult); {
	case err != nil:
		return bad
	case v >= math.MaxInt64:
		return fmt.Errorf("size %q: too large", str)
	case v != math.Trunc(v):
		return fmt.Errorf("size %q: not a whole number of bytes", str)
	default:
		*s = Size(v)
	}
	return nil
}

// String writes s in its shortest form, with a unit when one divides it
// ("1GiB", "64KiB", "500GB"), binary units first.
func (s Size) String() string {
	best := strconv.FormatInt(int64(s), 10)
	for _, u := range sizeUnits {
		if s > 0 && u.mult > 1 && int64(s)%u.mult == 0 {
			if str := strconv.FormatInt(int64(s)/u.mult, 10) + u.name; len(str) < len(best) || len(str) == len(best) && !strings.HasSuffix(best, "B") {
				best = str
			}
		}
	}
	return best
}

func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON writes a size with a unit as a string, others as a number.
func (s Size) MarshalJSON() ([]byte, error) {
	if str := s.String(); strings.HasSuffix(str, "B") {
		return json.Marshal(str)
	}
	return json.Marshal(int64(s))
}

func (s *Size) UnmarshalJSON(raw []byte) error {
	if bytes.HasPrefix(raw, []byte(`"`)) {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return err
		}
		return s.UnmarshalText([]byte(str))
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return fmt.Errorf(`want a size such as "1GiB", "500MB" or a number of bytes, got %s`, abbrev(raw))
	}
	if n < 0 {
		return fmt.Errorf("size %d is negative", n)
	}
	*s = Size(n)
	return nil
}

// Duration is a time.Duration as the file writes it: a string with a unit
// ("100ms", "5m", "1h30m", and days: "7d"; "0" for none). A bare number is
// refused: it would not say its unit.
type Duration time.Duration

func (d *Duration) UnmarshalText(text []byte) error {
	s := string(text)
	t := strings.TrimSpace(s)
	var v time.Duration
	var err error
	if days, ok := strings.CutSuffix(t, "d"); ok && !strings.ContainsAny(days, "hmsuµn") {
		var n int64
		n, err = strconv.ParseInt(days, 10, 64)
		if err == nil && (n < 0 || n > 100_000) {
			err = errors.New("out of range")
		}
		v = time.Duration(n) * 24 * time.Hour
	} else if t != "0" {
		v, err = time.ParseDuration(t)
	}
	if err != nil {
		return fmt.Errorf(`duration %q: want a number with a unit, such as "5m", "100ms", "2h" or "7d"`, s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// String writes d without zero components: "5m", "1h", "100ms".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *Duration) UnmarshalJSON(raw []byte) error {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf(`want a duration string such as "5m" or "100ms", got %s`, abbrev(raw))
	}
	return d.UnmarshalText([]byte(s))
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// DropRules are pre-capture drop rules. Each is a string in the query
// language, restricted to what the XDP program matches
// (query.ParseDropRules: "udp and port 53", "net 10.0.0.0/8", "tcp or
// sctp"), which may become several rules, or an object {"proto": 17 or
// "udp", "port": 53, "src": "10.0.0.0/8", "dst": "2001:db8::1"}, whose
// members must all match. On the command line, strings separated by ';'.
type DropRules []xdp.DropRule

// parseDropRule parses one rule string.
func parseDropRule(s string) ([]xdp.DropRule, error) {
	out, err := parseMatches(s, xdp.MaxDropRules)
	if err != nil {
		return nil, fmt.Errorf("drop rule %q: %w", s, err)
	}
	return out, nil
}

// parseMatches parses a query that the XDP program can evaluate on a flow
// key (a drop rule's, a cutoff rule's) into at most max masked matches.
func parseMatches(s string, max int) ([]xdp.DropRule, error) {
	rs, err := query.ParseDropRules(s, max)
	if err != nil {
		return nil, err
	}
	out := make([]xdp.DropRule, len(rs))
	for i, r := range rs {
		out[i] = xdp.DropRule(r)
	}
	return out, nil
}

// marshalUnescaped is json.Marshal without its HTML escaping, which would
// write the "=>" of cutoff rules as "=\u003e".
func marshalUnescaped(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (rs *DropRules) UnmarshalText(text []byte) error {
	out := DropRules{}
	for _, s := range strings.Split(string(text), ";") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := parseDropRule(s)
		if err != nil {
			return err
		}
		out = append(out, r...)
	}
	*rs = out
	return nil
}

func (rs DropRules) strings() []string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = query.DropRule(r).String()
	}
	return s
}

func (rs DropRules) MarshalText() ([]byte, error) {
	return []byte(strings.Join(rs.strings(), "; ")), nil
}

func (rs DropRules) MarshalJSON() ([]byte, error) { return json.Marshal(rs.strings()) }

// UnmarshalJSON takes an array of rule strings and objects. Errors name the
// item in a subkeyError: "[2]", "[0].port".
func (rs *DropRules) UnmarshalJSON(raw []byte) error {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf(`want an array of rules (strings such as "udp and port 53", or objects), got %s`, abbrev(raw))
	}
	out := DropRules{}
	for i, item := range items {
		var s string
		var err error
		switch {
		case json.Unmarshal(item, &s) == nil:
		case bytes.HasPrefix(item, []byte("{")):
			s, err = dropRuleObject(item)
		default:
			err = fmt.Errorf("want a rule string or object, got %s", abbrev(item))
		}
		var r []xdp.DropRule
		if err == nil {
			r, err = parseDropRule(s)
		}
		if err != nil {
			var se *subkeyError
			if errors.As(err, &se) {
				return &subkeyError{path: fmt.Sprintf("[%d]%s", i, se.path), err: se.err}
			}
			return &subkeyError{path: fmt.Sprintf("[%d]", i), err: err}
		}
		out = append(out, r...)
	}
	*rs = out
	return nil
}

// dropRuleObject writes the object form of a rule as a query, checking each
// member: the query is made of values known good, never of the file's
// text.
func dropRuleObject(raw json.RawMessage) (string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return "", err
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		if !slices.Contains([]string{"proto", "port", "src", "dst"}, name) {
			return "", &subkeyError{path: "." + name, err: ErrUnknownKey}
		}
	}
	var parts []string
	if raw, ok := members["proto"]; ok {
		var n uint8
		var s string
		switch {
		case json.Unmarshal(raw, &n) == nil && n != 0:
			parts = append(parts, "ip proto "+strconv.Itoa(int(n)))
		case json.Unmarshal(raw, &s) == nil && slices.Contains([]string{"tcp", "udp", "sctp", "icmp", "icmp6"}, strings.ToLower(s)):
			parts = append(parts, strings.ToLower(s))
		default:
			return "", &subkeyError{path: ".proto", err: fmt.Errorf("want 1 to 255 or tcp, udp, sctp, icmp, icmp6, got %s", abbrev(raw))}
		}
	}
	if raw, ok := members["port"]; ok {
		var n uint16
		if json.Unmarshal(raw, &n) != nil || n == 0 {
			return "", &subkeyError{path: ".port", err: fmt.Errorf("want 1 to 65535, got %s", abbrev(raw))}
		}
		parts = append(parts, "port "+strconv.Itoa(int(n)))
	}
	for _, dir := range []string{"src", "dst"} {
		raw, ok := members[dir]
		if !ok {
			continue
		}
		var s string
		_ = json.Unmarshal(raw, &s)
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			parts = append(parts, dir+" host "+a.String())
			continue
		}
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return "", &subkeyError{path: "." + dir, err: fmt.Errorf("want an IPv4 or IPv6 address or network, got %s", abbrev(raw))}
		case p.Masked() != p:
			return "", &subkeyError{path: "." + dir, err: fmt.Errorf("network %s has host bits set (did you mean %v?)", p, p.Masked())}
		}
		parts = append(parts, dir+" net "+p.String())
	}
	if len(parts) == 0 {
		return "", errors.New("an empty rule would drop every frame")
	}
	return strings.Join(parts, " and "), nil
}
