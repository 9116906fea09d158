package spool

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stenod/stenod/internal/trafficgen"
	"github.com/stenod/stenod/pcapio"
)

// genPcap returns a spool pcap file of about size bytes of generated
// traffic, and its first packet's time.
func genPcap(size int) ([]byte, int64) {
	g := trafficgen.New(1, 1000)
	data := pcapio.AppendPcapHeader(nil, 65535, pcapio.LinkTypeEthernet)
	var first int64
	for len(data) < size {
		frame, ts := g.Next()
		if first == 0 {
			first = ts
		}
		data = pcapio.AppendRecord(data, ts, len(frame), frame)
	}
	return data, first
}

// BenchmarkScanRecords is the repair's read of an intact file (what
// start-up does for every file a crash left without an index).
func BenchmarkScanRecords(b *testing.B) {
	data, first := genPcap(64 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := scanRecords(bytes.NewReader(data), int64(len(data)), first, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResyncGarbage is the byte-by-byte search over 16 MiB of random
// bytes in the middle of a file: the worst case of damage.
func BenchmarkResyncGarbage(b *testing.B) {
	data, first := genPcap(32 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 8 << 20; i < 24<<20; i++ {
		data[i] = byte(rng.Uint32())
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		res, err := scanRecords(bytes.NewReader(data), int64(len(data)), first, nil)
		if err != nil || len(res.regions) != 1 {
			b.Fatalf("%v, %d regions", err, len(res.regions))
		}
	}
}
