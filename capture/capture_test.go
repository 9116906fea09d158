//go:build linux

package capture

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/pcapio"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

const testMTU = 9000

// newVeth is a veth pair with jumbo frames on both ends.
func newVeth(tb testing.TB) *testutil.Veth {
	tb.Helper()
	v := testutil.NewVeth(tb)
	testutil.Run(tb, "ip", "link", "set", v.Host, "mtu", fmt.Sprint(testMTU))
	v.InNS(tb, "ip", "link", "set", v.Peer, "mtu", fmt.Sprint(testMTU))
	return v
}

// testFrames returns every frame of the Ethernet test captures that a veth
// with testMTU carries.
func testFrames(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, c := range testpcaps.Ethernet(tb, "") {
		for _, p := range c.Packets {
			if len(p.Data) < 14 || len(p.Data) > testMTU+14 {
				continue
			}
			out = append(out, p.Data)
		}
	}
	return out
}

// udpFrame is an IPv4/UDP frame from src to 10.0.0.1:9 with payload.
func udpFrame(src netip.Addr, sport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	s := src.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], []byte{10, 0, 0, 1})
	putUDP(ip[20:], sport, payload)
	return f
}

// putUDP writes a UDP header from sport to port 9 and payload into udp.
func putUDP(udp []byte, sport uint16, payload []byte) {
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
}

func openSpool(tb testing.TB, dir string) *spool.Spool {
	tb.Helper()
	cfg := spool.DefaultConfig()
	cfg.Dirs = []string{dir}
	sp, err := spool.Open(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("open spool: %v", err)
	}
	return sp
}

func testConfig(pinRoot string, ifaces ...string) Config {
	cfg := DefaultConfig()
	cfg.Interfaces = ifaces
	cfg.PinRoot = pinRoot
	// Auto would choose AF_PACKET on veth; the AF_PACKET tests say so.
	cfg.Method = MethodXDP
	// Small UMEMs and rings: tests run several captures side by side.
	cfg.UMEMFrames = 4096
	cfg.AFPacketBlockSize = 1 << 20
	cfg.AFPacketBlocks = 16
	return cfg
}

