package query

import (
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// now is the reference time of every test that parses relative times.
var now = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func mustParse(tb testing.TB, s string) *Query {
	tb.Helper()
	q, err := Parse(s, now)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", s, err)
	}
	return q
}

func TestParseCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"host 8.8.8.8", ""},
		{"HOST 2001:DB8::1", "host 2001:db8::1"},
		{"host ::ffff:10.0.0.1", "host 10.0.0.1"},
		{"host ::", ""},
		{"src host 10.0.0.1", ""},
		{"DST Host 10.0.0.1", "dst host 10.0.0.1"},
		{"net 10.0.0.0/8", ""},
		{"net 10.1.2.3/8", "net 10.0.0.0/8"},
		{"net 10.0.0.0 / 8", "net 10.0.0.0/8"},
		{"net 10.0.0.0 mask 255.0.0.0", "net 10.0.0.0/8"},
		{"net 10.1.2.3 MASK 255.255.240.0", "net 10.1.0.0/20"},
		{"net 10.0.0.0 mask 0.0.0.0", "net 0.0.0.0/0"},
		{"net 1.2.3.4 mask 255.255.255.255", "net 1.2.3.4/32"},
		{"src net 2001:db8::1/32", "src net 2001:db8::/32"},
		{"net 2001:db8:: mask ffff:ffff::", "net 2001:db8::/32"},
		{"net ::ffff:10.0.0.0/104", "net 10.0.0.0/8"},
		{"net ::ffff:10.0.0.0 mask 255.0.0.0", "net 10.0.0.0/8"},
		{"net ::ffff:0:0/80", "net ::/80"},
		{"net ::/0", ""},
		{"port 80", ""},
		{"src port 0", ""},
		{"dst port 65535", ""},
		{"port 0080", "port 80"},
		{"ip proto 6", ""},
		{"IP PROTO 255", "ip proto 255"},
		{"tcp", ""}, {"udp", ""}, {"sctp", ""}, {"icmp", ""}, {"icmp6", ""}, {"ip", ""}, {"ip6", ""},
		{"vlan 0", ""},
		{"vlan 4095", ""},
		{"mpls 1048575", ""},
		{"community-id 1:wCb3OG7yAFWelaUydu0D+125CLM=", ""},
		{"Community-ID 1:LQU9qZlK+B5F3KDmev6m5PMibrg=&&tcp", "community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg= and tcp"},
		{"(community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg=)||udp", "community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg= or udp"},
		{"community-id 1:2d053da9994af81e45dca0e67afea6e4f3226eb8", "community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		{"before 2012-11-03T11:05:00Z", ""},
		{"after 2012-11-03T11:05:00-07:00", "after 2012-11-03T18:05:00Z"},
		{"before 2012-11-03T11:05:00.123456789+01:00", "before 2012-11-03T10:05:00.123456789Z"},
		{"after 2012-11-03t11:05:00.5z", "after 2012-11-03T11:05:00.5Z"},
		{"before 45m ago", "before 2024-01-02T02:19:05Z"},
		{"after 3h ago", "after 2024-01-02T00:04:05Z"},
		{"after 1h30m ago", "after 2024-01-02T01:34:05Z"},
		{"after 2d ago", "after 2023-12-31T03:04:05Z"},
		{"after 30s ago", "after 2024-01-02T03:03:35Z"},
		{"AFTER 1H AGO", "after 2024-01-02T02:04:05Z"},
		{"after 0s ago", "after 2024-01-02T03:04:05Z"},
		{"after 1d2h3m4s ago", "after 2024-01-01T01:01:01Z"},
		{"after 1000-01-01T00:00:00Z", "after 1677-09-21T00:12:43.145224192Z"},
		{"before 9999-12-31T23:59:59Z", "before 2262-04-11T23:47:16.854775807Z"},
		{"tcp && port 80 || udp", "tcp and port 80 or udp"},
		{"tcp AND udp OR icmp", "tcp and udp or icmp"},
		{"! tcp", "not tcp"},
		{"!tcp", "not tcp"},
		{"NOT tcp", "not tcp"},
		{"not not tcp", ""},
		{"!!tcp", "not not tcp"},
		{"not (tcp or udp)", ""},
		{"not (tcp)", "not tcp"},
		{"not port 22 and host 10.0.0.1", ""},
		{"(tcp or udp) and port 53", "tcp or udp and port 53"},
		{"tcp or (udp and port 53)", ""},
		{"((((tcp))))", "tcp"},
		{"(tcp) and (udp)", "tcp and udp"},
		{"((tcp and udp) or icmp) and ip", "tcp and udp or icmp and ip"},
		{"tcp and (udp or (icmp and not (vlan 1 or vlan 2)))", ""},
		{"host 10.0.0.1&&port 80", "host 10.0.0.1 and port 80"},
		{"(host 10.0.0.1)or(port 80)", "host 10.0.0.1 or port 80"},
		{"  tcp\t\n", "tcp"},
		{"net 10.0.0.0/8 and not net 10.1.0.0/16 or src port 22", ""},
		// The example in docs/query-language.md.
		{"HOST ::ffff:10.0.0.1 && (Port 80 || port 443) and AFTER 3h ago", "host 10.0.0.1 and (port 80 or port 443) and after 2024-01-02T00:04:05Z"},
		{strings.Repeat("(", MaxDepth) + "tcp" + strings.Repeat(")", MaxDepth), "tcp"},
		{strings.Repeat("not ", MaxDepth) + "tcp", strings.Repeat("not ", MaxDepth) + "tcp"},
	}
	for _, tt := range tests {
		want := tt.want
		if want == "" {
			want = tt.in
		}
		q, err := Parse(tt.in, now)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := q.String(); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, want)
		}
		// The canonical form is a fixed point, whatever now is.
		q2, err := Parse(want, now.Add(17*time.Hour))
		if err != nil {
			t.Errorf("Parse(%q) (canonical): %v", want, err)
			continue
		}
		if got := q2.String(); got != want {
			t.Errorf("canonical %q re-parsed as %q", want, got)
		}
		if !reflect.DeepEqual(q.root, q2.root) {
			t.Errorf("canonical %q re-parsed to a different AST", want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	deepParens := strings.Repeat("(", MaxDepth+1) + "tcp" + strings.Repeat(")", MaxDepth+1)
	deepNot := strings.Repeat("not ", MaxDepth+1) + "tcp"
	tests := []struct {
		in    string
		pos   int
		token string
		msg   string
	}{
		{"", 0, "", "the query is empty"},
		{"community-id", 12, "", "community-id needs an ID, such as community-id 1:wCb3OG7yAFWelaUydu0D+125CLM="},
		{"community-id )", 13, ")", "community-id needs an ID, such as community-id 1:wCb3OG7yAFWelaUydu0D+125CLM="},
		{"community-id 2:LQU9qZlK+B5F3KDmev6m5PMibrg=", 13, "2:LQU9qZlK+B5F3KDmev6m5PMibrg=", "want version 1, written 1:BASE64"},
		{"community-id 1:LQU9qZlK+B5F3KDmev6m5PMib", 13, "1:LQU9qZlK+B5F3KDmev6m5PMib", "want 1: and the base64 of a 20-byte SHA-1 digest"},
		{"tcp community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg=", 4, "community-id", `missing and/or between "tcp" and "community-id"`},
		{"  \t", 3, "", "the query is empty"},
		{"host 1.2.3", 5, "1.2.3", "host needs an IPv4 or IPv6 address"},
		{"src host 1.2.3", 9, "1.2.3", "host needs an IPv4 or IPv6 address"},
		{"host", 4, "", "host needs an IPv4 or IPv6 address"},
		{"host 01.2.3.4", 5, "01.2.3.4", "host needs an IPv4 or IPv6 address"},
		{"host 2001:db8:::1", 5, "2001:db8:::1", "host needs an IPv4 or IPv6 address"},
		{"host fe80::1%eth0", 5, "fe80::1%eth0", "host needs an IPv4 or IPv6 address without a %zone"},
		{"host 10.0.0.0/8", 13, "/", "unexpected /: only net takes a prefix length (net 10.0.0.0/8)"},
		{"net 10.0.0.0/33", 13, "33", "an IPv4 prefix length must be 0..32"},
		{"net 10.0.0.0/", 13, "", "an IPv4 prefix length must be 0..32"},
		{"net 10.0.0.0/x", 13, "x", "an IPv4 prefix length must be 0..32"},
		{"net 2001:db8::/129", 15, "129", "an IPv6 prefix length must be 0..128"},
		{"net 10.0.0.0 mask 255.0.255.0", 18, "255.0.255.0", "the mask is not contiguous: it must be ones followed by zeros, like 255.255.240.0"},
		{"net 10.0.0.0 mask 0.0.0.255", 18, "0.0.0.255", "the mask is not contiguous: it must be ones followed by zeros, like 255.255.240.0"},
		{"net 10.0.0.0 mask ffff::", 18, "ffff::", "the network 10.0.0.0 is IPv4 but the mask is not"},
		{"net 2001:db8:: mask 255.0.0.0", 20, "255.0.0.0", "the network 2001:db8:: is IPv6 but the mask is not"},
		{"net 10.0.0.0 mask 255.0.0", 18, "255.0.0", "mask needs a netmask like 255.255.0.0"},
		{"net 10.0.0.0 mask", 17, "", "mask needs a netmask like 255.255.0.0"},
		{"net 10.0.0.0", 12, "", "net needs a prefix length or a mask after the address: net 10.0.0.0/8 or net 10.0.0.0 mask 255.0.0.0"},
		{"net 10.0.0.0 and tcp", 13, "and", "net needs a prefix length or a mask after the address: net 10.0.0.0/8 or net 10.0.0.0 mask 255.0.0.0"},
		{"net 10/8", 4, "10", "net needs an IPv4 or IPv6 address"},
		{"port 65536", 5, "65536", "port must be 0..65535"},
		{"port 99999999999999999999", 5, "99999999999999999999", "port must be 0..65535"},
		{"port http", 5, "http", "port needs a number 0..65535 (service names are not supported)"},
		{"port -1", 5, "-1", "port needs a number 0..65535"},
		{"port", 4, "", "port needs a number 0..65535"},
		{"ip proto 256", 9, "256", "ip proto must be 0..255"},
		{"ip proto tcp", 9, "tcp", "ip proto needs a number 0..255"},
		{"vlan 4096", 5, "4096", "vlan must be 0..4095"},
		{"mpls 1048576", 5, "1048576", "mpls must be 0..1048575"},
		{"proto 6", 0, "proto", "write ip proto N (it matches IPv4 and IPv6)"},
		{"ip6 proto 58", 4, "proto", "proto only follows ip: ip proto N (it matches IPv4 and IPv6)"},
		{"hots 1.2.3.4", 0, "hots", "unknown word; expected one of " + primitives},
		{"tcp and bogus", 8, "bogus", "unknown word; expected one of " + primitives},
		{"1.2.3.4", 0, "1.2.3.4", "an address needs host before it: host 1.2.3.4"},
		{"mask 255.0.0.0", 0, "mask", "mask only follows a network address: net 10.0.0.0 mask 255.0.0.0"},
		{"ago", 0, "ago", "ago only follows a duration: before 3h ago"},
		{"tcp and", 7, "", `expected a primitive after "and"`},
		{"tcp ||", 6, "", `expected a primitive after "||"`},
		{"not", 3, "", `expected a primitive after "not"`},
		{"!", 1, "", `expected a primitive after "!"`},
		{"tcp or or udp", 7, "or", `expected a primitive (host, net, port, tcp, ...) or ( or not, found "or"`},
		{"and tcp", 0, "and", `expected a primitive (host, net, port, tcp, ...) or ( or not, found "and"`},
		{"(tcp", 4, "", "unbalanced parentheses: the ( at 0 is not closed"},
		{"tcp and (udp or (icmp)", 22, "", "unbalanced parentheses: the ( at 8 is not closed"},
		{"tcp)", 3, ")", "unbalanced parentheses: this ) has no ("},
		{"()", 1, ")", "empty parentheses"},
		{")", 0, ")", `expected a primitive (host, net, port, tcp, ...) or ( or not, found ")"`},
		{"tcp udp", 4, "udp", `missing and/or between "tcp" and "udp"`},
		{"host 1.2.3.4 port 80", 13, "port", `missing and/or between "1.2.3.4" and "port"`},
		{"(tcp udp)", 5, "udp", `missing and/or between "tcp" and "udp"`},
		{"tcp 80", 4, "80", `expected and, or, or the end of the query after "tcp"`},
		{"(tcp 80)", 5, "80", `expected and, or, or ) after "tcp"`},
		{"src tcp", 4, "tcp", "src applies only to host, net and port, not to tcp"},
		{"dst src host 1.2.3.4", 4, "src", "dst applies only to host, net and port, not to src"},
		{"src", 3, "", "src must be followed by host, net or port"},
		{"dst (host 1.2.3.4)", 4, "(", "dst must be followed by host, net or port"},
		{"before", 6, "", "before needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"before 2012-11-03T11:05:00", 7, "2012-11-03T11:05:00", "before needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"after 2012-13-03T11:05:00Z", 6, "2012-13-03T11:05:00Z", "after needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"after 2012-11-03", 6, "2012-11-03", "after needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"after 3h", 8, "", "a duration needs ago after it: after 3h ago"},
		{"after 3h and tcp", 9, "and", "a duration needs ago after it: after 3h ago"},
		{"after 3 ago", 6, "3", "a duration needs a unit (s, m, h or d): after 3m ago"},
		{"after 3x ago", 6, "3x", "after needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"after 1.5h ago", 6, "1.5h", "after needs an RFC 3339 time with Z or an offset (2012-11-03T11:05:00Z) or a duration with ago (3h ago)"},
		{"after 106752d ago", 6, "106752d", "the duration is too long (at most 106751d)"},
		{"after 99999999999999999999999s ago", 6, "99999999999999999999999s", "the duration is too long (at most 106751d)"},
		{"after 106751d106751d ago", 6, "106751d106751d", "the duration is too long (at most 106751d)"},
		{"net 10.0.0.0 MAS\u212A 255.0.0.0", 13, "MAS\u212A", "net needs a prefix length or a mask after the address: net 10.0.0.0/8 or net 10.0.0.0 mask 255.0.0.0"},
		{"host 10.0.0.1 \u00a0and tcp", 14, "\u00a0and", `expected and, or, or the end of the query after "10.0.0.1"`},
		{"tcp & udp", 4, "&", "a single & is not an operator: write && or and"},
		{"tcp | udp", 4, "|", "a single | is not an operator: write || or or"},
		{deepParens, MaxDepth, "(", "parentheses and not nest more than 100 deep"},
		{deepNot, 4 * MaxDepth, "not", "parentheses and not nest more than 100 deep"},
	}
	for _, tt := range tests {
		q, err := Parse(tt.in, now)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want an error", tt.in, q)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q): %T %v, want *SyntaxError", tt.in, err, err)
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): error is not ErrSyntax", tt.in)
		}
		if se.Pos != tt.pos || se.Token != tt.token || se.Msg != tt.msg {
			t.Errorf("Parse(%q):\n got %d %q %q\nwant %d %q %q", tt.in, se.Pos, se.Token, se.Msg, tt.pos, tt.token, tt.msg)
		}
		if se.Token != "" && !strings.HasPrefix(tt.in[se.Pos:], se.Token) {
			t.Errorf("Parse(%q): token %q is not at %d", tt.in, se.Token, se.Pos)
		}
	}
}

