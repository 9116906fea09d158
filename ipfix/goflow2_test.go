package ipfix

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/netsampler/goflow2/v2/producer"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
)

// decoded is one data record as GoFlow2 decodes it, with the two
// enterprise fields GoFlow2's producer does not map.
type decoded struct {
	*protoproducer.ProtoProducerMessage
	CommunityID, URL     string
	EndReason            uint8
	CutPackets, CutBytes uint64
}

// collector decodes IPFIX messages with GoFlow2, as its IPFIX listener does.
type collector struct {
	t         *testing.T
	templates netflow.NetFlowTemplateSystem
	producer  producer.ProducerInterface
	records   []decoded
	messages  int
	templSets int
	seq       uint32 // the next sequence number expected
}

func newCollector(t *testing.T) *collector {
	// The mapping docs/fleet.md gives for the enterprise fields.
	pc := protoproducer.ProducerConfig{
		Formatter: protoproducer.FormatterConfig{
			Fields: []string{"time_flow_start_ns", "src_addr", "dst_addr", "src_port", "dst_port", "proto", "bytes", "packets", "community_id", "sensor_url"},
			Protobuf: []protoproducer.ProtobufFormatterConfig{
				{Name: "community_id", Index: 1000, Type: "string"},
				{Name: "sensor_url", Index: 1001, Type: "string"},
			},
			Render: map[string]protoproducer.RendererID{"community_id": "string", "sensor_url": "string"},
		},
		IPFIX: protoproducer.IPFIXProducerConfig{Mapping: []protoproducer.NetFlowMapField{
			{Type: 1, PenProvided: true, Pen: 32473, Destination: "community_id"},
			{Type: 2, PenProvided: true, Pen: 32473, Destination: "sensor_url"},
		}},
	}
	cfg, err := pc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	p, err := protoproducer.CreateProtoProducer(cfg, protoproducer.CreateSamplingSystem)
	if err != nil {
		t.Fatal(err)
	}
	return &collector{t: t, templates: netflow.CreateTemplateSystem(), producer: p}
}