// mustStart starts a capture with cfg on sp, failing the test if it cannot.
func mustStart(tb testing.TB, cfg Config, sp *spool.Spool) *Capture {
	tb.Helper()
	c, err := Start(context.Background(), cfg, sp, testLogger(tb))
	if err != nil {
		tb.Fatalf("start: %+v", err)
	}
	return c
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitPackets waits until the capture has stored want packets, failing
// after timeout.
func waitPackets(tb testing.TB, c *Capture, want uint64, timeout time.Duration) Stats {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.Stats()
		_, _, stored := st.Totals()
		if stored >= want {
			return st
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(st, "", "  ")
			tb.Fatalf("after %v: %d of %d packets stored; stats:\n%s", timeout, stored, want, js)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answerWriter gathers a query's answer.
type answerWriter struct {
	data   []string
	ifaces []string
}

func (c *answerWriter) WritePacket(_ int64, _ int, data []byte, iface string) error {
	c.data = append(c.data, string(data))
	c.ifaces = append(c.ifaces, iface)
	return nil
}

func (c *answerWriter) Flush() error { return nil }

// answer runs q on sp and returns the packets, sorted, as a multiset.
func answer(tb testing.TB, sp *spool.Spool, q string) []string {
	tb.Helper()
	pq, err := query.Parse(q, time.Now())
	if err != nil {
		tb.Fatalf("parse %q: %v", q, err)
	}
	var c answerWriter
	if _, err := engine.Run(context.Background(), sp, pq, &c, engine.Options{}); err != nil {
		tb.Fatalf("query %q: %v", q, err)
	}
	slices.Sort(c.data)
	return c.data
}

// checkGone checks what a clean stop leaves: sealed indexes, no pins, no
// XDP program on the interfaces.
func checkGone(tb testing.TB, spoolDir, pinRoot string, ifaces ...string) {
	tb.Helper()
	idx, _ := filepath.Glob(filepath.Join(spoolDir, "*.idx"))
	pcaps, _ := filepath.Glob(filepath.Join(spoolDir, "*.pcap"))
	if len(idx) == 0 || len(idx) != len(pcaps) {
		tb.Errorf("after Close: %d indexes for %d pcap files", len(idx), len(pcaps))
	}
	ents, err := os.ReadDir(pinRoot)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".debug") {
			tb.Errorf("after Close the pin root holds %s", e.Name())
		}
	}
	for _, ifc := range ifaces {
		if out := testutil.Run(tb, "ip", "link", "show", "dev", ifc); strings.Contains(out, " xdp") {
			tb.Errorf("after Close an XDP program is still attached:\n%s", out)
		}
	}
}

func TestCaptureReplay(t *testing.T) { testReplay(t, MethodXDP, nil) }

// testReplay replays every test frame and the hand-built VLAN frames
// through a veth into a capture by method, and checks that every packet is
// captured and stored, bytes identical (VLAN tags included), that queries
// answer exactly what they answer on spool.Import of the same frames, that
// a new packet is queryable within a second, and that Close leaves nothing
// behind. It returns the counters from before Close.
func testReplay(t *testing.T, method string, mod func(*Config)) Stats {
	testutil.RequireRoot(t)
	v := newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()
	frames := append(testFrames(t), vlanFrames()...)
	tagged := 0
	for _, f := range frames {
		if et := binary.BigEndian.Uint16(f[12:]); et == 0x8100 || et == 0x88a8 {
			tagged++
		}
	}
	t.Logf("%d frames, %d of them VLAN tagged", len(frames), tagged)
	sp := openSpool(t, dir)
	cfg := testConfig(root, v.Host)
	cfg.Method = method
	if mod != nil {
		mod(&cfg)
	}
	c := mustStart(t, cfg, sp)
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
			sp.Close()
		}
	})

	// Pace the sender on what the capture has received, so that the
	// veth's own queue never overflows: the test is about the capture.
	s := testutil.NewSender(t, v)
	var sentBytes uint64
	for i, f := range frames {
		s.Send(t, f)
		sentBytes += uint64(len(f))
		if i%256 == 255 {
			waitPackets(t, c, uint64(i+1-128), 10*time.Second)
		}
	}
	st := waitPackets(t, c, uint64(len(frames)), 20*time.Second)
	time.Sleep(100 * time.Millisecond) // anything beyond what was sent would show now
	st = c.Stats()
	packets, byteCount, stored := st.Totals()
	t.Logf("sent %d frames, %d bytes; captured %d packets, %d bytes, stored %d", len(frames), sentBytes, packets, byteCount, stored)
	if packets != uint64(len(frames)) || stored != packets || byteCount != sentBytes {
		t.Errorf("captured %d packets (%d bytes), stored %d; sent %d (%d bytes)", packets, byteCount, stored, len(frames), sentBytes)
	}
	is := st.Interfaces[0]
	if st.Method != method || is.Method != method {
		t.Errorf("method %q, interface method %q (%s), want %q", st.Method, is.Method, is.MethodReason, method)
	}
	switch method {
	case MethodXDP:
		if p := is.Program; p == nil || p.Packets != uint64(len(frames)) || p.Redirected != p.Packets || p.RedirectFailed != 0 || p.RingBufFull != 0 {
			t.Errorf("program counters: %+v (%s)", is.Program, is.ProgramError)
		}
	case MethodAFPacket:
		var offered uint64
		for _, q := range is.Queues {
			if q.Ring != nil {
				offered += q.Ring.Packets
			}
		}
		if offered != uint64(len(frames)) {
			t.Errorf("the rings were offered %d packets, want %d", offered, len(frames))
		}
		if cfg.XDPObserve {
			if p := is.Program; !is.Observe || p == nil || p.Packets != uint64(len(frames)) || p.Passed != p.Packets || p.RingBufFull != 0 || p.NewFlows == 0 {
				t.Errorf("observing program counters: %+v (%s)", is.Program, is.ProgramError)
			} else {
				t.Logf("observing program: %d packets, %d passed, %d flows, %d vlan, attach %s", p.Packets, p.Passed, p.NewFlows, p.ParseVLAN, is.Attach)
			}
		} else if is.Program != nil || is.Observe {
			t.Errorf("an XDP program runs although not asked for: %+v", is.Program)
		}
	}
	for _, q := range is.Queues {
		if q.SpoolWriteErrors != 0 || q.ReceiveError != "" {
			t.Errorf("queue %d: write errors %d, receive error %q", q.Queue, q.SpoolWriteErrors, q.ReceiveError)
		}
		switch method {
		case MethodXDP:
			if s := q.Socket; s == nil || *s != (xdp.SocketStats{}) {
				t.Errorf("queue %d: socket %+v (%s)", q.Queue, q.Socket, q.SocketError)
			}
			if q.KeysFromFlowID == 0 {
				t.Errorf("queue %d: no packet keyed through its flow id", q.Queue)
			}
		case MethodAFPacket:
			if r := q.Ring; r == nil || r.Drops != 0 || r.Malformed != 0 || r.Delivered != q.Packets || q.KeysParsed != q.Packets {
				t.Errorf("queue %d: ring %+v (%s), %d packets, %d keyed by the parser", q.Queue, q.Ring, q.RingError, q.Packets, q.KeysParsed)
			}
		}
		t.Logf("queue %d: %d packets, keys from flow ids %d, parsed %d, writer stalls %d, truncated %d, cpu %d, zero-copy %v, multi-buffer %v, ring %+v",
			q.Queue, q.Packets, q.KeysFromFlowID, q.KeysParsed, q.WriterStalls, q.Truncated, q.CPU, q.ZeroCopy, q.MultiBuffer, q.Ring)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Errorf("stats do not marshal: %v", err)
	}
	checkMetrics(t, c, method, uint64(len(frames)))

	// The same frames through spool.Import give the reference answers.
	// "after 1h ago" is every packet: the stored bytes are the sent bytes.
	ref := importFrames(t, frames)
	var host, vlan string
	for _, f := range frames {
		var k flow.Key
		flow.Parse(f, &k)
		if host == "" && k.Flags&flow.FlagIPv4 != 0 {
			host = "host " + k.SrcAddr().String()
		}
		if vlan == "" && k.Flags&flow.FlagVLAN0 != 0 {
			vlan = fmt.Sprintf("vlan %d", k.VLAN[0])
		}
	}
	queries := []string{"tcp", "udp", "port 53", host, "not tcp", "ip6", "after 1h ago",
		"vlan 100", "vlan 200", "vlan 300", "vlan 0 and udp", "net 192.0.2.0/24"}
	if vlan != "" && !slices.Contains(queries, vlan) {
		queries = append(queries, vlan)
	}
	for _, q := range queries {
		got, want := answer(t, sp, q), answer(t, ref, q)
		if !slices.Equal(got, want) {
			t.Errorf("%q: %d packets from the capture, %d from the import", q, len(got), len(want))
		} else {
			t.Logf("%q: %d packets, same as the import", q, len(got))
		}
		if len(want) == 0 {
			t.Errorf("%q matches nothing: the comparison tests nothing", q)
		}
	}

	// Freshness: a new packet is queryable within a second.
	t.Run("fresh", func(t *testing.T) {
		var worst time.Duration
		for i := range 5 {
			src := netip.AddrFrom4([4]byte{10, 250, 0, byte(1 + i)})
			sent := time.Now()
			s.Send(t, udpFrame(src, 4000, []byte("fresh")))
			for {
				if got := answer(t, sp, "host "+src.String()); len(got) == 1 {
					worst = max(worst, time.Since(sent))
					break
				}
				if time.Since(sent) > time.Second {
					t.Fatalf("packet %d not queryable after 1s", i)
				}
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("each of 5 packets queryable within %v", worst)
	})

	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := sp.Close(); err != nil {
		t.Errorf("close spool: %v", err)
	}
	checkGone(t, dir, root, v.Host)
	return st
}

// vlanFrames are hand-built tagged frames, IPv4/UDP from 192.0.2.x: one
// 802.1Q tag (VLAN 100, priority 5), a priority tag (VLAN 0), QinQ with an
// 802.1ad outer tag (200 over 300), QinQ with two 802.1Q tags (100 over
// 300), and a 0x9100 outer tag the kernel does not strip.
func vlanFrames() [][]byte {
	tagged := func(src byte, tags ...uint32) []byte {
		inner := udpFrame(netip.AddrFrom4([4]byte{192, 0, 2, src}), 5000+uint16(src), []byte("tagged frame payload"))
		f := append([]byte(nil), inner[:12]...)
		for _, tag := range tags {
			f = binary.BigEndian.AppendUint32(f, tag)
		}
		return append(f, inner[12:]...)
	}
	return [][]byte{
		tagged(1, 0x8100<<16|5<<13|100),
		tagged(2, 0x8100<<16|3<<13), // priority tag: VLAN 0
		tagged(3, 0x88a8<<16|200, 0x8100<<16|300),
		tagged(4, 0x8100<<16|100, 0x8100<<16|300),
		tagged(5, 0x9100<<16|200, 0x8100<<16|300),
		tagged(6, 0x8100<<16|1<<12|100), // DEI set
	}
}

// importFrames stores frames in a new spool through spool.Import.
func importFrames(tb testing.TB, frames [][]byte) *spool.Spool {
	tb.Helper()
	var buf bytes.Buffer
	pw, err := pcapio.NewPcapWriter(&buf, 262144)
	if err != nil {
		tb.Fatal(err)
	}
	ts := time.Now().Add(-time.Minute).UnixNano()
	for i, f := range frames {
		if err := pw.WritePacket(ts+int64(i), len(f), f, ""); err != nil {
			tb.Fatal(err)
		}
	}
	if err := pw.Flush(); err != nil {
		tb.Fatal(err)
	}
	sp := openSpool(tb, tb.TempDir())
	w, err := sp.NewWriter("import", "import")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := spool.Import(context.Background(), w, "frames", &buf); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sp.Close() })
	return sp
}