func TestSyntaxErrorString(t *testing.T) {
	_, err := Parse("host 1.2.3", now)
	if got, want := err.Error(), `query: at 5 ("1.2.3"): host needs an IPv4 or IPv6 address`; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	_, err = Parse("tcp and", now)
	if got, want := err.Error(), `query: at 7 (end of query): expected a primitive after "and"`; got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

// Hand-built keys, as flow.Parse would build them (docs/flow-key.md).

func addr16(s string) [16]byte {
	a := netip.MustParseAddr(s)
	var b [16]byte
	if a.Is4() {
		a4 := a.As4()
		copy(b[:], a4[:])
		return b
	}
	return a.As16()
}

// ipKey builds an IP key; ports < 0 means no ports (FlagPorts unset).
func ipKey(src, dst string, proto uint8, sport, dport int) flow.Key {
	k := flow.Key{Src: addr16(src), Dst: addr16(dst), Proto: proto}
	if netip.MustParseAddr(src).Is4() {
		k.Flags, k.EtherType = flow.FlagIPv4, 0x0800
	} else {
		k.Flags, k.EtherType = flow.FlagIPv6, 0x86dd
	}
	if sport >= 0 {
		k.Flags |= flow.FlagPorts
		k.SrcPort, k.DstPort = uint16(sport), uint16(dport)
	}
	return k
}

func withVLAN(k flow.Key, vids ...uint16) flow.Key {
	for i, v := range vids {
		k.VLAN[i] = v
		k.Flags |= flow.FlagVLAN0 << i
	}
	return k
}

func withMPLS(k flow.Key, label uint32) flow.Key {
	k.MPLS, k.Flags, k.EtherType = label, k.Flags|flow.FlagMPLS, 0x8847
	return k
}

func withFrag(k flow.Key) flow.Key {
	k.Flags |= flow.FlagFragment
	return k
}

var keys = map[string]flow.Key{
	"zero":    {},
	"arp":     {EtherType: 0x0806},
	"arpvlan": withVLAN(flow.Key{EtherType: 0x0806}, 100),
	"t4":      ipKey("10.0.0.1", "10.0.0.2", 6, 1234, 80),
	"u4":      ipKey("192.168.1.1", "10.0.0.1", 17, 53, 5353),
	"i4":      ipKey("10.0.0.1", "8.8.8.8", 1, -1, -1),
	"f4":      withFrag(ipKey("10.0.0.1", "10.0.0.2", 17, -1, -1)),
	"ff4":     withFrag(ipKey("10.0.0.1", "10.0.0.2", 17, 4000, 53)), // first fragment
	"s4":      ipKey("10.1.2.3", "10.1.2.4", 132, 2905, 2905),
	"p0":      ipKey("10.0.0.1", "10.0.0.2", 0, -1, -1),
	"t6":      ipKey("2001:db8::1", "2001:db8:1::2", 6, 443, 50000),
	"u6":      ipKey("2001:db8::2", "2001:db8::1", 17, 53, 53),
	"i6":      ipKey("fe80::1", "ff02::1", 58, -1, -1),
	"p1v6":    ipKey("2001:db8::1", "2001:db8::2", 1, -1, -1),
	"esp6":    ipKey("2001:db8::1", "2001:db8::2", 50, -1, -1),
	"m6":      ipKey("::ffff:10.0.0.1", "2001:db8::1", 6, 22, 22),
	"v4":      withVLAN(ipKey("10.0.0.1", "10.0.0.2", 6, 1234, 80), 100, 200),
	"v0":      withVLAN(ipKey("10.0.0.1", "10.0.0.2", 6, 1234, 80), 0),
	"mp4":     withMPLS(ipKey("10.0.0.1", "10.0.0.2", 6, 1234, 80), 17),
	"mp0":     withMPLS(flow.Key{}, 0),
	"mpv6":    withVLAN(withMPLS(ipKey("2001:db8::1", "2001:db8::2", 17, 1, 2), 1048575), 7),
}

func key(tb testing.TB, name string) *flow.Key {
	k, ok := keys[name]
	if !ok {
		tb.Fatalf("no key %q", name)
	}
	return &k
}

var t0 = time.Date(2012, 11, 3, 11, 5, 0, 0, time.UTC).UnixNano()

func TestSemantics(t *testing.T) {
	// yes lists the keys that match; every other key must not.
	tests := []struct {
		q   string
		yes string
	}{
		{"host 10.0.0.1", "t4 u4 i4 f4 ff4 p0 v4 v0 mp4"},
		{"host ::ffff:10.0.0.1", "t4 u4 i4 f4 ff4 p0 v4 v0 mp4"},
		{"src host 10.0.0.1", "t4 i4 f4 ff4 p0 v4 v0 mp4"},
		{"dst host 10.0.0.1", "u4"},
		{"host 2001:db8::1", "t6 u6 p1v6 esp6 m6 mpv6"},
		{"src host 2001:db8::1", "t6 p1v6 esp6 mpv6"},
		{"host 0.0.0.0", ""},
		{"host ::", ""},
		{"net 10.0.0.0/8", "t4 u4 i4 f4 ff4 s4 p0 v4 v0 mp4"},
		{"net 10.0.0.0 mask 255.255.255.0", "t4 u4 i4 f4 ff4 p0 v4 v0 mp4"},
		{"net 10.1.2.99/24", "s4"},
		{"dst net 8.0.0.0/8", "i4"},
		{"net 0.0.0.0/0", "t4 u4 i4 f4 ff4 s4 p0 v4 v0 mp4"},
		{"net ::/0", "t6 u6 i6 p1v6 esp6 m6 mpv6"},
		{"net ::ffff:0.0.0.0/96", "t4 u4 i4 f4 ff4 s4 p0 v4 v0 mp4"},
		{"net ::ffff:0:0/80", "m6"},
		{"net 2001:db8::/32", "t6 u6 p1v6 esp6 m6 mpv6"},
		{"src net 2001:db8:1::/48", ""},
		{"dst net 2001:db8:1::/48", "t6"},
		{"net fe80::/10", "i6"},
		{"port 80", "t4 v4 v0 mp4"},
		{"port 53", "u4 ff4 u6"},
		{"src port 53", "u4 u6"},
		{"dst port 53", "ff4 u6"},
		{"port 0", ""},
		{"port 2905", "s4"},
		{"port 22", "m6"},
		{"ip proto 6", "t4 t6 m6 v4 v0 mp4"},
		{"ip proto 0", "p0"},
		{"ip proto 1", "i4 p1v6"},
		{"ip proto 50", "esp6"},
		{"tcp", "t4 t6 m6 v4 v0 mp4"},
		{"udp", "u4 f4 ff4 u6 mpv6"},
		{"sctp", "s4"},
		{"icmp", "i4"},
		{"icmp6", "i6"},
		{"ip", "t4 u4 i4 f4 ff4 s4 p0 v4 v0 mp4"},
		{"ip6", "t6 u6 i6 p1v6 esp6 m6 mpv6"},
		{"vlan 100", "arpvlan v4"},
		{"vlan 200", "v4"},
		{"vlan 0", "v0"},
		{"vlan 7", "mpv6"},
		{"mpls 17", "mp4"},
		{"mpls 0", "mp0"},
		{"mpls 1048575", "mpv6"},
		{"not port 80", "zero arp arpvlan u4 i4 f4 ff4 s4 p0 t6 u6 i6 p1v6 esp6 m6 mp0 mpv6"},
		{"not ip and not ip6", "zero arp arpvlan mp0"},
		{"not host 10.0.0.1", "zero arp arpvlan s4 t6 u6 i6 p1v6 esp6 m6 mp0 mpv6"},
		{"after 2012-11-03T11:05:00Z", "zero arp arpvlan t4 u4 i4 f4 ff4 s4 p0 t6 u6 i6 p1v6 esp6 m6 v4 v0 mp4 mp0 mpv6"},
		{"before 2012-11-03T11:05:00Z", ""},
		{"before 2012-11-03T11:05:00.000000001Z", "zero arp arpvlan t4 u4 i4 f4 ff4 s4 p0 t6 u6 i6 p1v6 esp6 m6 v4 v0 mp4 mp0 mpv6"},
		{"after 2012-11-03T11:05:00.000000001Z", ""},
		{"after 2012-11-03T04:05:00-07:00 and before 2012-11-03T11:05:01Z", "zero arp arpvlan t4 u4 i4 f4 ff4 s4 p0 t6 u6 i6 p1v6 esp6 m6 v4 v0 mp4 mp0 mpv6"},
		// Equal precedence, left to right.
		{"tcp or udp and port 53", "u4 ff4 u6"},
		{"udp and port 53 or tcp", "u4 ff4 u6 t4 t6 m6 v4 v0 mp4"},
		{"tcp or (udp and port 53)", "u4 ff4 u6 t4 t6 m6 v4 v0 mp4"},
		{"not port 80 and host 10.0.0.1", "u4 i4 f4 ff4 p0"},
		{"not (port 80 and host 10.0.0.1)", "zero arp arpvlan u4 i4 f4 ff4 s4 p0 t6 u6 i6 p1v6 esp6 m6 mp0 mpv6"},
		{"host 10.0.0.1 and host 10.0.0.2 and tcp and dst port 80", "t4 v4 v0 mp4"},
		{"vlan 100 && ip || mpls 0", "v4 mp0"},
	}
	for _, tt := range tests {
		q := mustParse(t, tt.q)
		want := map[string]bool{}
		for _, n := range strings.Fields(tt.yes) {
			key(t, n)
			want[n] = true
		}
		for name := range keys {
			k := key(t, name)
			if got := q.MatchPacket(k, t0); got != want[name] {
				t.Errorf("%q on %s (%v): got %v", tt.q, name, k, got)
			}
		}
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		q    string
		key  string
		want Verdict
	}{
		{"tcp", "t4", Yes},
		{"tcp", "u4", No},
		{"after 3h ago", "t4", ByTime},
		{"after 3h ago", "arp", ByTime},
		{"tcp and after 3h ago", "u4", No},
		{"tcp and after 3h ago", "t4", ByTime},
		{"tcp or after 3h ago", "t4", Yes},
		{"tcp or after 3h ago", "u4", ByTime},
		{"not (tcp or after 3h ago)", "t4", No},
		{"not (tcp or after 3h ago)", "u4", ByTime},
		{"not (tcp and before 3h ago)", "u4", Yes},
		{"udp or tcp and before 3h ago", "i4", No},
		{"udp or tcp and before 3h ago", "u4", ByTime},
		{"after 1600-01-01T00:00:00Z", "zero", Yes}, // clamped to the earliest timestamp
		{"before 1600-01-01T00:00:00Z", "zero", No},
		{"not after 1600-01-01T00:00:00Z or tcp", "t4", Yes},
	}
	for _, tt := range tests {
		q := mustParse(t, tt.q)
		if got := q.MatchFlow(key(t, tt.key)); got != tt.want {
			t.Errorf("%q on %s: got %v, want %v", tt.q, tt.key, got, tt.want)
		}
	}
}

// TestHasTime: a query with a time primitive anywhere says so, and one
// without never answers ByTime.
func TestHasTime(t *testing.T) {
	for q, want := range map[string]bool{
		"tcp":                          false,
		"host 10.0.0.1 and not port 1": false,
		"vlan 5 or (udp and port 53)":  false,
		"after 3h ago":                 true,
		"tcp or before 3h ago":         true,
		"not (udp and after 1h ago)":   true,
		"tcp and (port 1 or (host 10.0.0.1 and before 2024-01-01T00:00:00Z))": true,
	} {
		if got := mustParse(t, q).HasTime(); got != want {
			t.Errorf("%q: HasTime() = %v, want %v", q, got, want)
		}
	}
	for _, k := range []string{"t4", "u4", "i4", "arp", "zero"} {
		if v := mustParse(t, "tcp or not port 53").MatchFlow(key(t, k)); v == ByTime {
			t.Errorf("%s: a query without time answered ByTime", k)
		}
	}
}

func TestMatchFlowDuring(t *testing.T) {
	const T = int64(1_000_000)
	q := mustParse(t, "tcp and after "+time.Unix(0, T).UTC().Format(time.RFC3339Nano)+
		" and before "+time.Unix(0, 2*T).UTC().Format(time.RFC3339Nano))
	tests := []struct {
		first, last int64
		want        Verdict
	}{
		{T, 2*T - 1, Yes},
		{T - 1, 2*T - 1, ByTime},
		{T, 2 * T, ByTime},
		{0, T - 1, No},
		{2 * T, 3 * T, No},
		{math.MinInt64, math.MaxInt64, ByTime},
	}
	for _, tt := range tests {
		if got := q.MatchFlowDuring(key(t, "t4"), tt.first, tt.last); got != tt.want {
			t.Errorf("[%d, %d]: got %v, want %v", tt.first, tt.last, got, tt.want)
		}
		if got := q.MatchFlowDuring(key(t, "u4"), tt.first, tt.last); got != No {
			t.Errorf("udp [%d, %d]: got %v, want no", tt.first, tt.last, got)
		}
	}
}

func TestTimeRange(t *testing.T) {
	a := "2012-11-03T11:05:00Z"
	b := "2012-11-03T12:05:00Z"
	ta, tb := t0, t0+int64(time.Hour)
	const lo, hi = math.MinInt64, math.MaxInt64
	tests := []struct {
		q      string
		lo, hi int64
		only   bool
	}{
		{"tcp", lo, hi, false},
		{"after " + a, ta, hi, true},
		{"before " + a, lo, ta, true},
		{"after " + a + " and before " + b, ta, tb, true},
		{"before " + b + " and after " + a, ta, tb, true},
		{"after " + b + " and before " + a, 0, 0, true},
		{"not before " + a, ta, hi, true},
		{"not after " + a, lo, ta, true},
		{"not (after " + a + " and before " + b + ")", lo, hi, true},
		{"not (before " + a + " or after " + b + ")", ta, tb, true},
		{"before " + a + " or after " + b, lo, hi, true},
		{"tcp and after " + a, ta, hi, false},
		{"tcp or after " + a, lo, hi, false},
		{"not (tcp or before " + a + ")", ta, hi, false},
		{"after " + a + " or tcp and before " + b, lo, tb, false},
		{"not not after " + a, ta, hi, true},
		{"after 3h ago", now.Add(-3 * time.Hour).UnixNano(), hi, true},
		{"not port 80", lo, hi, false},
	}
	for _, tt := range tests {
		q := mustParse(t, tt.q)
		l, h := q.TimeRange()
		if l != tt.lo || h != tt.hi {
			t.Errorf("%q: TimeRange() = [%d, %d), want [%d, %d)", tt.q, l, h, tt.lo, tt.hi)
		}
		if got := q.TimeOnly(); got != tt.only {
			t.Errorf("%q: TimeOnly() = %v", tt.q, got)
		}
	}
}

func TestTimeBoundsHalfOpen(t *testing.T) {
	a := mustParse(t, "after 2012-11-03T11:05:00Z")
	b := mustParse(t, "before 2012-11-03T11:05:00Z")
	for _, k := range []*flow.Key{nil, key(t, "arp"), key(t, "t6")} {
		if !a.MatchPacket(k, t0) || a.MatchPacket(k, t0-1) {
			t.Errorf("after T must keep ts >= T on %v", k)
		}
		if b.MatchPacket(k, t0) || !b.MatchPacket(k, t0-1) {
			t.Errorf("before T must keep ts < T on %v", k)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	q := mustParse(t, benchQuery)
	k := key(t, "u6")
	cid := mustParse(t, "community-id "+k.CommunityID(0)+" or community-id 1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
	n := testing.AllocsPerRun(100, func() {
		cid.MatchFlow(k)
		cid.MatchPacket(k, t0)
		q.MatchFlow(k)
		q.MatchFlowDuring(k, t0, t0+1)
		q.MatchPacket(k, t0)
		q.MatchPacket(nil, t0)
		q.TimeRange()
	})
	if n != 0 {
		t.Errorf("%v allocations per evaluation, want 0", n)
	}
}

const benchQuery = "(net 10.0.0.0/8 or host 2001:db8::1) and not port 22 and (tcp or udp and dst port 53) and vlan 0 or after 3h ago and before 1h ago"

func BenchmarkMatchFlow(b *testing.B) {
	q := mustParse(b, benchQuery)
	ks := []*flow.Key{key(b, "t4"), key(b, "u6"), key(b, "arp"), key(b, "m6")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.MatchFlow(ks[i&3])
	}
}

func BenchmarkMatchPacket(b *testing.B) {
	q := mustParse(b, benchQuery)
	ks := []*flow.Key{key(b, "t4"), key(b, "u6"), key(b, "arp"), key(b, "m6")}
	ts := now.Add(-2 * time.Hour).UnixNano()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.MatchPacket(ks[i&3], ts+int64(i))
	}
}

func BenchmarkMatchPacketSimple(b *testing.B) {
	q := mustParse(b, "host 10.0.0.1 and port 80")
	k := key(b, "t4")
	b.ReportAllocs()
	for b.Loop() {
		q.MatchPacket(k, t0)
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(benchQuery, now); err != nil {
			b.Fatal(err)
		}
	}
}

// The seed given to ParseWith is the one community-id hashes keys with.
func TestCommunityIDSeed(t *testing.T) {
	k := flow.Key{Flags: flow.FlagIPv4 | flow.FlagPorts, Proto: flow.ProtoTCP, SrcPort: 80, DstPort: 1234}
	copy(k.Src[:], []byte{127, 0, 0, 1})
	copy(k.Dst[:], []byte{10, 0, 0, 1})
	for _, seed := range []uint16{0, 1, 0xffff} {
		text := "community-id " + k.CommunityID(seed)
		q, err := ParseWith(text, now, Options{CommunityIDSeed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if q.MatchFlow(&k) != Yes || !q.MatchPacket(&k, 0) {
			t.Errorf("seed %d: %q does not match its own key", seed, text)
		}
		other, err := ParseWith(text, now, Options{CommunityIDSeed: seed + 1})
		if err != nil {
			t.Fatal(err)
		}
		if other.MatchFlow(&k) != No {
			t.Errorf("seed %d: %q matches with seed %d", seed, text, seed+1)
		}
	}
}