func (c *collector) decode(msg []byte) {
	c.t.Helper()
	var nf9 netflow.NFv9Packet
	var p netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), c.templates, &nf9, &p); err != nil {
		c.t.Fatalf("goflow2 decode: %v\n%x", err, msg)
	}
	c.messages++
	if p.SequenceNumber != c.seq {
		c.t.Errorf("sequence number %d, want %d", p.SequenceNumber, c.seq)
	}
	var raw []netflow.DataRecord
	for _, fs := range p.FlowSets {
		switch fs := fs.(type) {
		case netflow.TemplateFlowSet:
			c.templSets++
		case netflow.DataFlowSet:
			raw = append(raw, fs.Records...)
		case netflow.RawFlowSet:
			c.t.Fatalf("a data set GoFlow2 has no template for: %d", fs.Id)
		}
	}
	msgs, err := c.producer.Produce(&p, &producer.ProduceArgs{SamplerAddress: netip.MustParseAddr("127.0.0.1"), TimeReceived: time.Now()})
	if err != nil {
		c.t.Fatal(err)
	}
	if len(msgs) != len(raw) {
		c.t.Fatalf("%d messages for %d records", len(msgs), len(raw))
	}
	for i, m := range msgs {
		d := decoded{ProtoProducerMessage: m.(*protoproducer.ProtoProducerMessage)}
		for _, v := range raw[i].Values {
			b, _ := v.Value.([]byte)
			switch {
			case v.PenProvided && v.Pen == DefaultEnterpriseNumber && v.Type == ElementCommunityID:
				d.CommunityID = string(b)
			case v.PenProvided && v.Pen == DefaultEnterpriseNumber && v.Type == ElementSensorURL:
				d.URL = string(b)
			case !v.PenProvided && v.Type == ieFlowEndReason:
				d.EndReason = b[0]
			case v.PenProvided && v.Pen == DefaultEnterpriseNumber && v.Type == ElementCutPacketDeltaCount:
				d.CutPackets = binary.BigEndian.Uint64(b)
			case v.PenProvided && v.Pen == DefaultEnterpriseNumber && v.Type == ElementCutOctetDeltaCount:
				d.CutBytes = binary.BigEndian.Uint64(b)
			}
		}
		// GoFlow2's JSON output, through the mapping.
		js, err := d.MarshalJSON()
		if err != nil {
			c.t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(js, &out); err != nil {
			c.t.Fatalf("goflow2 json %s: %v", js, err)
		}
		if out["community_id"] != d.CommunityID || out["sensor_url"] != d.URL {
			c.t.Errorf("goflow2 json %s: community_id and sensor_url are not %q and %q", js, d.CommunityID, d.URL)
		}
		c.records = append(c.records, d)
	}
	c.seq += uint32(len(msgs))
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// indexes is a settable list of live indexes.
type indexes struct{ list atomic.Pointer[[]LiveIndex] }

func (ix *indexes) set(l ...LiveIndex) { ix.list.Store(&l) }
func (ix *indexes) get(dst []LiveIndex) []LiveIndex {
	if l := ix.list.Load(); l != nil {
		dst = append(dst, *l...)
	}
	return dst
}

func testExporter(t testing.TB, collectors []string, clk *clock, ix *indexes) *Exporter {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Collectors, cfg.SensorID, cfg.BaseURL = collectors, 77, "https://sensor.example:8443"
	x, err := New(cfg, Options{Indexes: ix.get, Now: clk.now, IfIndex: func(name string) uint32 {
		return map[string]uint32{"eth9": 9, "eth10": 10}[name]
	}})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// keys of the test flows.
func v4Key(proto uint8, sport, dport uint16, flags flow.Flags) flow.Key {
	k := flow.Key{EtherType: flow.EtherTypeIPv4, Proto: proto, Flags: flow.FlagIPv4 | flags, SrcPort: sport, DstPort: dport}
	copy(k.Src[:], []byte{10, 1, 2, 3})
	copy(k.Dst[:], []byte{10, 9, 8, 7})
	return k
}

func v6Key() flow.Key {
	k := flow.Key{EtherType: flow.EtherTypeIPv6, Proto: flow.ProtoUDP, Flags: flow.FlagIPv6 | flow.FlagPorts, SrcPort: 5353, DstPort: 53}
	a, b := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::53").As16()
	k.Src, k.Dst = a, b
	return k
}

type pkt struct {
	k     flow.Key
	ts    time.Time
	len   int
	flags uint8
}

var offset atomic.Int64

func add(b *index.Builder, ps ...pkt) {
	es := make([]index.Entry, len(ps))
	for i, p := range ps {
		es[i] = index.Entry{Key: p.k, Off: offset.Add(100), TS: p.ts.UnixNano(), WireLen: p.len, TCPFlags: p.flags}
	}
	b.AddBatch(es)
}

// TestGoFlow2 exports flows over UDP and decodes them with GoFlow2:
// every field, the idle timeout, a flow continuing across a rotation,
// packets added after the last scan of a file that rotated, non-IP flows
// left out, sequence numbers and the observation domain, and the cutoff's
// counts, of a flow with stored packets and of one without.
func TestGoFlow2(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var clk clock
	var ix indexes
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 123_456_789, time.UTC)
	clk.set(t0)
	x := testExporter(t, []string{"udp://" + pc.LocalAddr().String()}, &clk, &ix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.startSenders(ctx)

	tcp := v4Key(flow.ProtoTCP, 40000, 443, flow.FlagPorts)
	udp6 := v6Key()
	icmp := v4Key(flow.ProtoICMP, 8, 0, flow.FlagICMP)
	tagged := v4Key(flow.ProtoUDP, 1000, 2000, flow.FlagPorts|flow.FlagVLAN0|flow.FlagVLAN1|flow.FlagMPLS)
	tagged.VLAN, tagged.MPLS = [2]uint16{100, 200}, 12345
	arp := flow.Key{EtherType: flow.EtherTypeARP}

	b1 := index.NewBuilder(0)
	ix.set(LiveIndex{Iface: "eth9", Index: b1})
	add(b1,
		pkt{tcp, t0, 74, flow.TCPSyn},
		pkt{udp6, t0.Add(time.Millisecond), 120, 0},
		pkt{tcp, t0.Add(2 * time.Millisecond), 66, flow.TCPAck},
		pkt{icmp, t0.Add(3 * time.Millisecond), 98, 0},
		pkt{tagged, t0.Add(4 * time.Millisecond), 200, 0},
		pkt{arp, t0.Add(5 * time.Millisecond), 60, 0},
	)
	clk.add(time.Second)
	x.Scan()
	// More of tcp in the same file after a scan, then the file rotates:
	// packets in b1 after its last scan, and in b2.
	add(b1, pkt{tcp, t0.Add(1500 * time.Millisecond), 1514, flow.TCPPsh | flow.TCPAck})
	b2 := index.NewBuilder(0)
	add(b2, pkt{tcp, t0.Add(2 * time.Second), 54, flow.TCPFin | flow.TCPAck})
	b2.AddCut(&tcp, 2, 3000, t0.Add(1900*time.Millisecond).UnixNano())
	cutOnly := v4Key(flow.ProtoTCP, 40001, 443, flow.FlagPorts)
	b2.AddCut(&cutOnly, 3, 4500, t0.Add(1800*time.Millisecond).UnixNano())
	ix.set(LiveIndex{Iface: "eth9", Index: b2})
	clk.add(time.Second)
	x.Scan()
	if x.emitted != 0 {
		t.Fatalf("%d records before any timeout", x.emitted)
	}
	clk.set(t0.Add(2*time.Second + DefaultIdleTimeout))
	x.Scan()
	if x.emitted != 5 {
		t.Fatalf("%d records after the idle timeout, want 5", x.emitted)
	}

	c := newCollector(t)
	buf := make([]byte, 65536)
	for len(c.records) < 5 {
		_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d records: %v", len(c.records), err)
		}
		// A copy: the decoded records alias the message's bytes, and buf is
		// read into again.
		c.decode(bytes.Clone(buf[:n]))
	}
	if c.templSets != 1 {
		t.Errorf("%d template sets, want 1", c.templSets)
	}
	sort.Slice(c.records, func(i, j int) bool {
		return c.records[i].Proto < c.records[j].Proto || c.records[i].Proto == c.records[j].Proto && c.records[i].SrcPort < c.records[j].SrcPort
	})
	ns := func(t time.Time) uint64 { return uint64(t.UnixNano()) }
	type want struct {
		k                    flow.Key
		packets              uint64
		bytes                uint64
		start, end           time.Time
		flags                uint8
		cutPackets, cutBytes uint64
	}
	for i, w := range []want{
		{icmp, 1, 98, t0.Add(3 * time.Millisecond), t0.Add(3 * time.Millisecond), 0, 0, 0},
		{tcp, 4 + 2, 74 + 66 + 1514 + 54 + 3000, t0, t0.Add(2 * time.Second), flow.TCPSyn | flow.TCPAck | flow.TCPPsh | flow.TCPFin, 2, 3000},
		{cutOnly, 3, 4500, t0.Add(1800 * time.Millisecond), t0.Add(1800 * time.Millisecond), 0, 3, 4500},
		{tagged, 1, 200, t0.Add(4 * time.Millisecond), t0.Add(4 * time.Millisecond), 0, 0, 0},
		{udp6, 1, 120, t0.Add(time.Millisecond), t0.Add(time.Millisecond), 0, 0, 0},
	} {
		r := c.records[i]
		addrLen := 4
		if w.k.Flags&flow.FlagIPv6 != 0 {
			addrLen = 16
		}
		var sport, dport, icmpType, icmpCode uint32
		if w.k.Flags&flow.FlagICMP != 0 {
			icmpType, icmpCode = uint32(w.k.SrcPort), uint32(w.k.DstPort)
		} else {
			sport, dport = uint32(w.k.SrcPort), uint32(w.k.DstPort)
		}
		mpls := []uint32{w.k.MPLS} // the field is always there, 0 without a label
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"src", fmt.Sprint(r.SrcAddr), fmt.Sprint(w.k.Src[:addrLen])},
			{"dst", fmt.Sprint(r.DstAddr), fmt.Sprint(w.k.Dst[:addrLen])},
			{"sport", r.SrcPort, sport},
			{"dport", r.DstPort, dport},
			{"icmp type", r.IcmpType, icmpType},
			{"icmp code", r.IcmpCode, icmpCode},
			{"proto", r.Proto, uint32(w.k.Proto)},
			{"packets", r.Packets, w.packets},
			{"bytes", r.Bytes, w.bytes},
			{"start", r.TimeFlowStartNs, ns(w.start)},
			{"end", r.TimeFlowEndNs, ns(w.end)},
			{"tcp flags", r.TcpFlags, uint32(w.flags)},
			{"vlan", r.SrcVlan, uint32(w.k.VLAN[0])},
			{"mpls", fmt.Sprint(r.MplsLabel), fmt.Sprint(mpls)},
			{"in if", r.InIf, uint32(9)},
			{"domain", r.ObservationDomainId, uint32(77)},
			{"community id", r.CommunityID, w.k.CommunityID(0)},
			{"url", r.URL, "https://sensor.example:8443"},
			{"end reason", r.EndReason, uint8(EndIdle)},
			{"cut packets", r.CutPackets, w.cutPackets},
			{"cut bytes", r.CutBytes, w.cutBytes},
		} {
			if f.got != f.want {
				t.Errorf("record %d (%v): %s %v, want %v", i, w.k, f.name, f.got, f.want)
			}
		}
	}
	if c.records[1].CommunityID == "" {
		t.Error("the TCP flow has no community id")
	}
	// The sender counts a message once its write returned, which may be
	// after the collector read it.
	var cs Counters
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cs = x.Counters()[0]; cs.Records == 5 {
			break
		}
	}
	if cs.Records != 5 || cs.Templates != 1 || cs.SendErrors != 0 || cs.RecordsDropped != 0 || cs.Bytes == 0 {
		t.Errorf("counters %+v", cs)
	}
}

