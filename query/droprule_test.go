package query

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stenod/stenod/flow"
)

// matches is what the XDP program does with a rule (xdp.DropRule.compile:
// a masked compare of the flow key, ports tried both ways), written the
// naive way.
func (r DropRule) matches(k *flow.Key) bool {
	if r.Proto != 0 && k.Proto != r.Proto {
		return false
	}
	if r.Port != 0 && (k.Flags&flow.FlagPorts == 0 || k.SrcPort != r.Port && k.DstPort != r.Port) {
		return false
	}
	for _, s := range []struct {
		p netip.Prefix
		b *[16]byte
	}{{r.Src, &k.Src}, {r.Dst, &k.Dst}} {
		if !s.p.IsValid() {
			continue
		}
		a, ok := gaddr(k, s.b)
		if !ok || a.Is4() != s.p.Addr().Is4() || !s.p.Contains(a) {
			return false
		}
	}
	return true
}

func TestParseDropRules(t *testing.T) {
	p := netip.MustParsePrefix
	for s, want := range map[string][]DropRule{
		"udp and port 53":                           {{Proto: 17, Port: 53}},
		"ip proto 50":                               {{Proto: 50}},
		"SCTP":                                      {{Proto: 132}},
		"tcp or udp":                                {{Proto: 6}, {Proto: 17}},
		"(tcp or udp) and port 53":                  {{Proto: 6, Port: 53}, {Proto: 17, Port: 53}},
		"tcp or ip proto 6":                         {{Proto: 6}},
		"net 10.0.0.0/8":                            {{Src: p("10.0.0.0/8")}, {Dst: p("10.0.0.0/8")}},
		"net 10.0.0.0 mask 255.0.0.0":               {{Src: p("10.0.0.0/8")}, {Dst: p("10.0.0.0/8")}},
		"tcp and port 443 and host 2001:db8::1":     {{Proto: 6, Port: 443, Src: p("2001:db8::1/128")}, {Proto: 6, Port: 443, Dst: p("2001:db8::1/128")}},
		"src net 192.0.2.0/24 and dst host 1.2.3.4": {{Src: p("192.0.2.0/24"), Dst: p("1.2.3.4/32")}},
		"dst host ::ffff:1.2.3.4":                   {{Dst: p("1.2.3.4/32")}},
		"icmp":                                      {{Proto: 1, Src: p("0.0.0.0/0")}},
		"icmp6 or ip6":                              {{Proto: 58, Src: p("::/0")}, {Src: p("::/0")}},
		"ip and dst net 10.0.0.0/8":                 {{Dst: p("10.0.0.0/8")}},
		"ip and src net 10.0.0.0/8":                 {{Src: p("10.0.0.0/8")}},
		// Conjunctions no frame matches are left out.
		"net 10.0.0.0/8 and src host 1.2.3.4":    {{Src: p("1.2.3.4/32"), Dst: p("10.0.0.0/8")}},
		"net 10.0.0.0/8 and src net 10.1.0.0/16": {{Src: p("10.1.0.0/16")}, {Src: p("10.1.0.0/16"), Dst: p("10.0.0.0/8")}},
		"tcp and udp or port 22":                 {{Port: 22}},
		"ip6 and host 10.0.0.1 or ip and port 1": {{Src: p("0.0.0.0/0"), Port: 1}},
	} {
		got, err := ParseDropRules(s, 16)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseDropRules(%q) = %v, %v, want %v", s, got, err, want)
		}
	}
}