// checkMetrics gathers the collectors through a pedantic registry.
func checkMetrics(tb testing.TB, c *Capture, method string, packets uint64) {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c.Collectors()[0]); err != nil {
		tb.Fatalf("register collectors: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() != nil {
				found[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"stenod_capture_packets_total":           float64(packets),
		"stenod_xdp_packets_total":               float64(packets),
		"stenod_xsk_rx_ring_full_total":          0,
		"stenod_capture_keys_from_flow_id_total": -1,
	}
	if method == MethodAFPacket {
		want = map[string]float64{
			"stenod_capture_packets_total":        float64(packets),
			"stenod_capture_keys_parsed_total":    float64(packets),
			"stenod_afpacket_packets_total":       float64(packets),
			"stenod_afpacket_drops_total":         0,
			"stenod_afpacket_queue_freezes_total": 0,
		}
	}
	for name, want := range want {
		got, ok := found[name]
		if !ok || (want >= 0 && got != want) {
			tb.Errorf("metric %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}

func TestCaptureTwoInterfaces(t *testing.T) {
	testutil.RequireRoot(t)
	v1, v2 := newVeth(t), newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	c, err := Start(context.Background(), testConfig(root, v1.Host, v2.Host), sp, testLogger(t))
	if err != nil {
		t.Fatalf("start: %+v", err)
	}
	s1, s2 := testutil.NewSender(t, v1), testutil.NewSender(t, v2)
	const n = 50
	for i := range n {
		s1.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 1, 0, 1}), uint16(1000+i), []byte("one")))
		s2.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 2, 0, 1}), uint16(1000+i), []byte("two")))
	}
	waitPackets(t, c, 2*n, 10*time.Second)
	waitQuery(t, sp, "udp", 2*n)

	pq, err := query.Parse("udp", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pw, err := pcapio.NewPcapngWriter(&out, 65535)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Run(context.Background(), sp, pq, pw, engine.Options{}); err != nil {
		t.Fatal(err)
	}
	rd, err := pcapio.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var p pcapio.Packet
	for {
		err := rd.Next(&p)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := rd.Interfaces()[p.Interface].Name
		var k flow.Key
		flow.Parse(p.Data, &k)
		want := map[string]string{"10.1.0.1": v1.Host, "10.2.0.1": v2.Host}[k.SrcAddr().String()]
		if name != want {
			t.Errorf("packet from %v recorded on interface %q, want %q", k.SrcAddr(), name, want)
		}
		count[name]++
	}
	if count[v1.Host] != n || count[v2.Host] != n {
		t.Errorf("packets per interface in the pcapng answer: %v, want %d each", count, n)
	}
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkGone(t, dir, root, v1.Host, v2.Host)
}

