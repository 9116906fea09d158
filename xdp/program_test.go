//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/gen"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
)

// XDP actions (enum xdp_action).
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// testProgram loads the XDP program without attaching it, for BPF_PROG_TEST_RUN.
func testProgram(tb testing.TB, opts ProgramOptions) *Program {
	tb.Helper()
	testutil.RequireRoot(tb)
	if opts.MaxFlows == 0 {
		opts.MaxFlows = 1 << 20 // no LRU eviction in tests
	}
	p, err := LoadProgram(opts)
	if err != nil {
		tb.Fatalf("load program: %+v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("close program: %v", err)
		}
	})
	return p
}

// mustRun runs the XDP program once over frame with BPF_PROG_TEST_RUN and
// returns its action, the metadata it left in front of the packet (nil if
// none) and the packet after the run.
func mustRun(tb testing.TB, p *Program, frame []byte) (action uint32, meta, data []byte) {
	tb.Helper()
	action, meta, data, err := run(tb, p, frame)
	if err != nil {
		tb.Fatal(err)
	}
	return action, meta, data
}

// run is mustRun returning the error of BPF_PROG_TEST_RUN.
func run(tb testing.TB, p *Program, frame []byte) (action uint32, meta, data []byte, err error) {
	tb.Helper()
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := p.XDPProgram().Run(&opts)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("run XDP program on a %d-byte frame: %w", len(frame), err)
	}
	// The kernel returns everything from data_meta to the end of the frame.
	out := opts.DataOut
	metaLen := len(out) - len(frame)
	if metaLen < 0 {
		tb.Fatalf("XDP program returned %d bytes for a %d-byte frame", len(out), len(frame))
	}
	if metaLen > 0 {
		meta = out[:metaLen]
	}
	return ret, meta, out[metaLen:], nil
}

func mustStats(tb testing.TB, p *Program) ProgramStats {
	tb.Helper()
	s, err := p.Stats()
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	return s
}

// newFlowReader returns a reader of p's new_flows ring buffer that never blocks.
func newFlowReader(tb testing.TB, p *Program) func() (NewFlowRecord, bool) {
	tb.Helper()
	rd, err := ringbuf.NewReader(p.NewFlows())
	if err != nil {
		tb.Fatalf("ringbuf reader: %v", err)
	}
	tb.Cleanup(func() { rd.Close() })
	rd.SetDeadline(time.Unix(1, 0))
	var rec ringbuf.Record
	return func() (NewFlowRecord, bool) {
		tb.Helper()
		err := rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return NewFlowRecord{}, false
		}
		if err != nil {
			tb.Fatalf("read new_flows: %v", err)
		}
		if len(rec.RawSample) != NewFlowRecordSize {
			tb.Fatalf("new_flows record of %d bytes, want %d", len(rec.RawSample), NewFlowRecordSize)
		}
		var r NewFlowRecord
		if err := r.UnmarshalBinary(rec.RawSample); err != nil {
			tb.Fatal(err)
		}
		return r, true
	}
}

// keyDiff describes how the kernel's key differs from Go's, field by field.
func keyDiff(bpf, goKey flow.Key) string {
	var d []string
	a, b := reflect.ValueOf(bpf), reflect.ValueOf(goKey)
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			d = append(d, fmt.Sprintf("%s: bpf %v, go %v", a.Type().Field(i).Name, a.Field(i).Interface(), b.Field(i).Interface()))
		}
	}
	return strings.Join(d, "; ")
}

