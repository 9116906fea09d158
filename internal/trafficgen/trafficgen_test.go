package trafficgen_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stenod/stenod/internal/testkit/testutil"
	. "github.com/stenod/stenod/internal/trafficgen"
)

// TestFramesDecode: every generated frame decodes with gopacket down to its
// transport layer (and DNS for UDP) without a decoding failure, its lengths
// are its size, and its IPv4, TCP, UDP and ICMP checksums verify.
func TestFramesDecode(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		g := New(seed, 500)
		seen := map[gopacket.LayerType]int{}
		for i := range 20_000 {
			frame, _ := g.Next()
			if err := checkFrame(frame, seen); err != "" {
				t.Fatalf("seed %d frame %d (%d bytes): %s\n% x", seed, i, len(frame), err, frame)
			}
		}
		for _, lt := range []gopacket.LayerType{layers.LayerTypeIPv4, layers.LayerTypeIPv6, layers.LayerTypeTCP,
			layers.LayerTypeUDP, layers.LayerTypeDNS, layers.LayerTypeICMPv4, layers.LayerTypeICMPv6} {
			if seen[lt] == 0 {
				t.Errorf("seed %d: no %v frame in 20000", seed, lt)
			}
		}
	}
}

func checkFrame(frame []byte, seen map[gopacket.LayerType]int) string {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	if el := p.ErrorLayer(); el != nil {
		return "decode: " + el.Error().Error()
	}
	for _, l := range p.Layers() {
		seen[l.LayerType()]++
	}
	var pseudo []byte // the transport checksum's pseudo-header addresses
	var l4 []byte
	var proto uint8
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		if int(ip.Length) != len(frame)-14 || ip.IHL != 5 {
			return "IPv4 length or IHL"
		}
		if sum(0, frame[14:34]) != 0xffff {
			return "IPv4 header checksum"
		}
		pseudo, l4, proto = frame[26:34], frame[34:], uint8(ip.Protocol)
	case *layers.IPv6:
		if int(ip.Length) != len(frame)-54 {
			return "IPv6 payload length"
		}
		pseudo, l4, proto = frame[22:54], frame[54:], uint8(ip.NextHeader)
	default:
		return "no IP layer"
	}
	s := sum(0, pseudo) + uint32(proto) + uint32(len(l4))
	if proto == 1 {
		s = 0
	}
	if sum(s, l4) != 0xffff {
		return "transport checksum"
	}
	switch tl := p.TransportLayer().(type) {
	case *layers.TCP:
		if tl.DataOffset != 5 || len(tl.Payload) == 0 || !tl.ACK {
			return "TCP data offset, payload or flags"
		}
		// gopacket's own sum agrees.
		if err := tl.SetNetworkLayerForChecksum(p.NetworkLayer()); err != nil {
			return err.Error()
		}
		// Over the segment with its checksum in place: 0 when it verifies.
		if c, err := tl.ComputeChecksum(); err != nil || c != 0 {
			return "gopacket: TCP checksum"
		}
	case *layers.UDP:
		if int(tl.Length) != len(l4) || tl.Checksum == 0 {
			return "UDP length or checksum"
		}
		dns, _ := p.Layer(layers.LayerTypeDNS).(*layers.DNS)
		if dns == nil || len(dns.Questions) != 1 || string(dns.Questions[0].Name) != "example.org" {
			return "no DNS query for example.org"
		}
	case nil:
		if p.Layer(layers.LayerTypeICMPv4) == nil && p.Layer(layers.LayerTypeICMPv6) == nil {
			return "no transport layer"
		}
	}
	return ""
}

// sum is the ones' complement sum of b added to s, folded to 16 bits.
func sum(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s
}

// TestWireshark: tshark's expert analysis finds nothing wrong with the
// generated traffic: no malformed packet, no error, warning or note.
func TestWireshark(t *testing.T) {
	testutil.RequireCommand(t, "tshark")
	var b bytes.Buffer
	if err := WritePcap(&b, 1, 20_000); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gen.pcap")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := testutil.WiresharkProblems(t, path); p != "" {
		t.Errorf("tshark -z expert:\n%s", p)
	}
}

// TestNextAllocates nothing.
func TestNextAllocates(t *testing.T) {
	g := New(1, 500)
	if n := testing.AllocsPerRun(10_000, func() { g.Next() }); n != 0 {
		t.Errorf("Next allocates %v times per packet", n)
	}
}