// The crash test runs a capture in a child process (this test binary) and
// kills it with SIGKILL, leaving its pins, its attached program and an
// unsealed spool file behind.
const crashEnv = "STENOD_CAPTURE_CRASH_CHILD"

func TestCrashChild(t *testing.T) {
	args := os.Getenv(crashEnv)
	if args == "" {
		t.Skip("only runs as the child of TestCaptureTakeover")
	}
	f := strings.Split(args, ",")
	sp := openSpool(t, f[2])
	if _, err := Start(context.Background(), testConfig(f[1], f[0]), sp, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("start: %+v", err)
	}
	fmt.Println("ready")
	select {}
}

func TestCaptureTakeover(t *testing.T) {
	testutil.RequireRoot(t)
	v := newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()

	child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	child.Env = append(os.Environ(), crashEnv+"="+strings.Join([]string{v.Host, root, dir}, ","))
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("child ended before it was ready: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready after 30s")
	}

	s := testutil.NewSender(t, v)
	const n = 20
	for i := range n {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 3, 0, 1}), uint16(2000+i), []byte("before the crash")))
	}
	// An idle writer flushes at once; give it time to see the packets.
	time.Sleep(500 * time.Millisecond)
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if out := testutil.Run(t, "ip", "link", "show", "dev", v.Host); !strings.Contains(out, " xdp") {
		t.Fatalf("after kill -9 no XDP program is attached: the test tests nothing\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(root, v.Host, "link")); err != nil {
		t.Fatalf("after kill -9 the link pin is gone: %v", err)
	}

	sp := openSpool(t, dir)
	c, err := Start(context.Background(), testConfig(root, v.Host), sp, testLogger(t))
	if err != nil {
		t.Fatalf("start over the crashed run's pins: %+v", err)
	}
	for i := range n {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 4, 0, 1}), uint16(2000+i), []byte("after the crash")))
	}
	waitPackets(t, c, n, 10*time.Second)
	if got := len(answer(t, sp, "host 10.3.0.1")); got != n {
		t.Errorf("%d packets of the crashed run queryable, want %d", got, n)
	}
	// Stored is appended: the packets become queryable at the writer's
	// next flush.
	waitQuery(t, sp, "host 10.4.0.1", n)
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkGone(t, dir, root, v.Host)
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Interfaces = []string{"eth0"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config with an interface: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no interface":   func(c *Config) { c.Interfaces = nil },
		"twice":          func(c *Config) { c.Interfaces = []string{"eth0", "eth0"} },
		"long name":      func(c *Config) { c.Interfaces = []string{"abcdefghijklmnopq"} },
		"method":         func(c *Config) { c.Method = "pcap" },
		"xdp mode":       func(c *Config) { c.XDPMode = "offload" },
		"cpu":            func(c *Config) { c.CPUs = []int{-1} },
		"umem":           func(c *Config) { c.UMEMFrames = 10 },
		"flush":          func(c *Config) { c.FlushInterval = 2 * time.Second },
		"snaplen":        func(c *Config) { c.SnapLen = 10 },
		"zero flush":     func(c *Config) { c.FlushInterval = 0 },
		"snaplen > max":  func(c *Config) { c.SnapLen = 1 << 20 },
		"umem too large": func(c *Config) { c.UMEMFrames = 1 << 30 },
		"rings":          func(c *Config) { c.AFPacketRings = -1 },
		"many rings":     func(c *Config) { c.AFPacketRings = 100000 },
		"block size":     func(c *Config) { c.AFPacketBlockSize = 4096 },
		"block page":     func(c *Config) { c.AFPacketBlockSize = 100000 },
		"one block":      func(c *Config) { c.AFPacketBlocks = 1 },
		"ring too large": func(c *Config) { c.AFPacketBlockSize, c.AFPacketBlocks = 1<<30, 1<<20 },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
}