// TestParseMatchesGo runs the XDP program over every packet of every
// Ethernet test capture and requires the flow key it derived to equal
// flow.Parse's, packet for packet. The kernel's key of a packet is found
// through the flow id in its metadata: new_flows announces the key of each
// new id. Along the way it checks the action, that the packet is unchanged,
// one ring buffer record per new flow, the flows map and the counters.
func TestParseMatchesGo(t *testing.T) {
	caps := testpcaps.Ethernet(t, "")
	p := testProgram(t, ProgramOptions{RingBufSize: 1 << 20})
	next := newFlowReader(t, p)
	clock, err := NewClock()
	if err != nil {
		t.Fatal(err)
	}

	type flowCount struct {
		id             uint64
		packets, bytes uint64
		tcpFlags       uint32 // OR of flow.TCPFlags: the kernel's must be the same
	}
	seen := make(map[flow.Key]*flowCount)
	var want ProgramStats
	var short, huge, disagree int
	start := time.Now()
	for _, c := range caps {
		name := filepath.Base(c.Path)
		for i, pkt := range c.Packets {
			frame := pkt.Data
			var goKey flow.Key
			flow.Parse(frame, &goKey)
			if len(frame) < 14 {
				// BPF_PROG_TEST_RUN refuses frames without an Ethernet
				// header; a NIC never delivers one.
				short++
				continue
			}
			where := fmt.Sprintf("%s packet %d (%d bytes)", name, i+1, len(frame))
			action, metaB, data, err := run(t, p, frame)
			if errors.Is(err, unix.ENOMEM) && len(frame) > 0xffff {
				// BPF_PROG_TEST_RUN builds at most 3.5 KiB + 17 pages
				// (MAX_SKB_FRAGS); no NIC delivers such a frame to XDP
				// (this one was captured after GRO or before TSO).
				huge++
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			want.Packets++
			want.Bytes += uint64(len(frame))
			want.RedirectFailed++
			switch {
			case goKey.Flags&flow.FlagIPv4 != 0:
				want.ParseIPv4++
			case goKey.Flags&flow.FlagIPv6 != 0:
				want.ParseIPv6++
			default:
				want.ParseNotIP++
			}
			if goKey.Flags&flow.FlagFragment != 0 {
				want.ParseFragment++
			}
			if goKey.Flags&flow.FlagVLAN0 != 0 {
				want.ParseVLAN++
			}
			if goKey.Flags&flow.FlagMPLS != 0 {
				want.ParseMPLS++
			}

			if action != xdpPass {
				t.Fatalf("%s: action %d, want XDP_PASS (%d): no socket in xsks", where, action, xdpPass)
			}
			if !bytes.Equal(data, frame) {
				t.Fatalf("%s: packet bytes changed", where)
			}
			meta, err := ParseMeta(metaB)
			if err != nil || len(metaB) != MetaSize {
				t.Fatalf("%s: metadata %x: want %d bytes (%v)", where, metaB, MetaSize, err)
			}
			if meta.FlowID == 0 {
				t.Fatalf("%s: flow id 0", where)
			}
			if d := time.Since(clock.Time(meta.TAINS)); d < 0 || d > time.Since(start)+time.Second {
				t.Fatalf("%s: metadata timestamp %v is %v off", where, clock.Time(meta.TAINS), d)
			}

			rec, isNew := next()
			fc := seen[goKey]
			switch {
			case isNew && fc == nil:
				// A new flow: the kernel's key must be Go's.
				if rec.Key != goKey {
					disagree++
					if disagree <= 20 {
						t.Errorf("%s: key differs: %s\n  bpf %v\n  go  %v", where, keyDiff(rec.Key, goKey), rec.Key, goKey)
					}
				}
				if rec.FlowID != meta.FlowID {
					t.Fatalf("%s: new_flows id %#x, metadata id %#x", where, rec.FlowID, meta.FlowID)
				}
				if rec.FirstSeenNS != meta.TAINS {
					t.Fatalf("%s: new_flows first seen %d, metadata timestamp %d", where, rec.FirstSeenNS, meta.TAINS)
				}
				fc = &flowCount{id: rec.FlowID}
				seen[goKey] = fc
				want.NewFlows++
			case isNew:
				disagree++
				if disagree <= 20 {
					t.Errorf("%s: kernel saw a new flow %v, but Go's key %v was seen before (id %#x): %s",
						where, rec.Key, goKey, fc.id, keyDiff(rec.Key, goKey))
				}
				continue
			case fc == nil:
				disagree++
				if disagree <= 20 {
					t.Errorf("%s: Go's key %v is new, but the kernel put the packet in existing flow %#x", where, goKey, meta.FlowID)
				}
				continue
			case meta.FlowID != fc.id:
				disagree++
				if disagree <= 20 {
					t.Errorf("%s: kernel flow id %#x, but Go's key %v has id %#x", where, meta.FlowID, goKey, fc.id)
				}
				continue
			}
			if _, more := next(); more {
				t.Fatalf("%s: more than one new_flows record", where)
			}
			fc.packets++
			fc.bytes += uint64(len(frame))
			fc.tcpFlags |= uint32(flow.TCPFlags(frame, &goKey))
		}
	}
	t.Logf("%d packets of %d captures compared in %v, %d flows; skipped %d frames under 14 bytes and %d over 64 KiB; %d disagreements",
		want.Packets, len(caps), time.Since(start).Round(time.Millisecond), len(seen), short, huge, disagree)
	if disagree > 0 {
		t.Fatalf("%d packets where the XDP program and flow.Parse disagree", disagree)
	}

	tcpFlows := 0
	for k, fc := range seen {
		var v FlowValue
		if err := p.Flows().Lookup(&k, &v); err != nil {
			t.Fatalf("flows[%v]: %v", k, err)
		}
		if v.FlowId != fc.id || v.Packets != fc.packets || v.Bytes != fc.bytes || v.FirstSeenNs > v.LastSeenNs || v.TcpFlags != fc.tcpFlags {
			t.Fatalf("flows[%v] = %+v, want id %#x, %d packets, %d bytes, tcp flags %#x", k, v, fc.id, fc.packets, fc.bytes, fc.tcpFlags)
		}
		if fc.tcpFlags != 0 {
			tcpFlows++
		}
	}
	if tcpFlows < 100 {
		t.Errorf("only %d flows with TCP flags: the captures changed?", tcpFlows)
	}
	got := mustStats(t, p)
	if got != want {
		t.Fatalf("stats\n got %+v\nwant %+v", got, want)
	}
	t.Logf("counters: %+v", got)
}

// Test frames.

var (
	macDst = []byte{0x02, 0, 0, 0, 0, 1}
	macSrc = []byte{0x02, 0, 0, 0, 0, 2}
)

func ethHeader(etherType uint16) []byte {
	b := append(append([]byte{}, macDst...), macSrc...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

// udp4Frame is Ethernet + IPv4 + UDP, padded with zeros to size bytes.
func udp4Frame(src, dst string, sport, dport uint16, size int) []byte {
	b := ethHeader(0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], netip.MustParseAddr(src).AsSlice())
	copy(ip[16:], netip.MustParseAddr(dst).AsSlice())
	b = append(b, ip...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(size-34))
	b = append(b, 0, 0)
	if len(b) < size {
		b = append(b, make([]byte, size-len(b))...)
	}
	return b
}

// tcp6Frame is Ethernet + IPv6 + the given extension headers (each
// {next header, length byte} followed by zeros to its length) + TCP, padded
// to size.
func tcp6Frame(src, dst string, sport, dport uint16, extLens []uint8, size int) []byte {
	b := ethHeader(0x86dd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	ip[6], ip[7] = 6, 64
	if len(extLens) > 0 {
		ip[6] = 60 // destination options
	}
	copy(ip[8:], netip.MustParseAddr(src).AsSlice())
	copy(ip[24:], netip.MustParseAddr(dst).AsSlice())
	b = append(b, ip...)
	for i, l := range extLens {
		ext := make([]byte, (int(l)+1)*8)
		ext[0], ext[1] = 60, l
		if i == len(extLens)-1 {
			ext[0] = 6
		}
		b = append(b, ext...)
	}
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = append(b, make([]byte, 16)...)
	binary.BigEndian.PutUint16(b[18:], uint16(len(b)-54))
	if len(b) < size {
		b = append(b, make([]byte, size-len(b))...)
	}
	return b
}

func goKey(frame []byte) flow.Key {
	var k flow.Key
	flow.Parse(frame, &k)
	return k
}

func TestActions(t *testing.T) {
	udp53 := udp4Frame("10.1.2.3", "192.0.2.1", 40000, 53, 80)
	udp53rev := udp4Frame("192.0.2.1", "10.1.2.3", 53, 40000, 80)
	udp80 := udp4Frame("192.0.2.7", "192.0.2.1", 40000, 80, 80)
	tcp6 := tcp6Frame("2001:db8::1", "2001:db8::2", 1234, 443, nil, 90)

	t.Run("redirect without socket", func(t *testing.T) {
		p := testProgram(t, ProgramOptions{})
		action, meta, data := mustRun(t, p, udp80)
		if action != xdpPass || !bytes.Equal(data, udp80) || len(meta) != MetaSize {
			t.Fatalf("action %d, %d bytes of metadata, data unchanged %v; want XDP_PASS, %d, true",
				action, len(meta), bytes.Equal(data, udp80), MetaSize)
		}
		s := mustStats(t, p)
		want := ProgramStats{Packets: 1, Bytes: 80, RedirectFailed: 1, NewFlows: 1, ParseIPv4: 1}
		if s != want {
			t.Fatalf("stats\n got %+v\nwant %+v", s, want)
		}
		// Close twice (once more in the cleanup): the second is a no-op.
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("observe", func(t *testing.T) {
		p := testProgram(t, ProgramOptions{Config: ProgramConfig{Observe: true}})
		for range 3 {
			action, meta, data := mustRun(t, p, tcp6)
			if action != xdpPass || meta != nil || !bytes.Equal(data, tcp6) {
				t.Fatalf("action %d, metadata %x, data unchanged %v; want XDP_PASS, none, true",
					action, meta, bytes.Equal(data, tcp6))
			}
		}
		s := mustStats(t, p)
		want := ProgramStats{Packets: 3, Bytes: 270, Passed: 3, NewFlows: 1, ParseIPv6: 3}
		if s != want {
			t.Fatalf("stats\n got %+v\nwant %+v", s, want)
		}
		var v FlowValue
		k := goKey(tcp6)
		if err := p.Flows().Lookup(&k, &v); err != nil || v.Packets != 3 || v.Bytes != 270 {
			t.Fatalf("flows[%v] = %+v, %v; want 3 packets, 270 bytes", k, v, err)
		}
	})

	t.Run("drop rules", func(t *testing.T) {
		rules := []DropRule{
			{Proto: 17, Port: 53},
			{Src: netip.MustParsePrefix("2001:db8::/32"), Dst: netip.MustParsePrefix("2001:db8::2/128")},
		}
		p := testProgram(t, ProgramOptions{Config: ProgramConfig{DropRules: rules}})
		for _, tc := range []struct {
			name  string
			frame []byte
			want  uint32
		}{
			{"dport 53", udp53, xdpDrop},
			{"sport 53", udp53rev, xdpDrop},
			{"port 80", udp80, xdpPass},
			{"v6 net", tcp6, xdpDrop},
			{"v6 other dst", tcp6Frame("2001:db8::1", "2001:db8::3", 1234, 443, nil, 90), xdpPass},
			{"v4 not v6", udp4Frame("32.1.13.184", "192.0.2.1", 1, 2, 60), xdpPass},
		} {
			action, _, data := mustRun(t, p, tc.frame)
			if action != tc.want || !bytes.Equal(data, tc.frame) {
				t.Errorf("%s: action %d, want %d (data unchanged %v)", tc.name, action, tc.want, bytes.Equal(data, tc.frame))
			}
		}
		s := mustStats(t, p)
		if s.DroppedByRule != 3 || s.NewFlows != 3 || s.Packets != 6 || s.RedirectFailed != 3 {
			t.Fatalf("stats %+v: want 3 dropped, 3 new flows, 6 packets, 3 passed", s)
		}
		var v FlowValue
		k := goKey(udp53)
		if err := p.Flows().Lookup(&k, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("dropped packet's flow %v is in flows: %+v, %v", k, v, err)
		}

		// SetConfig replaces the rules.
		if err := p.SetConfig(ProgramConfig{}); err != nil {
			t.Fatal(err)
		}
		if action, _, _ := mustRun(t, p, udp53); action != xdpPass {
			t.Fatalf("after removing the rules: action %d, want XDP_PASS", action)
		}
	})

	t.Run("invalid rules", func(t *testing.T) {
		p := testProgram(t, ProgramOptions{})
		if err := p.SetConfig(ProgramConfig{DropRules: []DropRule{{}}}); !errors.Is(err, ErrInvalidDropRule) {
			t.Errorf("empty rule: %v, want ErrInvalidDropRule", err)
		}
		mixed := DropRule{Src: netip.MustParsePrefix("10.0.0.0/8"), Dst: netip.MustParsePrefix("::/0")}
		if err := p.SetConfig(ProgramConfig{DropRules: []DropRule{mixed}}); !errors.Is(err, ErrInvalidDropRule) {
			t.Errorf("mixed families: %v, want ErrInvalidDropRule", err)
		}
		many := make([]DropRule, MaxDropRules+1)
		if err := p.SetConfig(ProgramConfig{DropRules: many}); !errors.Is(err, ErrTooManyDropRules) {
			t.Errorf("%d rules: %v, want ErrTooManyDropRules", len(many), err)
		}
	})

	t.Run("snap length", func(t *testing.T) {
		p := testProgram(t, ProgramOptions{Config: ProgramConfig{SnapLen: 100}})
		mustRun(t, p, udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 100))
		action, _, _ := mustRun(t, p, udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 101))
		if s := mustStats(t, p); s.OverSnapLen != 1 || action != xdpPass {
			t.Fatalf("action %d, stats %+v: want XDP_PASS and 1 over snap length", action, s)
		}
	})

	t.Run("ringbuf full", func(t *testing.T) {
		page := os.Getpagesize()
		p := testProgram(t, ProgramOptions{RingBufSize: uint32(page)})
		next := newFlowReader(t, p)
		const flows = 200 // a page holds page/72 records (8-byte header each)
		for i := range flows {
			mustRun(t, p, udp4Frame("10.0.0.1", "10.0.0.2", uint16(i+1), 80, 60))
		}
		var got int
		for {
			rec, ok := next()
			if !ok {
				break
			}
			got++
			if k := goKey(udp4Frame("10.0.0.1", "10.0.0.2", uint16(got), 80, 60)); rec.Key != k {
				t.Fatalf("record %d: key %v, want %v", got, rec.Key, k)
			}
		}
		s := mustStats(t, p)
		if got != page/(NewFlowRecordSize+8) || s.NewFlows != flows || s.RingBufFull != uint64(flows-got) {
			t.Fatalf("%d records read, stats %+v: want %d records, %d new flows, %d lost",
				got, s, page/(NewFlowRecordSize+8), flows, flows-got)
		}
		// Lost records do not lose the flows: their packets keep their ids.
		_, meta, _ := mustRun(t, p, udp4Frame("10.0.0.1", "10.0.0.2", flows, 80, 60))
		m, _ := ParseMeta(meta)
		var v FlowValue
		k := goKey(udp4Frame("10.0.0.1", "10.0.0.2", flows, 80, 60))
		if err := p.Flows().Lookup(&k, &v); err != nil || v.FlowId != m.FlowID || v.Packets != 2 {
			t.Fatalf("flows[%v] = %+v, %v; want id %#x from the metadata, 2 packets", k, v, err, m.FlowID)
		}
	})

	t.Run("multi-buffer", func(t *testing.T) {
		// A 9000-byte jumbo frame whose TCP ports lie beyond the first
		// buffer (BPF_PROG_TEST_RUN puts about 3.5 KiB in it): two 2 KiB
		// destination options headers push them to offset 4150.
		frame := tcp6Frame("2001:db8::1", "2001:db8::2", 5555, 6666, []uint8{255, 255}, 9000)
		p := testProgram(t, ProgramOptions{})
		next := newFlowReader(t, p)
		action, meta, data := mustRun(t, p, frame)
		if action != xdpPass || len(meta) != MetaSize || !bytes.Equal(data, frame) {
			t.Fatalf("action %d, %d bytes of metadata, data unchanged %v", action, len(meta), bytes.Equal(data, frame))
		}
		rec, ok := next()
		want := goKey(frame)
		if want.Flags&flow.FlagPorts == 0 || want.SrcPort != 5555 {
			t.Fatalf("test frame: Go key %v has no ports", want)
		}
		if !ok || rec.Key != want {
			t.Fatalf("new flow %v (%v), want key %v: %s", rec.Key, ok, want, keyDiff(rec.Key, want))
		}
		if s := mustStats(t, p); s.Bytes != 9000 {
			t.Fatalf("bytes %d, want 9000 (the whole frame)", s.Bytes)
		}
	})

	t.Run("flow ids", func(t *testing.T) {
		p := testProgram(t, ProgramOptions{})
		ids := make(map[uint64]bool)
		for i := range 50 {
			_, meta, _ := mustRun(t, p, udp4Frame("10.0.0.1", "10.0.0.2", uint16(i+1), 80, 60))
			m, _ := ParseMeta(meta)
			if m.FlowID == 0 || ids[m.FlowID] {
				t.Fatalf("flow %d: id %#x is zero or repeated", i, m.FlowID)
			}
			ids[m.FlowID] = true
		}
	})
}

// TestLayouts checks that the Go mirrors of the C structs agree with them.
func TestLayouts(t *testing.T) {
	var k flow.Key
	var g gen.StenodFlowKey
	if unsafe.Sizeof(k) != flow.KeySize || unsafe.Sizeof(g) != flow.KeySize {
		t.Fatalf("sizes: flow.Key %d, struct flow_key %d, want %d", unsafe.Sizeof(k), unsafe.Sizeof(g), flow.KeySize)
	}
	offsets := [][2]uintptr{
		{unsafe.Offsetof(k.Src), unsafe.Offsetof(g.Src)},
		{unsafe.Offsetof(k.Dst), unsafe.Offsetof(g.Dst)},
		{unsafe.Offsetof(k.SrcPort), unsafe.Offsetof(g.Sport)},
		{unsafe.Offsetof(k.DstPort), unsafe.Offsetof(g.Dport)},
		{unsafe.Offsetof(k.VLAN), unsafe.Offsetof(g.Vlan)},
		{unsafe.Offsetof(k.MPLS), unsafe.Offsetof(g.Mpls)},
		{unsafe.Offsetof(k.EtherType), unsafe.Offsetof(g.Ethertype)},
		{unsafe.Offsetof(k.Proto), unsafe.Offsetof(g.Proto)},
		{unsafe.Offsetof(k.Flags), unsafe.Offsetof(g.Flags)},
	}
	for i, o := range offsets {
		if o[0] != o[1] {
			t.Errorf("field %d: flow.Key offset %d, struct flow_key offset %d", i, o[0], o[1])
		}
	}
	for _, f := range []struct {
		g gen.StenodFlowFlag
		k flow.Flags
	}{
		{gen.StenodFlowFlagFLOW_IPV4, flow.FlagIPv4}, {gen.StenodFlowFlagFLOW_IPV6, flow.FlagIPv6},
		{gen.StenodFlowFlagFLOW_PORTS, flow.FlagPorts}, {gen.StenodFlowFlagFLOW_FRAGMENT, flow.FlagFragment},
		{gen.StenodFlowFlagFLOW_VLAN0, flow.FlagVLAN0}, {gen.StenodFlowFlagFLOW_VLAN1, flow.FlagVLAN1},
		{gen.StenodFlowFlagFLOW_MPLS, flow.FlagMPLS},
	} {
		if uint32(f.g) != uint32(f.k) {
			t.Errorf("flag %#x in C, %#x in Go", f.g, f.k)
		}
	}
	if s := unsafe.Sizeof(gen.StenodPacketMeta{}); s != MetaSize {
		t.Errorf("struct packet_meta: %d bytes, MetaSize %d", s, MetaSize)
	}
	if s := unsafe.Sizeof(gen.StenodFlowValue{}); s != 48 {
		t.Errorf("struct flow_value: %d bytes, want 48 (docs/bpf.md)", s)
	}
	if s := unsafe.Sizeof(gen.StenodNewFlow{}); s != NewFlowRecordSize {
		t.Errorf("struct new_flow: %d bytes, NewFlowRecordSize %d", s, NewFlowRecordSize)
	}
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"struct conn_value", unsafe.Sizeof(gen.StenodConnValue{}), 80},
		{"struct cut_conn", unsafe.Sizeof(gen.StenodCutConn{}), CutConnRecordSize},
		{"struct cut_count", unsafe.Sizeof(gen.StenodCutCount{}), 16},
		{"struct cutoff_match", unsafe.Sizeof(gen.StenodCutoffMatch{}), 128},
		{"struct cutoff_config", unsafe.Sizeof(gen.StenodCutoffConfig{}), 4128},
		{"struct config_value", unsafe.Sizeof(gen.StenodConfigValue{}), 5808},
		{"MAX_CUTOFF_MATCHES", uintptr(len(gen.StenodCutoffConfig{}.Matches)), MaxCutoffMatches},
		{"conn_value.flags", unsafe.Offsetof(gen.StenodConnValue{}.Flags), 72},
		{"config_value.cutoff", unsafe.Offsetof(gen.StenodConfigValue{}.Cutoff), 1680},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d (docs/bpf.md)", c.name, c.got, c.want)
		}
	}

	// Every counter has its own ProgramStats field.
	var s ProgramStats
	if n := reflect.TypeOf(s).NumField(); n != statCount {
		t.Fatalf("ProgramStats has %d fields, enum stat %d counters", n, statCount)
	}
	for i := range statCount {
		c := s.counter(gen.StenodStat(i))
		if c == nil {
			t.Fatalf("counter %d has no field", i)
		}
		*c = uint64(i + 1)
	}
	v := reflect.ValueOf(s)
	for i := range v.NumField() {
		if v.Field(i).Uint() == 0 {
			t.Errorf("field %s is no counter's", v.Type().Field(i).Name)
		}
	}
}