// TestActiveTimeout: a long flow is exported every active timeout with
// the packets since its last record, and its remainder at idle.
func TestActiveTimeout(t *testing.T) {
	var clk clock
	var ix indexes
	t0 := time.Unix(1_800_000_000, 0)
	x := testExporter(t, []string{"udp://127.0.0.1:9"}, &clk, &ix)
	b := index.NewBuilder(0)
	ix.set(LiveIndex{Iface: "eth10", Index: b})
	k := v4Key(flow.ProtoUDP, 1, 2, flow.FlagPorts)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Second)
		add(b, pkt{k, now, 100, 0})
		clk.set(now.Add(500 * time.Millisecond))
		x.Scan()
	}
	clk.add(DefaultIdleTimeout)
	x.Scan()
	s := x.senders[0]
	var got []Record
	for len(s.queue) > 0 {
		got = append(got, <-s.queue)
	}
	if len(got) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(got), got)
	}
	// The scan at 60.5 s finds the record 60 s old, with 61 packets.
	if got[0].EndReason != EndActive || got[0].Packets != 61 || got[0].Start != t0.UnixNano() || got[0].End != t0.Add(60*time.Second).UnixNano() {
		t.Errorf("first record %+v", got[0])
	}
	if got[1].EndReason != EndIdle || got[1].Packets != 39 || got[1].Bytes != 3900 || got[1].End != t0.Add(99*time.Second).UnixNano() || got[1].Ingress != 10 {
		t.Errorf("second record %+v", got[1])
	}
	// One packet per scan: the continuation's start is exact.
	if got[1].Start != t0.Add(61*time.Second).UnixNano() {
		t.Errorf("second record starts %v", time.Unix(0, got[1].Start).Sub(t0))
	}
}

