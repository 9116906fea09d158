package ipfix

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
)

// unhex reads hex with spaces, newlines and "|" comments-free separators.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		b.WriteString(strings.NewReplacer(" ", "", "\t", "", "|", "").Replace(line))
	}
	out, err := hex.DecodeString(b.String())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tcpKey() flow.Key {
	k := flow.Key{EtherType: flow.EtherTypeIPv4, Proto: flow.ProtoTCP, Flags: flow.FlagIPv4 | flow.FlagPorts | flow.FlagVLAN0 | flow.FlagVLAN1 | flow.FlagMPLS,
		SrcPort: 49152, DstPort: 443, VLAN: [2]uint16{100, 7}, MPLS: 17}
	copy(k.Src[:], []byte{192, 0, 2, 1})
	copy(k.Dst[:], []byte{198, 51, 100, 2})
	return k
}

// TestEncodeMessage checks a whole message byte for byte, built by hand
// from RFC 7011's layouts (§3.1 header, §3.3 sets, §3.4.1 template
// records, §3.2 enterprise field specifiers, §7 variable length).
func TestEncodeMessage(t *testing.T) {
	e := NewEncoder(42, 32473, 0, "https://s1:8443", 1400)
	e.Begin(1700000000, 7)
	e.Templates()
	start := time.Date(2023, 11, 14, 22, 13, 20, 500_000_000, time.UTC).UnixNano() // 1700000000.5
	r := Record{Key: tcpKey(), Start: start, End: start + 1_250_000, Packets: 3, Bytes: 180, CutPackets: 2, CutBytes: 3000,
		TCPFlags: flow.TCPSyn | flow.TCPAck, Ingress: 5, EndReason: EndIdle}
	if err := e.Add(&r); err != nil {
		t.Fatal(err)
	}
	cid := r.Key.CommunityID(0)
	if len(cid) != 30 {
		t.Fatalf("community id %q", cid)
	}
	fields := func(addrSrc, addrDst, addrLen, l4 string) string {
		return `
		0098 0008  0099 0008  009c 0008  009d 0008  # flowStart/EndMilliseconds, flowStart/EndNanoseconds
		0002 0008  0001 0008                        # packetDeltaCount, octetDeltaCount
		` + addrSrc + ` ` + addrLen + ` ` + addrDst + ` ` + addrLen + `
		` + l4 + `                                  # ports, or icmpTypeCode
		0004 0001  0006 0002                        # protocol, tcpControlBits
		003a 0002  00f5 0002  0046 0003             # vlanId, dot1qCustomerVlanId, mplsTopLabelStackSection
		000a 0004  0088 0001                        # ingressInterface, flowEndReason
		8003 0008 00007ed9  8004 0008 00007ed9      # enterprise 32473: 3 cut packets, 4 cut octets
		8001 ffff 00007ed9  8002 ffff 00007ed9      # 1 community id, 2 sensor URL`
	}
	want := unhex(t, `
		000a 0000 6553f100 00000007 0000002a        # version, length (below), export time, sequence, domain
		0002 019c                                   # template set, 412 bytes
		0100 0015`+fields("0008", "000c", "0004", "0007 0002 000b 0002")+`
		0101 0015`+fields("001b", "001c", "0010", "0007 0002 000b 0002")+`
		0102 0014`+fields("0008", "000c", "0004", "0020 0002")+`
		0103 0014`+fields("001b", "001c", "0010", "008b 0002")+`
		0100 0000                                   # data set 256, length below
		0000018bcfe569f4 0000018bcfe569f5           # milliseconds
		`+hex.EncodeToString(be64(0xe8fe6f80_80000000))+`      # start: NTP seconds 1700000000+2208988800 (0xe8fe6f80), fraction 0.5
		`+hex.EncodeToString(be64(0xe8fe6f80_8051eb86))+`      # end: +1.25 ms (rounded up)
		0000000000000005 0000000000000c6c           # packets, bytes: stored and cut
		c0000201 c6336402 c000 01bb 06 0012         # addresses, ports, proto, flags
		0064 0007 000110 00000005 01                # vlans, mpls label 17 << 4, ingress, reason
		0000000000000002 0000000000000bb8           # cut packets, cut bytes
		1e`+hex.EncodeToString([]byte(cid))+`
		0f`+hex.EncodeToString([]byte("https://s1:8443")))
	setLen := len(want) - 16 - 412
	want[16+412+2], want[16+412+3] = byte(setLen>>8), byte(setLen)
	want[2], want[3] = byte(len(want)>>8), byte(len(want))
	got := e.Finish()
	if !bytes.Equal(got, want) {
		t.Errorf("message differs\n got %x\nwant %x", got, want)
	}
	if e.Records() != 1 {
		t.Errorf("Records %d", e.Records())
	}
}

func be64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func TestNTPTime(t *testing.T) {
	// RFC 7011 §6.1.10: seconds since 1900-01-01, fraction in 2^-32 s.
	for _, c := range []struct {
		t    int64
		want uint64
	}{
		{0, 2208988800 << 32},
		{1_500_000_000, 2208988801<<32 | 1<<31},
		{999_999_999, 2208988800<<32 | 0xfffffffc},
	} {
		if got := ntpTime(c.t); got != c.want {
			t.Errorf("ntpTime(%d) = %#x, want %#x", c.t, got, c.want)
		}
	}
}

func TestEncodeFull(t *testing.T) {
	e := NewEncoder(1, 32473, 0, "", 512)
	e.Begin(0, 0)
	r := Record{Key: tcpKey()}
	n := 0
	for e.Add(&r) == nil {
		n++
	}
	msg := e.Finish()
	if len(msg) > 512 || n != (512-16-4)/(75+31+1) {
		t.Errorf("%d records in %d bytes", n, len(msg))
	}
	// A record of another template starts a new set.
	e = NewEncoder(1, 32473, 0, "", 1400)
	e.Begin(0, 0)
	r6 := Record{Key: flow.Key{EtherType: flow.EtherTypeIPv6, Proto: flow.ProtoUDP, Flags: flow.FlagIPv6 | flow.FlagPorts}}
	ri := Record{Key: flow.Key{EtherType: flow.EtherTypeIPv4, Proto: flow.ProtoICMP, Flags: flow.FlagIPv4 | flow.FlagICMP}}
	for _, rr := range []*Record{&r, &r6, &r6, &r, &ri, &ri} {
		if err := e.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	msg = e.Finish()
	sets := 0
	for off := 16; off < len(msg); {
		sets++
		off += int(msg[off+2])<<8 | int(msg[off+3])
	}
	if sets != 4 {
		t.Errorf("%d sets, want 4", sets)
	}
}

func TestAppendStringLong(t *testing.T) {
	s := strings.Repeat("x", 300)
	b := appendString(nil, s)
	if b[0] != 255 || b[1] != 1 || b[2] != 44 || len(b) != 303 {
		t.Errorf("long string header %x, length %d", b[:3], len(b))
	}
}