func TestClock(t *testing.T) {
	c, err := NewClock()
	if err != nil {
		t.Fatal(err)
	}
	var tai unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_TAI, &tai); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(c.Time(uint64(tai.Nano()))); d < 0 || d > 100*time.Millisecond {
		t.Fatalf("CLOCK_TAI now converts to %v, %v from now (offset %v)", c.Time(uint64(tai.Nano())), d, c.Offset())
	}
	if c.Offset()%time.Second != 0 {
		t.Logf("offset %v is not whole seconds", c.Offset())
	}
}

// bpffs mounts a bpf filesystem on a temporary directory for the test.
func bpffs(tb testing.TB) string { return testutil.BPFFS(tb) }

// xdpOn returns the "xdp..." attachment of iface as ip link shows it, or "".
func xdpOn(tb testing.TB, iface string) string {
	tb.Helper()
	for _, f := range strings.Fields(testutil.Run(tb, "ip", "link", "show", "dev", iface)) {
		if strings.HasPrefix(f, "xdp") {
			return f
		}
	}
	return ""
}

// sendUDP sends one UDP datagram from the veth peer to 10.199.0.1:9.
func sendUDP(tb testing.TB, v *testutil.Veth) {
	tb.Helper()
	v.InNS(tb, "bash", "-c", "echo stenod > /dev/udp/10.199.0.1/9")
}

