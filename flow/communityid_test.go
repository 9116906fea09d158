package flow_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// vector is one line of the specification's baseline files.
type vector struct {
	Proto       uint8  `json:"proto"`
	Saddr       string `json:"saddr"`
	Daddr       string `json:"daddr"`
	Sport       uint16 `json:"sport"`
	Dport       uint16 `json:"dport"`
	CommunityID string `json:"communityid"`
}

func communityIDDir() string {
	return filepath.Join(testpcaps.RepoRoot(), "testdata", "community-id")
}

func readVectors(t *testing.T, name string) []vector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(communityIDDir(), "baseline", name))
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(vs) == 0 {
		t.Fatalf("%s: no vectors", name)
	}
	return vs
}

// keyOf builds the key a packet of the vector's tuple parses to. The
// baseline writes ICMP tuples after the type-to-port mapping (the
// counterpart type in dport); applying the mapping again changes nothing.
func keyOf(t *testing.T, v vector) flow.Key {
	t.Helper()
	s, d := netip.MustParseAddr(v.Saddr), netip.MustParseAddr(v.Daddr)
	k := flow.Key{Proto: v.Proto, SrcPort: v.Sport, DstPort: v.Dport}
	if s.Is4() {
		k.Flags = flow.FlagIPv4
		a, b := s.As4(), d.As4()
		copy(k.Src[:], a[:])
		copy(k.Dst[:], b[:])
	} else {
		k.Flags = flow.FlagIPv6
		k.Src, k.Dst = s.As16(), d.As16()
	}
	switch v.Proto {
	case flow.ProtoTCP, flow.ProtoUDP, flow.ProtoSCTP:
		k.Flags |= flow.FlagPorts
	case flow.ProtoICMP, flow.ProtoICMPv6:
		k.Flags |= flow.FlagICMP
	default:
		k.SrcPort, k.DstPort = 0, 0
	}
	return k
}

func TestCommunityIDVectors(t *testing.T) {
	for _, tc := range []struct {
		file string
		seed uint16
		hex  bool
	}{
		{"baseline_deflt.json", 0, false},
		{"baseline_seed1.json", 1, false},
		{"baseline_nob64.json", 0, true},
	} {
		for i, v := range readVectors(t, tc.file) {
			k := keyOf(t, v)
			got := k.CommunityID(tc.seed)
			if tc.hex {
				sum, ok := flow.CommunityIDHash(&k, tc.seed)
				if !ok {
					t.Fatalf("%s #%d: no id", tc.file, i)
				}
				got = flow.CommunityIDPrefix + hex.EncodeToString(sum[:])
			}
			if got != v.CommunityID {
				t.Errorf("%s #%d %+v: got %s", tc.file, i, v, got)
			}
			// Both spellings decode to the digest the key hashes to.
			want, err := flow.ParseCommunityID(v.CommunityID)
			if err != nil {
				t.Fatalf("%s #%d: %v", tc.file, i, err)
			}
			if sum, _ := flow.CommunityIDHash(&k, tc.seed); sum != want {
				t.Errorf("%s #%d: ParseCommunityID disagrees with the hash", tc.file, i)
			}
		}
	}
}

// Every packet of the specification's captures gets the ID the baseline
// gives its tuple, through flow.Parse: so the key keeps what the ID needs
// (ICMP type and code included), and every baseline line is some packet's.
func TestCommunityIDCaptures(t *testing.T) {
	for _, tc := range []struct {
		file string
		seed uint16
	}{{"baseline_deflt.json", 0}, {"baseline_seed1.json", 1}} {
		want := map[string]bool{}
		for _, v := range readVectors(t, tc.file) {
			want[v.CommunityID] = false
		}
		paths, err := filepath.Glob(filepath.Join(communityIDDir(), "pcaps", "*.pcap"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("captures: %v %v", paths, err)
		}
		for _, path := range paths {
			c, err := testpcaps.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range c.Packets {
				var k flow.Key
				flow.Parse(p.Data, &k)
				id := k.CommunityID(tc.seed)
				where := fmt.Sprintf("%s packet %d (%v)", filepath.Base(path), i+1, k)
				if !k.IsIP() {
					if id != "" {
						t.Errorf("%s: id %s for a frame that is not IP", where, id)
					}
					continue
				}
				if _, ok := want[id]; !ok {
					t.Errorf("%s seed %d: id %q is not in the baseline", where, tc.seed, id)
					continue
				}
				want[id] = true
			}
		}
		for id, seen := range want {
			if !seen {
				t.Errorf("%s: no packet of the captures gets %s", tc.file, id)
			}
		}
	}
}

func TestCommunityIDUndefined(t *testing.T) {
	var k flow.Key
	k.Flags = flow.FlagIPv4 | flow.FlagFragment
	k.Proto = flow.ProtoTCP // a non-first fragment: no ports
	if id := k.CommunityID(0); id != "" {
		t.Errorf("non-first fragment: %q, want none", id)
	}
	k.Proto = 50 // ESP: addresses and protocol only
	if id := k.CommunityID(0); !strings.HasPrefix(id, "1:") {
		t.Errorf("ESP: %q", id)
	}
}

func TestParseCommunityIDErrors(t *testing.T) {
	for _, s := range []string{"", "1:", "2:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:dGHyGvjMfljg6Bppwm3bg0LO8T", "1:!!!", "dGHyGvjMfljg6Bppwm3bg0LO8TY="} {
		if _, err := flow.ParseCommunityID(s); err == nil {
			t.Errorf("ParseCommunityID(%q): no error", s)
		}
	}
}

func BenchmarkCommunityIDHash(b *testing.B) {
	k := flow.Key{Flags: flow.FlagIPv4 | flow.FlagPorts, Proto: flow.ProtoTCP, SrcPort: 443, DstPort: 50000}
	copy(k.Src[:], []byte{10, 0, 0, 2})
	copy(k.Dst[:], []byte{10, 0, 0, 1})
	b.ReportAllocs()
	for b.Loop() {
		flow.CommunityIDHash(&k, 0)
	}
}
