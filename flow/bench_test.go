package flow

import (
	"testing"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// BenchmarkParse reports the cost per packet: over the mix of every test
// capture (many protocols, many malformed frames) and over the common case of
// a minimal UDP frame.
func BenchmarkParse(b *testing.B) {
	b.Run("captures", func(b *testing.B) {
		var frames [][]byte
		for _, c := range testpcaps.Ethernet(b, "") {
			for _, p := range c.Packets {
				frames = append(frames, p.Data)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		var k Key
		for i := 0; b.Loop(); i++ {
			if i == len(frames) {
				i = 0
			}
			Parse(frames[i], &k)
		}
	})
	b.Run("udp64", func(b *testing.B) {
		frame := cat(ethHdr(EtherTypeIPv4), ip4(ProtoUDP, 0, nil), l4(8), make([]byte, 22))
		if len(frame) != 64 {
			b.Fatalf("frame is %d bytes", len(frame))
		}
		b.ReportAllocs()
		var k Key
		for b.Loop() {
			Parse(frame, &k)
		}
	})
}

func TestParseDoesNotAllocate(t *testing.T) {
	cs := parseCases(t)
	var k Key
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range cs {
			Parse(c.frame, &k)
		}
	})
	if allocs != 0 {
		t.Errorf("Parse allocates %v times per run of the table", allocs)
	}
}
