package xdp

import (
	"testing"
)

// BenchmarkProgram runs the XDP program over one 60-byte UDP frame with
// BPF_PROG_TEST_RUN (no socket in the map: the redirect falls back to
// XDP_PASS after the lookup) and reports the kernel's time per run: what
// every packet costs the CPU that receives it before any capturer sees it.
// On veth that is the sender's CPU, so it shows in capbench's sender rate
// (docs/benchmarks.md). One flow only: every run sees the same frame, so
// the flow table is in the cache.
func BenchmarkProgram(b *testing.B) {
	p := testProgram(b, ProgramOptions{})
	frame := udp4Frame("192.0.2.7", "192.0.2.1", 40000, 80, 60)
	b.ResetTimer()
	_, per, err := p.XDPProgram().Benchmark(frame, b.N, nil)
	if err != nil {
		b.Fatalf("run XDP program: %v", err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "kernel-ns/packet")
}
