package ipfix

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
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
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	var clk clock
	var ix indexes
	t0 := time.Unix(1_800_000_000, 0)
	clk.set(t0)
	x := testExporter(b, []string{"udp://" + pc.LocalAddr().String()}, &clk, &ix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.startSenders(ctx)
	bld := index.NewBuilder(flows * 64)
	ix.set(LiveIndex{Iface: "eth9", Index: bld})
	es := make([]index.Entry, flows)
	for i := range es {
		k := v4Key(flow.ProtoTCP, 1024, 443, flow.FlagPorts)
		binary.BigEndian.PutUint32(k.Src[:4], uint32(i))
		es[i] = index.Entry{Key: k, WireLen: 100, TCPFlags: flow.TCPAck}
	}
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
// second at the default ScanInterval.
func BenchmarkScanActive(b *testing.B) {
	const flows = 65536
	var clk clock
	var ix indexes
	t0 := time.Unix(1_800_000_000, 0)
	x := testExporter(b, []string{"udp://127.0.0.1:9"}, &clk, &ix)
	bld := index.NewBuilder(flows * 64)
	ix.set(LiveIndex{Iface: "eth9", Index: bld})
	es := make([]index.Entry, flows)
	for i := range es {
		k := v4Key(flow.ProtoUDP, 1024, 53, flow.FlagPorts)
		binary.BigEndian.PutUint32(k.Src[:4], uint32(i))
		es[i] = index.Entry{Key: k, WireLen: 100}
	}
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