// BenchmarkWriterStore measures the writer side: flow keys from the id
// table or flow.Parse, and spool appends, per batch of test packets.
func BenchmarkWriterStore(b *testing.B) {
	b.Run("disk", func(b *testing.B) { benchmarkStore(b, b.TempDir()) })
	// On tmpfs the write(2) costs memory copies only: the CPU cost.
	b.Run("tmpfs", func(b *testing.B) {
		dir, err := os.MkdirTemp("/dev/shm", "stenod-bench-")
		if err != nil {
			b.Skip(err)
		}
		defer os.RemoveAll(dir)
		benchmarkStore(b, dir)
	})
}

func benchmarkStore(b *testing.B, dir string) {
	frames := testFrames(b)
	sp := openSpool(b, dir)
	defer sp.Close()
	w, err := sp.NewWriter("bench-q0", "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	ids := newFlowIDs(maxFlowIDs)
	bt := newBatch(batchBytes, batchPackets, 0, 0)
	var recs []xdp.NewFlowRecord
	ts := time.Now().UnixNano()
	for i, f := range frames {
		if len(bt.pkts) == 1024 {
			break
		}
		// Every other packet has a known flow id, the rest need the parser.
		id := uint64(0)
		if i%2 == 0 {
			id = uint64(i + 1)
			var k flow.Key
			flow.Parse(f, &k)
			recs = append(recs, xdp.NewFlowRecord{FlowID: id, Key: k})
		}
		bt.add(ts+int64(i), id, len(f), f)
	}
	ids.add(recs)
	q := &queue{stream: "bench-q0", ids: ids, w: w, log: slog.New(slog.DiscardHandler)}
	q.writeLog = errLog{log: q.log, every: time.Second}
	b.ReportAllocs()
	b.SetBytes(int64(len(bt.data)))
	b.ResetTimer()
	for range b.N {
		q.store(bt)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bt.pkts)), "ns/packet")
	if q.writeErrors.Load() != 0 {
		b.Fatalf("%d write errors", q.writeErrors.Load())
	}
}

func TestCaptureObserve(t *testing.T) {
	testutil.RequireRoot(t)
	v := newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	cfg := testConfig(root, v.Host)
	cfg.Observe = true
	c := mustStart(t, cfg, sp)
	s := testutil.NewSender(t, v)
	for i := range 10 {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 5, 0, 1}), uint16(3000+i), []byte("observed")))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := c.Stats()
		is := st.Interfaces[0]
		if is.Program != nil && is.Program.Passed == 10 && is.Program.Packets == 10 {
			if len(is.Queues) != 0 {
				t.Errorf("observe mode has queues: %+v", is.Queues)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observe counters: %+v (%s)", is.Program, is.ProgramError)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	if files := sp.Files(); len(files) != 0 {
		t.Errorf("observe mode stored %d files", len(files))
	}
}