func TestAttachPinVeth(t *testing.T) {
	v := testutil.NewVeth(t)
	testutil.RequireCommand(t, "bpftool")
	testutil.RequireCommand(t, "bash")
	root := bpffs(t)
	ifc, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	v.InNS(t, "ip", "addr", "add", "10.199.0.2/24", "dev", v.Peer)
	v.InNS(t, "ip", "neigh", "add", "10.199.0.1", "lladdr", ifc.HardwareAddr.String(), "dev", v.Peer)

	opts := ProgramOptions{Interface: v.Host, PinRoot: root, Mode: AttachNative}
	p, err := LoadProgram(opts)
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	dir := filepath.Join(root, v.Host)
	if p.PinDir() != dir || p.AttachMode() != AttachNative {
		t.Fatalf("pin dir %q, mode %v; want %q, native", p.PinDir(), p.AttachMode(), dir)
	}
	for _, name := range pinNames {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin %s: %v", name, err)
		}
	}
	if got := xdpOn(t, v.Host); got != "xdp" {
		t.Errorf("ip link shows %q, want native xdp", got)
	}
	out := testutil.Run(t, "bpftool", "map", "dump", "pinned", filepath.Join(dir, PinStats))
	if !strings.Contains(out, "values") {
		t.Errorf("bpftool map dump of stats:\n%s", out)
	}
	testutil.Run(t, "bpftool", "prog", "show", "pinned", filepath.Join(dir, PinProgram))
	testutil.Run(t, "bpftool", "link", "show", "pinned", filepath.Join(dir, PinLink))

	// A packet from the peer runs through the program and is passed on (no socket).
	sendUDP(t, v)
	s := mustStats(t, p)
	if s.Packets == 0 || s.RedirectFailed != s.Packets || s.ParseIPv4 == 0 {
		t.Errorf("stats after sending from the peer: %+v", s)
	}
	var k flow.Key
	var fv FlowValue
	var found bool
	it := p.Flows().Iterate()
	for it.Next(&k, &fv) {
		if k.DstPort == 9 && k.DstAddr() == netip.MustParseAddr("10.199.0.1") && k.Proto == 17 {
			found = true
		}
	}
	if err := it.Err(); err != nil || !found {
		t.Errorf("flow to 10.199.0.1:9 not in flows (%v)", err)
	}

	// A crash leaves the pins and the attached link; a restart takes over.
	abandon(t, p)
	if xdpOn(t, v.Host) == "" {
		t.Fatal("abandoned program no longer attached: the crash test tests nothing")
	}
	p, err = LoadProgram(opts)
	if err != nil {
		t.Fatalf("load over an earlier run's pins: %+v", err)
	}
	checkPinnedIDs(t, p)
	before := mustStats(t, p).Packets
	sendUDP(t, v)
	if got := mustStats(t, p).Packets; got <= before {
		t.Errorf("new program saw no packet after the restart (%d before, %d after)", before, got)
	}

	if err := p.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := xdpOn(t, v.Host); got != "" {
		t.Errorf("after Close, ip link shows %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, PinStats)); err != nil {
		t.Errorf("after Close, the stats pin is gone: %v", err)
	}
	if err := p.Remove(); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if ents := pinRootEntries(t, root); len(ents) != 0 {
		t.Fatalf("after Close and Remove, %s holds %v", root, ents)
	}

	// Forced generic mode.
	p, err = LoadProgram(ProgramOptions{Interface: v.Host, PinRoot: root, Mode: AttachGeneric})
	if err != nil {
		t.Fatalf("load generic: %+v", err)
	}
	if got := xdpOn(t, v.Host); got != "xdpgeneric" || p.AttachMode() != AttachGeneric {
		t.Errorf("generic mode: ip link shows %q, mode %v", got, p.AttachMode())
	}
	if err := errors.Join(p.Remove(), p.Close()); err != nil {
		t.Fatalf("remove and close: %v", err)
	}
	if ents := pinRootEntries(t, root); len(ents) != 0 || xdpOn(t, v.Host) != "" {
		t.Fatalf("after Remove and Close: %s holds %v, ip link shows %q", root, ents, xdpOn(t, v.Host))
	}
}

