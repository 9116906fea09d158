package ipfix

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/spool"
)

// BenchmarkEncode is the encoder alone: one TCP record with its Community
// ID (a SHA-1) and URL, into UDP-sized messages.
func BenchmarkEncode(b *testing.B) {
	e := NewEncoder(1, DefaultEnterpriseNumber, 0, "https://sensor.example:1234", udpMessageBytes)
	r := Record{Key: tcpKey(), Start: 1, End: 2, Packets: 10, Bytes: 1000, TCPFlags: 0x12}
	e.Begin(0, 0)
	b.ReportAllocs()
	for b.Loop() {
		if e.Add(&r) != nil {
			e.Finish()
			e.Begin(0, 0)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkExport is the whole exporter: each round adds a packet to each
// of 4,096 flows of a live index, scans it, expires every flow (idle) and
// sends the records over loopback UDP to a sink that reads and discards
// them. records/s counts the records sent; dropped/op those the queue had
// no room for (the sender fell behind).
func BenchmarkExport(b *testing.B) {
	const flows = 4096
	sink := discardSink(b)
	var clk clock
	var ix indexes
	t0 := time.Unix(1_800_000_000, 0)
	clk.set(t0)
	x := testExporter(b, []string{"udp://" + sink}, &clk, &ix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.startSenders(ctx)
	bld := index.NewBuilder(flows * 64)
	ix.set(LiveIndex{Iface: "eth9", Index: bld})
	es := hostEntries(flows, v4Key(flow.ProtoTCP, 1024, 443, flow.FlagPorts), flow.TCPAck)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now := t0.Add(time.Duration(i) * time.Minute)
		for j := range es {
			es[j].TS, es[j].Off = now.UnixNano(), int64(i*flows+j)*100
		}
		bld.AddBatch(es)
		clk.set(now.Add(DefaultIdleTimeout + time.Second))
		x.Scan()
	}
	s := x.senders[0]
	for len(s.queue) > 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // the last message
	el := b.Elapsed().Seconds()
	c := x.Counters()[0]
	b.ReportMetric(float64(c.Records)/el, "records/s")
	b.ReportMetric(float64(c.RecordsDropped)/float64(b.N), "dropped/op")
	b.ReportMetric(float64(c.Bytes)/float64(max(c.Records, 1)), "bytes/record")
}

// BenchmarkScanActive is the scan of a sensor's steady state: 65,536 flows
// of a live index, each with a new packet at every scan, none timing out.
// ns/op is one scan; ns/flow is the export's cost per active flow and
// second at a scan interval of 1 s (Config.ScanInterval: 5 s at the
// defaults).
func BenchmarkScanActive(b *testing.B) {
	const flows = 65536
	var clk clock
	var ix indexes
	t0 := time.Unix(1_800_000_000, 0)
	x := testExporter(b, []string{"udp://127.0.0.1:9"}, &clk, &ix)
	bld := index.NewBuilder(flows * 64)
	ix.set(LiveIndex{Iface: "eth9", Index: bld})
	es := hostEntries(flows, v4Key(flow.ProtoUDP, 1024, 53, flow.FlagPorts), 0)
	var scan time.Duration
	for i := 0; b.Loop(); i++ {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		for j := range es {
			es[j].TS, es[j].Off = now.UnixNano(), int64(i*flows+j)*100
		}
		bld.AddBatch(es)
		clk.set(now)
		start := time.Now()
		x.Scan()
		scan += time.Since(start)
	}
	b.ReportMetric(float64(scan.Nanoseconds())/float64(b.N)/flows, "scan-ns/flow")
}

// BenchmarkCaptureExport is capture's work on the packets, with export at
// the default timeouts and without, in the shape of capbench's 64B
// traffic: 60-byte UDP frames of 65,536 random flows at 400,000 packets a
// second of simulated time, appended to a spool on tmpfs (the write is a
// memory copy, one file: no rotation) and flushed every 1,000 packets
// (2.5 ms) as capture does;
// with export, the exporter scans at Config.ScanInterval of the simulated
// clock and sends its records over loopback UDP to a sink that discards
// them. One op is one packet; run at least 70 s of simulated time
// (-benchtime 28000000x) so that every flow reaches its active timeout.
//
// cpu-ns/packet is the process's CPU time (every thread: the spool's
// sealing, the garbage collector, the sender) per packet. The pairs of
// runs differ by more than export costs (the spool's fresh tmpfs pages
// cost what the host takes to hand them over), so with export the
// benchmark also measures the export's own CPU time: the process's from
// the start of each scan until the sender has sent its records, with
// capture paused (the sink's receiving included) and no garbage collection
// running (both runs collect fully at each scan time, outside it), as
// export-cpu-ns/packet, and export-% is that in percent of the rest.
func BenchmarkCaptureExport(b *testing.B) {
	for _, export := range []bool{false, true} {
		b.Run(fmt.Sprintf("export=%v", export), func(b *testing.B) { benchmarkCaptureExport(b, export) })
	}
}

func benchmarkCaptureExport(b *testing.B, export bool) {
	const (
		flows = 65536
		rate  = 400_000 // packets a second
		flush = 1000
	)
	dir, err := os.MkdirTemp("/dev/shm", "stenod-bench-")
	if err != nil {
		b.Skip(err)
	}
	defer os.RemoveAll(dir)
	scfg := spool.DefaultConfig()
	scfg.Dirs, scfg.TCPFlags = []string{dir}, export
	// One file: a rotation would seal an index in the background, a
	// second or two of CPU time that would fall into whatever scan runs
	// meanwhile.
	scfg.RotateSize = 16 << 30
	sp, err := spool.Open(scfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	w, err := sp.NewWriter("eth9-q0", "eth9")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()

	// Each packet's key is made from a template, in the cache, as capture
	// parses it from the frame: reading it from a table of 65,536 keys
	// instead was a cache miss per packet, a third of the benchmark.
	tmpl := v4Key(flow.ProtoUDP, 0, 53, flow.FlagPorts)
	rng := rand.New(rand.NewPCG(3, 4))
	order := make([]uint16, 1<<20)
	for i := range order {
		order[i] = uint16(rng.IntN(flows))
	}
	frame := make([]byte, 60)

	var clk clock
	t0 := time.Unix(1_800_000_000, 0)
	clk.set(t0)
	var x *Exporter
	cfg := DefaultConfig()
	nextScan := t0.Add(cfg.ScanInterval()).UnixNano()
	if export {
		cfg.Collectors = []string{"udp://" + discardSink(b)}
		x, err = New(cfg, Options{Indexes: SpoolIndexes(sp), Now: clk.now, IfIndex: func(string) uint32 { return 9 }})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		x.startSenders(ctx)
	}
	// scan runs a scan and waits until the sender has handed every
	// record to the socket (or dropped it), and returns the process's
	// CPU time meanwhile.
	scan := func() time.Duration {
		// No collection starts in the window: one that the exporter's
		// allocations triggered would mark the whole heap, capture's
		// live index included, on another thread meanwhile, and charge
		// it all to the export (measured: about half of the window's
		// time). The caller has finished the last one.
		defer debug.SetGCPercent(debug.SetGCPercent(-1))
		t := processCPU(b)
		x.Scan()
		for {
			c := x.Counters()[0]
			if c.Records+c.RecordsDropped >= x.emitted {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return processCPU(b) - t
	}
	var exportCPU time.Duration
	b.ReportAllocs()
	cpu0 := processCPU(b)
	ts := t0.UnixNano()
	i := 0
	for b.Loop() {
		k := tmpl
		f := order[i&(len(order)-1)]
		k.SrcPort = f
		binary.BigEndian.PutUint32(k.Src[:4], 0x0a000000|uint32(f)*2654435761>>16)
		if err := w.Append(ts, len(frame), frame, &k); err != nil {
			b.Fatal(err)
		}
		i++
		ts += int64(time.Second / rate)
		if i%flush == 0 {
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			if ts >= nextScan {
				// A full collection at every scan, with export or
				// without, so that both runs pay the same.
				runtime.GC()
				if x != nil {
					clk.set(time.Unix(0, ts))
					exportCPU += scan()
				}
				nextScan += int64(cfg.ScanInterval())
			}
		}
	}
	cpu := processCPU(b) - cpu0
	n := float64(b.N)
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/packet")
	if x != nil {
		b.ReportMetric(float64(exportCPU.Nanoseconds())/n, "export-cpu-ns/packet")
		b.ReportMetric(100*float64(exportCPU)/float64(cpu-exportCPU), "export-%")
		b.ReportMetric(float64(x.emitted), "records")
	}
}

// processCPU is the CPU time of every thread of the process so far.
func processCPU(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// discardSink listens on a loopback UDP port until the benchmark ends,
// reading and discarding, and returns its address.
func discardSink(b *testing.B) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// hostEntries returns n index entries of 100 wire bytes, one per flow:
// tmpl from n source addresses (its first four bytes numbered 0 to n-1),
// with TCP flags tcpFlags.
func hostEntries(n int, tmpl flow.Key, tcpFlags uint8) []index.Entry {
	es := make([]index.Entry, n)
	for i := range es {
		k := tmpl
		binary.BigEndian.PutUint32(k.Src[:4], uint32(i))
		es[i] = index.Entry{Key: k, WireLen: 100, TCPFlags: tcpFlags}
	}
	return es
}
