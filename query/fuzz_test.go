package query

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParse: Parse never panics; every error is a *SyntaxError pointing into
// the query; every success has a canonical form that re-parses, under any
// now, to the same query, which evaluates like the original.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"host 8.8.8.8", "host 2001:db8::1", "net 10.0.0.0/8", "net 10.0.0.0 mask 255.0.0.0",
		"port 80", "ip proto 6", "tcp", "udp", "icmp", "vlan 100", "mpls 17",
		"before 2012-11-03T11:05:00Z", "after 2012-11-03T11:05:00-07:00", "before 45m ago", "after 3h ago",
		"after 1h30m ago and before 2012-11-03T11:05:00.123456789+01:00",
		"tcp && port 80 || udp", "not port 22 and host 10.0.0.1", "!(tcp or udp) and (vlan 1 or (mpls 2))",
		"src host ::ffff:10.0.0.1 or dst net ::ffff:0:0/96", "icmp6 or sctp or ip or ip6",
		"src tcp", "host 1.2.3", "net 10.0.0.0/33", "((tcp)", "tcp)", "after 106752d ago",
		"before 9999-12-31T23:59:59Z or after 0000-01-01T00:00:00Z", "tcp & udp", "()",
		benchQuery,
	} {
		f.Add(s)
	}
	ks := testKeys(rand.New(rand.NewPCG(3, 4)), 20)
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s, now)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): %T %v", s, err, err)
			}
			if se.Pos < 0 || se.Pos > len(s) || !strings.HasPrefix(s[se.Pos:], se.Token) || se.Msg == "" {
				t.Fatalf("Parse(%q): bad error %+v", s, se)
			}
			if se.Token == "" && strings.TrimSpace(s[se.Pos:]) != "" {
				t.Fatalf("Parse(%q): empty token at %d before the end", s, se.Pos)
			}
			return
		}
		c := q.String()
		q2, err := Parse(c, now.Add(-5*time.Hour))
		if err != nil {
			t.Fatalf("Parse(%q): canonical %q does not parse: %v", s, c, err)
		}
		if c2 := q2.String(); c2 != c {
			t.Fatalf("Parse(%q): canonical %q re-parses as %q", s, c, c2)
		}
		if !reflect.DeepEqual(q.root, q2.root) {
			t.Fatalf("Parse(%q): canonical %q re-parses to another AST", s, c)
		}
		lo, hi := q.TimeRange()
		if lo2, hi2 := q2.TimeRange(); lo != lo2 || hi != hi2 || q.TimeOnly() != q2.TimeOnly() {
			t.Fatalf("Parse(%q): canonical %q has another time range", s, c)
		}
		var tss []int64
		collectTimes(q.root, &tss)
		tss = append(tss, math.MinInt64, 0, math.MaxInt64-1)
		for _, k := range ks {
			v := q.MatchFlow(k)
			if v != q2.MatchFlow(k) {
				t.Fatalf("Parse(%q): canonical %q disagrees on %v", s, c, k)
			}
			for _, ts := range tss {
				for _, ts := range []int64{max(ts, math.MinInt64+1) - 1, min(ts, math.MaxInt64-1)} {
					got := q.MatchPacket(k, ts)
					if got != q2.MatchPacket(k, ts) {
						t.Fatalf("Parse(%q): canonical %q disagrees on %v at %d", s, c, k, ts)
					}
					if v == Yes && !got || v == No && got {
						t.Fatalf("Parse(%q): MatchFlow %v but MatchPacket %v on %v at %d", s, v, got, k, ts)
					}
					if got && (ts < lo || ts >= hi) {
						t.Fatalf("Parse(%q): match at %d outside [%d, %d)", s, ts, lo, hi)
					}
				}
			}
		}
	})
}

func collectTimes(n *node, out *[]int64) {
	switch n.kind {
	case kBefore, kAfter:
		*out = append(*out, n.t)
	case kNot:
		collectTimes(n.kid, out)
	case kChain:
		for _, t := range n.terms {
			collectTimes(t.n, out)
		}
	}
}