// pinRootEntries lists root, leaving out the kernel's own maps.debug and
// progs.debug of a fresh bpffs.
func pinRootEntries(tb testing.TB, root string) []string {
	tb.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".debug") {
			names = append(names, e.Name())
		}
	}
	return names
}

// abandon closes p's file descriptors the way a killed process would:
// nothing unpinned, nothing detached.
func abandon(tb testing.TB, p *Program) {
	tb.Helper()
	err := errors.Join(p.link.Close(), p.objs.StenodXdp.Close(), p.objs.StenodSocket.Close(), p.objs.Flows.Close(),
		p.objs.NewFlows.Close(), p.objs.Stats.Close(), p.objs.Config.Close(), p.objs.Xsks.Close(), p.objs.FlowSeq.Close(),
		p.objs.Conns.Close(), p.objs.CutConns.Close(), p.objs.CutStats.Close())
	if err != nil {
		tb.Fatal(err)
	}
}

// checkPinnedIDs checks that every pin refers to p's own objects.
func checkPinnedIDs(tb testing.TB, p *Program) {
	tb.Helper()
	id := func(m interface{ Info() (*ebpf.MapInfo, error) }) ebpf.MapID {
		info, err := m.Info()
		if err != nil {
			tb.Fatal(err)
		}
		mid, _ := info.ID()
		return mid
	}
	for name, m := range map[string]*ebpf.Map{
		PinFlows: p.objs.Flows, PinStats: p.objs.Stats, PinXSKs: p.objs.Xsks,
		PinConfig: p.objs.Config, PinNewFlows: p.objs.NewFlows,
		PinConns: p.objs.Conns, PinCutConns: p.objs.CutConns, PinCutStats: p.objs.CutStats,
	} {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(p.PinDir(), name), nil)
		if err != nil {
			tb.Fatalf("open pin %s: %v", name, err)
		}
		if id(pinned) != id(m) {
			tb.Errorf("pin %s is map %d, the program's is %d", name, id(pinned), id(m))
		}
		pinned.Close()
	}
	l, err := link.LoadPinnedLink(filepath.Join(p.PinDir(), PinLink), nil)
	if err != nil {
		tb.Fatalf("open pin %s: %v", PinLink, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		tb.Fatal(err)
	}
	pinfo, err := p.XDPProgram().Info()
	if err != nil {
		tb.Fatal(err)
	}
	pid, _ := pinfo.ID()
	if info.Program != pid {
		tb.Errorf("pinned link runs program %d, ours is %d", info.Program, pid)
	}
}

