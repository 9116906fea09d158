//go:build linux

package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/stenod/stenod/xdp"
)

// CutoffLimit is a per-connection cutoff (xdp.Limit) as the file and the
// flags write it: a size ("20KB", "1.5MB", "64KiB", as Size), a number of
// packets ("5p"), both joined by "+" ("20KB+10p": whichever comes first),
// or "0" or "never" for no cutoff. In the file a bare number is bytes.
type CutoffLimit xdp.Limit

// limitSyntax says what a limit is written as.
const limitSyntax = `want a size such as "20KB", "1.5MB" or "64KiB", a number of packets such as "5p", or "never"`

func (l *CutoffLimit) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if strings.EqualFold(s, "never") || s == "0" {
		*l = CutoffLimit{}
		return nil
	}
	var out CutoffLimit
	var haveBytes, havePackets bool
	for _, part := range strings.Split(s, "+") {
		part = strings.TrimSpace(part)
		if n, ok := strings.CutSuffix(strings.ToLower(part), "p"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			p, err := strconv.ParseUint(n, 10, 64)
			if err != nil || havePackets {
				return fmt.Errorf("limit %q: %s", s, limitSyntax)
			}
			out.Packets, havePackets = p, true
			continue
		}
		var size Size
		if err := size.UnmarshalText([]byte(part)); err != nil || haveBytes {
			return fmt.Errorf("limit %q: %s", s, limitSyntax)
		}
		out.Bytes, haveBytes = uint64(size), true
	}
	*l = out
	return nil
}

// String writes l as UnmarshalText reads it, "0" for no limit.
func (l CutoffLimit) String() string {
	var parts []string
	if l.Bytes != 0 {
		parts = append(parts, Size(l.Bytes).String())
	}
	if l.Packets != 0 {
		parts = append(parts, strconv.FormatUint(l.Packets, 10)+"p")
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, "+")
}

func (l CutoffLimit) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

func (l CutoffLimit) MarshalJSON() ([]byte, error) { return json.Marshal(l.String()) }

func (l *CutoffLimit) UnmarshalJSON(raw []byte) error {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return l.UnmarshalText([]byte(s))
	}
	var n uint64
	if err := json.Unmarshal(raw, &n); err != nil {
		return fmt.Errorf(`want a cutoff such as "20KB" or "5p" (or a number of bytes), got %s`, abbrev(raw))
	}
	*l = CutoffLimit{Bytes: n}
	return nil
}

// CutoffRules are the per-class cutoffs, first match wins: each is
// "QUERY => LIMIT", QUERY in the query language as far as drop rules
// take it (query.ParseDropRules: host, net, port, ip proto, tcp, udp,
// ...; and, or), LIMIT a CutoffLimit ("20KB", "5p", "never"). On the
// command line, rules separated by ';'.
type CutoffRules []xdp.CutoffRule

// ruleArrow separates a cutoff rule's query from its limit.
const ruleArrow = "=>"

// parseCutoffRule parses "QUERY => LIMIT". The rule's Name is its query
// as written, trimmed: what metrics and logs call it. Errors name the
// rule; a query's position counts from the start of the rule, trimmed.
func parseCutoffRule(text string) (xdp.CutoffRule, error) {
	s := strings.TrimSpace(text)
	q, lim, ok := strings.Cut(s, ruleArrow)
	if !ok || strings.Contains(lim, ruleArrow) {
		return xdp.CutoffRule{}, fmt.Errorf("cutoff rule %q: want QUERY => LIMIT, such as \"port 443 => 20KB\", \"port 22 => 5p\" or \"host 10.0.0.5 => never\"", s)
	}
	if strings.TrimSpace(q) == "" {
		return xdp.CutoffRule{}, fmt.Errorf("cutoff rule %q: no query before %s", s, ruleArrow)
	}
	matches, err := parseMatches(q, xdp.MaxCutoffMatches)
	if err != nil {
		return xdp.CutoffRule{}, fmt.Errorf("cutoff rule %q: %w", s, err)
	}
	var limit CutoffLimit
	if err := limit.UnmarshalText([]byte(lim)); err != nil {
		return xdp.CutoffRule{}, fmt.Errorf("cutoff rule %q: %w", s, err)
	}
	return xdp.CutoffRule{Name: strings.TrimSpace(q), Match: matches, Limit: xdp.Limit(limit)}, nil
}

// formatCutoffRule writes r as parseCutoffRule reads it.
func formatCutoffRule(r xdp.CutoffRule) string {
	lim := CutoffLimit(r.Limit).String()
	if lim == "0" {
		lim = "never"
	}
	return r.Name + " " + ruleArrow + " " + lim
}

func (rs *CutoffRules) UnmarshalText(text []byte) error {
	out := CutoffRules{}
	for _, s := range strings.Split(string(text), ";") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		r, err := parseCutoffRule(s)
		if err != nil {
			return err
		}
		out = append(out, r)
	}
	*rs = out
	return nil
}

func (rs CutoffRules) strings() []string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = formatCutoffRule(r)
	}
	return s
}

func (rs CutoffRules) MarshalText() ([]byte, error) {
	return []byte(strings.Join(rs.strings(), "; ")), nil
}

// MarshalJSON writes the rules as an array of strings, "=>" as it is
// (json.Marshal would write \u003e).
func (rs CutoffRules) MarshalJSON() ([]byte, error) { return marshalUnescaped(rs.strings()) }

// UnmarshalJSON takes an array of rule strings; errors name the item
// ("[2]").
func (rs *CutoffRules) UnmarshalJSON(raw []byte) error {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf(`want an array of rules such as "port 443 => 20KB", got %s`, abbrev(raw))
	}
	out := CutoffRules{}
	for i, item := range items {
		var s string
		if err := json.Unmarshal(item, &s); err != nil {
			return &subkeyError{path: fmt.Sprintf("[%d]", i), err: fmt.Errorf(`want a rule string such as "port 443 => 20KB", got %s`, abbrev(item))}
		}
		r, err := parseCutoffRule(s)
		if err != nil {
			return &subkeyError{path: fmt.Sprintf("[%d]", i), err: err}
		}
		out = append(out, r)
	}
	*rs = out
	return nil
}

// validateCutoff checks what the XDP program can hold and what the
// metrics can tell apart, naming the key.
func validateCutoff(c *xdp.CutoffConfig) error {
	bad := func(key string, err error) error { return &KeyError{Key: key, Err: err} }
	if c.JitterPercent > 100 {
		return bad("capture.cutoff_jitter", fmt.Errorf("cutoff jitter %d%%: want a percent from 0 to 100", c.JitterPercent))
	}
	total := 0
	for i, r := range c.Rules {
		if len(r.Match) == 0 {
			return bad(fmt.Sprintf("capture.cutoff_rules[%d]", i), errors.New("cutoff rule without a match"))
		}
		total += len(r.Match)
		// Same matches: the later rule never applies; it would also share
		// the earlier one's name in the metrics.
		for j, e := range c.Rules[:i] {
			if slices.Equal(e.Match, r.Match) {
				return bad(fmt.Sprintf("capture.cutoff_rules[%d]", i), fmt.Errorf("cutoff rule %q matches what rule %d (%q) matches: it would never apply", formatCutoffRule(r), j, formatCutoffRule(e)))
			}
		}
	}
	if total > xdp.MaxCutoffMatches {
		return bad("capture.cutoff_rules", fmt.Errorf("the cutoff rules take %d matches, at most %d: each or, and each host or net without src or dst, takes one more", total, xdp.MaxCutoffMatches))
	}
	return nil
}
