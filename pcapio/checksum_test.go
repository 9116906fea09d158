package pcapio

import (
	"fmt"
	"hash/crc32"
	"testing"
)

// TestRecordSum: the checksum is CRC-32C of header and data, in one buffer
// or two.
func TestRecordSum(t *testing.T) {
	rec := AppendRecord(nil, 1_700_000_000_123456789, 1514, make([]byte, 100))
	want := crc32.Checksum(rec, crc32.MakeTable(crc32.Castagnoli))
	if got := RecordSum(rec); got != want {
		t.Fatalf("RecordSum %08x, want %08x", got, want)
	}
	if got := RecordSumParts(rec[:RecordHeaderSize], rec[RecordHeaderSize:]); got != want {
		t.Fatalf("RecordSumParts %08x, want %08x", got, want)
	}
	rec[40] ^= 1
	if RecordSum(rec) == want {
		t.Fatal("a flipped bit kept the checksum")
	}
}

// BenchmarkAppendRecord is what the spool writer does per packet: copy the
// record into its buffer, then (sum=true) checksum it while it is in the
// cache. The ratio of the two is the checksum's share of the copy, at the
// IMIX sizes of internal/trafficgen.
func BenchmarkAppendRecord(b *testing.B) {
	for _, size := range []int{64, 590, 1514} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i)
		}
		for _, sum := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/sum=%v", size, sum), func(b *testing.B) {
				buf := make([]byte, 0, 1<<20)
				var s uint32
				b.SetBytes(int64(RecordHeaderSize + size))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if len(buf)+RecordHeaderSize+size > cap(buf) {
						buf = buf[:0]
					}
					buf = AppendRecord(buf, int64(i), size, data)
					if sum {
						s += RecordSum(buf[len(buf)-RecordHeaderSize-size:])
					}
				}
				_ = s
			})
		}
	}
}