// TestParseMetaAndRecord checks the decoders against the documented layouts.
func TestParseMetaAndRecord(t *testing.T) {
	b := make([]byte, 20) // 4 bytes before the metadata
	binary.LittleEndian.PutUint64(b[4:], 0x1234)
	binary.LittleEndian.PutUint64(b[12:], 99)
	m, err := ParseMeta(b)
	if err != nil || m != (PacketMeta{FlowID: 0x1234, TAINS: 99}) {
		t.Fatalf("ParseMeta = %+v, %v", m, err)
	}
	if _, err := ParseMeta(b[:15]); !errors.Is(err, ErrShortRecord) {
		t.Fatalf("ParseMeta of 15 bytes: %v", err)
	}
	k := goKey(udp4Frame("10.0.0.1", "10.0.0.2", 1, 2, 60))
	rec := binary.LittleEndian.AppendUint64(nil, 7)
	rec = binary.LittleEndian.AppendUint64(rec, 8)
	kb, _ := k.MarshalBinary()
	rec = append(rec, kb...)
	var r NewFlowRecord
	if err := r.UnmarshalBinary(rec); err != nil || r != (NewFlowRecord{FlowID: 7, FirstSeenNS: 8, Key: k}) {
		t.Fatalf("UnmarshalBinary = %+v, %v", r, err)
	}
	if err := r.UnmarshalBinary(rec[:63]); !errors.Is(err, ErrShortRecord) {
		t.Fatalf("UnmarshalBinary of 63 bytes: %v", err)
	}
}