// TestQueueFull: records beyond a collector's queue are dropped and
// counted, and offering never waits.
func TestQueueFull(t *testing.T) {
	var clk clock
	var ix indexes
	x := testExporter(t, []string{"udp://127.0.0.1:9", "tcp://127.0.0.1:9"}, &clk, &ix)
	r := Record{Key: v4Key(flow.ProtoUDP, 1, 2, flow.FlagPorts), Packets: 1}
	done := make(chan struct{})
	go func() {
		for range queueRecords + 10 {
			x.emit(&r)
			r.Packets = 1
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("emit blocked")
	}
	for _, c := range x.Counters() {
		if c.RecordsDropped != 10 {
			t.Errorf("%s: %d dropped, want 10", c.Collector, c.RecordsDropped)
		}
	}
}

// TestTCPCollector: over TCP, templates come first on every connection,
// and the exporter reconnects when the collector closes the connection.
func TestTCPCollector(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var clk clock
	var ix indexes
	clk.set(time.Now())
	x := testExporter(t, []string{"tcp://" + ln.Addr().String()}, &clk, &ix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.startSenders(ctx)
	s := x.senders[0]
	r := Record{Key: v4Key(flow.ProtoTCP, 1, 2, flow.FlagPorts), Start: clk.ns.Load(), End: clk.ns.Load(), Packets: 2, Bytes: 120}

	for conn := range 2 {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("connection %d: %v", conn, err)
		}
		col := newCollector(t)
		col.seq = uint32(3 * conn) // the stream's count goes on across connections
		for range 3 {
			s.offer(&r)
		}
		for len(col.records) < 3 {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			msg, err := readMessage(c)
			if err != nil {
				t.Fatalf("connection %d: %v", conn, err)
			}
			col.decode(msg)
			if col.messages == 1 && col.templSets != 1 {
				t.Fatalf("connection %d: the first message has no templates", conn)
			}
		}
		if col.records[2].Packets != 2 || col.records[2].Bytes != 120 {
			t.Errorf("record %+v", col.records[2].FlowMessage.String())
		}
		c.Close()
	}
	var cs Counters
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cs = x.Counters()[0]; cs.Templates >= 2 && cs.Records >= 6 {
			break
		}
	}
	if cs.Templates < 2 || cs.Records < 6 {
		t.Errorf("counters %+v", cs)
	}
}

// readMessage reads one IPFIX message from a stream: its length is in the
// header.
func readMessage(r io.Reader) ([]byte, error) {
	h := make([]byte, 4)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if binary.BigEndian.Uint16(h) != Version || n < headerLen {
		return nil, errors.New("not an IPFIX message header")
	}
	msg := append(h, make([]byte, n-4)...)
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}
