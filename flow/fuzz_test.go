package flow

import (
	"encoding/binary"
	"testing"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// FuzzParse checks that Parse survives any input, that the key it returns is
// self-consistent, and that it agrees with the gopacket-based reference.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases(f) {
		f.Add(c.frame)
	}
	seen := map[string]bool{}
	for _, c := range testpcaps.Ethernet(f, "") {
		for _, p := range c.Packets {
			// The parser reads at most a few hundred bytes; longer seeds only
			// slow the fuzzer down.
			d := p.Data[:min(len(p.Data), 256)]
			if !seen[string(d)] {
				seen[string(d)] = true
				f.Add(d)
			}
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		k := Key{Src: v6a, Dst: v6b, SrcPort: 1, DstPort: 2, VLAN: [2]uint16{3, 4}, MPLS: 5, EtherType: 6, Proto: 7, Flags: 0xff}
		Parse(frame, &k)
		if err := checkKey(frame, &k); err != "" {
			t.Fatalf("Parse(%x) = %v: %s", frame, k, err)
		}
		ref, paths, rerr := refKey(frame)
		if rerr != nil {
			t.Fatalf("reference(%x): %v", frame, rerr)
		}
		if d := keyDiff(ref, k); d != "" {
			t.Fatalf("Parse(%x) (reference paths %v):\n got %v\nwant %v\n%s", frame, paths, k, ref, d)
		}
	})
}

// checkKey returns which invariant of docs/flow-key.md k breaks, or "".
func checkKey(frame []byte, k *Key) string {
	isIP := k.Flags&(FlagIPv4|FlagIPv6) != 0
	switch {
	case len(frame) < 14 && *k != Key{}:
		return "runt with a non-zero key"
	case len(frame) < 14:
		return ""
	case k.Flags&FlagIPv4 != 0 && k.Flags&FlagIPv6 != 0:
		return "both IPv4 and IPv6"
	case !isIP && (k.Src != [16]byte{} || k.Dst != [16]byte{}):
		return "addresses without IP"
	case !isIP && k.Proto != 0:
		return "proto without IP"
	case !isIP && k.Flags&(FlagPorts|FlagFragment|FlagICMP) != 0:
		return "ports or fragment without IP"
	case k.Flags&FlagIPv4 != 0 && ([12]byte(k.Src[4:]) != [12]byte{} || [12]byte(k.Dst[4:]) != [12]byte{}):
		return "IPv4 address beyond 4 bytes"
	case k.Flags&FlagPorts != 0 && k.Flags&FlagICMP != 0:
		return "ports and ICMP type"
	case k.Flags&FlagICMP != 0 && (k.Proto != ProtoICMP && k.Proto != ProtoICMPv6 || k.SrcPort > 0xff || k.DstPort > 0xff):
		return "ICMP type and code on a packet that is not ICMP"
	case k.Flags&(FlagPorts|FlagICMP) == 0 && (k.SrcPort != 0 || k.DstPort != 0):
		return "ports without PORTS"
	case k.Flags&FlagPorts != 0 && k.Proto != ProtoTCP && k.Proto != ProtoUDP && k.Proto != ProtoSCTP:
		return "PORTS for a protocol without ports"
	case k.Flags&FlagVLAN0 == 0 && k.VLAN[0] != 0, k.Flags&FlagVLAN1 == 0 && k.VLAN[1] != 0:
		return "VID without its flag"
	case k.Flags&FlagVLAN1 != 0 && k.Flags&FlagVLAN0 == 0:
		return "inner tag without outer"
	case k.VLAN[0] > 0xfff || k.VLAN[1] > 0xfff:
		return "VID wider than 12 bits"
	case k.Flags&FlagVLAN0 == 0 && k.EtherType != binary.BigEndian.Uint16(frame[12:]):
		return "EtherType is not the frame's"
	case k.Flags&FlagMPLS == 0 && k.MPLS != 0:
		return "label without MPLS"
	case k.MPLS >= 1<<20:
		return "label wider than 20 bits"
	case k.Flags&FlagMPLS != 0 && k.EtherType != EtherTypeMPLS && k.EtherType != EtherTypeMPLSMcast:
		return "MPLS flag on a non-MPLS EtherType"
	case k.Flags&FlagMPLS == 0 && k.Flags&FlagIPv4 != 0 && k.EtherType != EtherTypeIPv4:
		return "IPv4 on another EtherType"
	case k.Flags&FlagMPLS == 0 && k.Flags&FlagIPv6 != 0 && k.EtherType != EtherTypeIPv6:
		return "IPv6 on another EtherType"
	}
	return ""
}