func TestParseDropRulesErrors(t *testing.T) {
	for _, tc := range []struct {
		rule, want string
		syntax     bool
	}{
		{"", "the query is empty", true},
		{"portt 53", "unknown word", true},
		{"udp port 53", "missing and/or", true},
		{"net 10.0.0.1/8", "host bits set (did you mean 10.0.0.0/8?)", true},
		{"net 10.0.0.1 mask 255.0.0.0", "host bits set", true},
		{"not port 22", "not port 22: not expressible as a drop rule", false},
		{"port 22 and not host 10.0.0.1", "not host", false},
		{"after 3h ago", "frames as they arrive", false},
		{"community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "does not hash flows", false},
		{"vlan 10", "vlan 10: not expressible as a drop rule: drop rules take host, net, port", false},
		{"mpls 17 or tcp", "mpls 17", false},
		{"src port 53", "write port 53", false},
		{"port 0", "port 0 cannot be matched", false},
		{"ip proto 0", "protocol 0 cannot be matched", false},
		{"tcp and udp", "matches no frame", false},
		{"port 1 and port 2", "port 1 and port 2: not expressible as a drop rule: a drop rule matches one port", false},
		{"src net 10.0.0.0/8 and dst host ::1", "matches no frame", false},
		{"host 10.0.0.1 and port 1", "more than 1 rules", false},
		{strings.Repeat("(port 1 or port 2) and ", 20) + "tcp", "more than 1 rules", false},
	} {
		max := 16
		if strings.Contains(tc.want, "more than 1 ") {
			max = 1
		}
		_, err := ParseDropRules(tc.rule, max)
		switch {
		case err == nil:
			t.Errorf("ParseDropRules(%q): no error", tc.rule)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("ParseDropRules(%q): %v, want %q", tc.rule, err, tc.want)
		case errors.Is(err, ErrSyntax) != tc.syntax || errors.Is(err, ErrDropRule) == tc.syntax:
			t.Errorf("ParseDropRules(%q): %v: syntax error %v, want %v", tc.rule, err, errors.Is(err, ErrSyntax), tc.syntax)
		}
	}
}

// genDroppable is genExpr restricted to what drop rules take: and, or and
// the primitives the XDP program can match.
func genDroppable(r *rand.Rand, depth int) *gexpr {
	if depth <= 0 || r.IntN(3) == 0 {
		for {
			p := genPrim(r)
			switch p.kind {
			case "vlan", "mpls", "before", "after":
				continue
			case "port", "proto":
				if p.dir != "" || p.num == 0 {
					continue
				}
			}
			return &gexpr{op: gPrim, p: p}
		}
	}
	op := gAnd
	if r.IntN(2) == 0 {
		op = gOr
	}
	return &gexpr{op: op, l: genDroppable(r, depth-1), r: genDroppable(r, depth-1)}
}

// TestDropRulesAgainstQuery: the rules of a query drop exactly the frames
// the query matches, and each rule's String reads back as that rule.
func TestDropRulesAgainstQuery(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ks := testKeys(r, 200)
	n, checked := 2000, 0
	if testing.Short() {
		n = 200
	}
	for i := range n {
		e := genDroppable(r, 1+i%4)
		// The canonical form, as the generator sets host bits in nets.
		text := mustParse(t, render(r, e)).String()
		rules, err := ParseDropRules(text, 64)
		if errors.Is(err, ErrDropRule) {
			// Too many rules, two ports in one, or no frame at all.
			continue
		}
		if err != nil {
			t.Fatalf("ParseDropRules(%q): %v", text, err)
		}
		checked++
		q := mustParse(t, text)
		for _, k := range ks {
			want := q.MatchFlow(k) == Yes
			if got := slices.ContainsFunc(rules, func(r DropRule) bool { return r.matches(k) }); got != want {
				t.Fatalf("%q: rules %v match %+v: %v, the query: %v", text, rules, *k, got, want)
			}
		}
		for _, rule := range rules {
			back, err := ParseDropRules(rule.String(), 1)
			if err != nil || len(back) != 1 || back[0] != rule {
				t.Fatalf("%q: rule %v written %q reads back as %v, %v", text, rule, rule.String(), back, err)
			}
		}
	}
	t.Logf("%d of %d queries checked", checked, n)
	if checked < n/2 {
		t.Errorf("only %d of %d queries checked", checked, n)
	}
}