// TestAttachAutoFallback attaches to a bridge interface, which has no native
// XDP: AttachAuto must fall back to generic mode and log why.
func TestAttachAutoFallback(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	name := fmt.Sprintf("stnd%d", os.Getpid()%100000)
	testutil.Run(t, "ip", "link", "add", name, "type", "bridge")
	t.Cleanup(func() { testutil.Run(t, "ip", "link", "del", name) })
	root := bpffs(t)

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := LoadProgram(ProgramOptions{Interface: name, PinRoot: root, Mode: AttachNative}); err == nil {
		t.Fatal("native mode on a bridge: no error")
	}
	if ents := pinRootEntries(t, root); len(ents) != 0 {
		t.Fatalf("failed load left %v in %s", ents, root)
	}
	p, err := LoadProgram(ProgramOptions{Interface: name, PinRoot: root, Logger: log})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	if p.AttachMode() != AttachGeneric || xdpOn(t, name) != "xdpgeneric" {
		t.Errorf("mode %v, ip link shows %q; want generic", p.AttachMode(), xdpOn(t, name))
	}
	if !strings.Contains(logs.String(), "generic mode") || !strings.Contains(logs.String(), "reason=") {
		t.Errorf("log does not say why native mode failed:\n%s", logs.String())
	}
	if err := errors.Join(p.Close(), p.Remove()); err != nil {
		t.Fatal(err)
	}
}

