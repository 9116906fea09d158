package flow

import (
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// tcp20 is a 20-byte TCP header, ports 1234 > 80, with flags.
func tcp20(flags uint8) []byte {
	h := l4(20)
	h[12], h[13] = 0x50, flags
	return h
}

func TestTCPFlags(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint8
	}{
		{"ipv4", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil), tcp20(TCPSyn)), TCPSyn},
		{"ipv4 options", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, make([]byte, 8)), tcp20(TCPAck|TCPPsh)), TCPAck | TCPPsh},
		{"two tags", cat(ethHdr(EtherTypeQinQ), tag(10, EtherTypeVLAN), tag(20, EtherTypeIPv4), ip4(ProtoTCP, 0, nil), tcp20(TCPFin|TCPAck)), TCPFin | TCPAck},
		{"mpls", cat(ethHdr(EtherTypeMPLS), label(17, false), label(18, true), ip4(ProtoTCP, 0, nil), tcp20(TCPRst)), TCPRst},
		{"ipv6", cat(ethHdr(EtherTypeIPv6), ip6(ProtoTCP), tcp20(TCPSyn|TCPAck|TCPEce|TCPCwr)), TCPSyn | TCPAck | TCPEce | TCPCwr},
		{"ipv6 ext", cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(protoAH, 1), ah6(protoFragment, 1), frag6(ProtoTCP, 0, true), tcp20(TCPUrg)), TCPUrg},
		{"cut before flags", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil), tcp20(TCPSyn)[:13]), 0},
		{"udp", cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), tcp20(TCPSyn)), 0},
		{"later fragment", cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 100, nil), tcp20(TCPSyn)), 0},
	} {
		var k Key
		Parse(c.frame, &k)
		if got := TCPFlags(c.frame, &k); got != c.want {
			t.Errorf("%s: got %#02x, want %#02x", c.name, got, c.want)
		}
	}
}

// TestTCPFlagsCaptures compares TCPFlags with gopacket's TCP layer on
// every TCP packet of the test captures whose ports both parsers found.
func TestTCPFlagsCaptures(t *testing.T) {
	var n, seen int
	var union uint8
	for _, c := range testpcaps.Ethernet(t, "") {
		for i, p := range c.Packets {
			var k Key
			Parse(p.Data, &k)
			got := TCPFlags(p.Data, &k)
			pkt := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default)
			tl, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tl == nil || k.Proto != ProtoTCP || k.Flags&FlagPorts == 0 || uint16(tl.SrcPort) != k.SrcPort || len(tl.Contents) < 14 {
				continue
			}
			n++
			if got != 0 {
				seen++
			}
			union |= got
			if want := gopacketFlags(tl); got != want {
				t.Errorf("%s packet %d: flags %#02x, gopacket %#02x", c.Path, i+1, got, want)
			}
		}
	}
	if n < 100 || union&(TCPSyn|TCPFin|TCPAck|TCPRst|TCPPsh) != TCPSyn|TCPFin|TCPAck|TCPRst|TCPPsh {
		t.Errorf("only %d TCP packets (flags seen %#02x): the captures changed?", n, union)
	}
	t.Logf("%d TCP packets compared, %d with flags; union %#02x", n, seen, union)
}

func gopacketFlags(t *layers.TCP) uint8 {
	var f uint8
	for _, b := range []struct {
		on  bool
		bit uint8
	}{{t.FIN, TCPFin}, {t.SYN, TCPSyn}, {t.RST, TCPRst}, {t.PSH, TCPPsh}, {t.ACK, TCPAck}, {t.URG, TCPUrg}, {t.ECE, TCPEce}, {t.CWR, TCPCwr}} {
		if b.on {
			f |= b.bit
		}
	}
	return f
}

func TestTCPFlagsDoesNotAllocate(t *testing.T) {
	frame := cat(ethHdr(EtherTypeIPv6), ip6(protoHopByHop), ext6(ProtoTCP, 0), tcp20(TCPSyn))
	var k Key
	Parse(frame, &k)
	if a := testing.AllocsPerRun(100, func() { TCPFlags(frame, &k) }); a != 0 {
		t.Errorf("TCPFlags allocates %v times", a)
	}
}

func BenchmarkTCPFlags(b *testing.B) {
	frame := cat(ethHdr(EtherTypeIPv4), ip4(ProtoTCP, 0, nil), tcp20(TCPAck), make([]byte, 10))
	var k Key
	Parse(frame, &k)
	b.ReportAllocs()
	var sink uint8
	for b.Loop() {
		sink |= TCPFlags(frame, &k)
	}
	_ = sink
}