// edgeFrames builds frames for the corners of docs/flow-key.md: tags, label
// stacks and extension header chains at and beyond their bounds.
func edgeFrames() [][]byte {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	eth := func(et uint16) []byte { return ethHeader(et) }
	vlan := func(vid, next uint16) []byte { return cat(u16(0xe000|vid), u16(next)) }
	mpls := func(label uint32, bos bool) []byte {
		e := label<<12 | 64
		if bos {
			e |= 0x100
		}
		return binary.BigEndian.AppendUint32(nil, e)
	}
	ipv4 := func(ihl int, frag uint16, proto byte) []byte {
		h := make([]byte, max(ihl*4, 20))
		h[0] = 0x40 | byte(ihl)
		binary.BigEndian.PutUint16(h[6:], frag)
		h[9] = proto
		copy(h[12:], []byte{192, 0, 2, 1, 198, 51, 100, 7})
		return h
	}
	ipv6 := func(nh byte) []byte {
		h := make([]byte, 40)
		h[0], h[6] = 0x60, nh
		h[8], h[9], h[23] = 0x20, 0x01, 1
		h[24], h[25], h[39] = 0x20, 0x01, 2
		return h
	}
	ext := func(nh, lenByte byte, size int) []byte {
		h := make([]byte, size)
		h[0], h[1] = nh, lenByte
		return h
	}
	frag6 := func(nh byte, off uint16) []byte { return cat([]byte{nh, 0}, u16(off), []byte{0, 0, 0, 1}) }
	l4 := []byte{0x30, 0x39, 0x01, 0xbb, 1, 2, 3, 4, 5, 6, 7, 8}

	frames := [][]byte{
		cat(eth(0x0800), ipv4(5, 0, 17), l4),
		cat(eth(0x0800), ipv4(6, 0, 6), l4),        // options
		cat(eth(0x0800), ipv4(4, 0, 6), l4),        // IHL 4: not IP
		cat(eth(0x0800), ipv4(15, 0, 6), l4),       // IHL 15, 60 bytes: truncations cut it
		cat(eth(0x0800), ipv4(5, 0x2000, 17), l4),  // MF, offset 0: first fragment
		cat(eth(0x0800), ipv4(5, 0x0010, 17), l4),  // offset 16: no ports
		cat(eth(0x0800), ipv4(5, 0x4000, 132), l4), // DF, SCTP
		cat(eth(0x0800), ipv4(5, 0, 1), l4),        // ICMP
		cat(eth(0x0800), []byte{0x55}, ipv4(5, 0, 6)[1:], l4),
		cat(eth(0x0806), make([]byte, 28)),
		cat(eth(0x8100), vlan(100, 0x0800), ipv4(5, 0, 6), l4),
		cat(eth(0x88a8), vlan(200, 0x8100), vlan(300, 0x86dd), ipv6(17), l4),
		cat(eth(0x8100), vlan(1, 0x8100), vlan(2, 0x8100), vlan(3, 0x0800), ipv4(5, 0, 6), l4),
		cat(eth(0x8100), vlan(4095, 0x8847), mpls(17, true), ipv4(5, 0, 6), l4),
		cat(eth(0x8847), mpls(1, false), mpls(2, false), mpls(3, true), ipv6(6), l4),
		cat(eth(0x8848), mpls(0xfffff, true), ipv6(58), l4),
		cat(eth(0x8847), mpls(5, true), []byte{0x50}, l4), // payload nibble 5
		cat(eth(0x8847), mpls(1, false), mpls(2, false), mpls(3, false), mpls(4, false),
			mpls(5, false), mpls(6, false), mpls(7, false), mpls(8, true), ipv4(5, 0, 17), l4),
		cat(eth(0x8847), mpls(1, false), mpls(2, false), mpls(3, false), mpls(4, false),
			mpls(5, false), mpls(6, false), mpls(7, false), mpls(8, false), mpls(9, true), ipv4(5, 0, 17), l4),
		cat(eth(0x86dd), ipv6(6), l4),
		cat(eth(0x86dd), []byte{0x40}, ipv6(6)[1:], l4), // version 4 in an IPv6 EtherType
		cat(eth(0x86dd), ipv6(0), ext(43, 0, 8), ext(60, 1, 16), frag6(51, 0), ext(17, 1, 12), l4),
		cat(eth(0x86dd), ipv6(44), frag6(6, 0x0008), l4),  // not the first fragment
		cat(eth(0x86dd), ipv6(44), frag6(17, 0x0001), l4), // first fragment, M set
		cat(eth(0x86dd), ipv6(60), ext(60, 0, 8), ext(60, 0, 8), ext(60, 0, 8), ext(60, 0, 8),
			ext(60, 0, 8), ext(60, 0, 8), ext(6, 0, 8), l4), // 8 headers, then TCP
		cat(eth(0x86dd), ipv6(60), ext(60, 0, 8), ext(60, 0, 8), ext(60, 0, 8), ext(60, 0, 8),
			ext(60, 0, 8), ext(60, 0, 8), ext(60, 0, 8), ext(6, 0, 8), l4), // 9 headers
		cat(eth(0x86dd), ipv6(0), ext(6, 200, 16), l4),  // header longer than the frame
		cat(eth(0x86dd), ipv6(51), ext(6, 255, 16), l4), // AH longer than the frame
		cat(eth(0x86dd), ipv6(50), l4),                  // ESP
		cat(eth(0x86dd), ipv6(59), l4),                  // no next header
		cat(eth(0x86dd), ipv6(132), l4),
	}
	// Every truncation from 14 bytes up.
	var out [][]byte
	for _, f := range frames {
		for n := 14; n <= len(f); n++ {
			out = append(out, f[:n])
		}
	}
	return out
}

// TestParseMatchesGoEdgeCases compares the XDP program's keys with
// flow.Parse's on edgeFrames and on random corruptions of them.
func TestParseMatchesGoEdgeCases(t *testing.T) {
	p := testProgram(t, ProgramOptions{Config: ProgramConfig{}})
	next := newFlowReader(t, p)
	frames := edgeFrames()
	rng := rand.New(rand.NewPCG(1, 2))
	for i, n := 0, len(frames); i < n; i++ {
		// Flip 3 random bits from the EtherType on.
		f := append([]byte(nil), frames[i]...)
		for range 3 {
			f[12+rng.IntN(len(f)-12)] ^= byte(1 << rng.IntN(8))
		}
		frames = append(frames, f)
	}
	keys := make(map[uint64]flow.Key)
	tcpFlags := make(map[flow.Key]uint32) // OR of flow.TCPFlags per Go key
	var disagree int
	for i, f := range frames {
		_, metaB, _ := mustRun(t, p, f)
		meta, err := ParseMeta(metaB)
		if err != nil {
			t.Fatal(err)
		}
		for {
			rec, ok := next()
			if !ok {
				break
			}
			keys[rec.FlowID] = rec.Key
		}
		bpfKey, ok := keys[meta.FlowID]
		if !ok {
			t.Fatalf("frame %d: flow id %#x without a new_flows record", i, meta.FlowID)
		}
		want := goKey(f)
		if bpfKey != want {
			disagree++
			if disagree <= 20 {
				t.Errorf("frame %d (%x): %s\n  bpf %v\n  go  %v", i, f, keyDiff(bpfKey, want), bpfKey, want)
			}
		}
		tcpFlags[want] |= uint32(flow.TCPFlags(f, &want))
	}
	// The kernel's OR of each flow's TCP flags is Go's.
	for k, want := range tcpFlags {
		var v FlowValue
		if err := p.Flows().Lookup(&k, &v); err != nil {
			continue // a key the kernel did not agree on, reported above
		}
		if v.TcpFlags != want {
			disagree++
			t.Errorf("flow %v: kernel tcp flags %#x, flow.TCPFlags %#x", k, v.TcpFlags, want)
		}
	}
	t.Logf("%d frames, %d flows, %d disagreements", len(frames), len(keys), disagree)
}
