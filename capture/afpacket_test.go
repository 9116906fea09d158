//go:build linux

package capture

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

func TestAFPacketReplay(t *testing.T) {
	st := testReplay(t, MethodAFPacket, nil)
	q := st.Interfaces[0].Queues
	if len(q) == 0 || q[0].CPU != runtime.NumCPU()-1 || (runtime.NumCPU() <= 3 && len(q) != 1) {
		t.Errorf("queues %+v: want the first ring read on the last CPU, one ring with up to three CPUs", q)
	}
}

// Two rings in a PACKET_FANOUT_HASH group: the flows are spread over both,
// and every packet is still stored once.
func TestAFPacketReplayFanout(t *testing.T) {
	st := testReplay(t, MethodAFPacket, func(c *Config) { c.AFPacketRings = 2 })
	qs := st.Interfaces[0].Queues
	if len(qs) != 2 || qs[0].Packets == 0 || qs[1].Packets == 0 {
		t.Errorf("want two rings that both received packets: %+v", qs)
	}
}

// With XDPObserve the XDP program runs in observe mode while AF_PACKET
// stores the packets: its counters and new-flow records join Stats.
func TestAFPacketReplayXDPObserve(t *testing.T) {
	testReplay(t, MethodAFPacket, func(c *Config) { c.XDPObserve = true })
}

// ringHold stops every AF_PACKET reader at its next block while held, so
// that a test can fill the ring behind it.
type ringHold struct {
	held    atomic.Bool
	release chan struct{}
	once    sync.Once
}

func holdRings(t *testing.T) *ringHold {
	h := &ringHold{release: make(chan struct{})}
	testHookRingBlock = func(string) {
		if h.held.Load() {
			<-h.release
		}
	}
	t.Cleanup(func() { testHookRingBlock = nil })
	return h
}

func (h *ringHold) hold() { h.held.Store(true) }

// let releases the readers for good; calling it again does nothing.
func (h *ringHold) let() {
	h.held.Store(false)
	h.once.Do(func() { close(h.release) })
}

// Auto chooses AF_PACKET on veth, which has no AF_XDP zero-copy, and says
// why, in the log and in Stats.
func TestAFPacketAuto(t *testing.T) {
	testutil.RequireRoot(t)
	v := newVeth(t)
	root := testutil.BPFFS(t)
	dir := t.TempDir()
	sp := openSpool(t, dir)
	cfg := testConfig(root, v.Host)
	cfg.Method = MethodAuto

	for _, c := range []struct {
		mod          func(*Config)
		method, want string
	}{
		{func(*Config) {}, MethodAFPacket, "zero-copy"},
		{func(c *Config) { c.XDPMode = XDPModeGeneric }, MethodAFPacket, "generic"},
		{func(c *Config) { c.Method = MethodXDP }, MethodXDP, "configuration"},
		{func(c *Config) { c.Observe = true }, MethodXDP, "observe"},
	} {
		c2 := cfg
		c.mod(&c2)
		method, reason := chooseMethod(v.Host, &c2)
		t.Logf("method %s: %s", method, reason)
		if method != c.method || !strings.Contains(reason, c.want) {
			t.Errorf("chooseMethod = %s (%s), want %s and a reason with %q", method, reason, c.method, c.want)
		}
	}

	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c, err := Start(context.Background(), cfg, sp, log)
	if err != nil {
		t.Fatalf("start: %+v", err)
	}
	st := c.Stats()
	is := st.Interfaces[0]
	if st.Method != MethodAFPacket || is.Method != MethodAFPacket || !strings.Contains(is.MethodReason, "zero-copy") {
		t.Errorf("auto on veth: method %s, interface method %s (%s)", st.Method, is.Method, is.MethodReason)
	}
	if out := logs.String(); !strings.Contains(out, "method=afpacket") || !strings.Contains(out, "no AF_XDP zero-copy") {
		t.Errorf("the log does not say which method and why:\n%s", out)
	} else {
		t.Logf("log:\n%s", out)
	}
	s := testutil.NewSender(t, v)
	const n = 20
	for i := range n {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 6, 0, 1}), uint16(6000+i), []byte("auto")))
	}
	waitPackets(t, c, n, 10*time.Second)
	waitQuery(t, sp, "host 10.6.0.1", n)
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkGone(t, dir, root, v.Host)
}

// afpacketRig is what the AF_PACKET tests share: root, a veth pair, a pin
// root, a spool in a temporary directory, and a configuration capturing the
// veth's host end with AF_PACKET.
func afpacketRig(t *testing.T) (v *testutil.Veth, pinRoot, dir string, sp *spool.Spool, cfg Config) {
	t.Helper()
	testutil.RequireRoot(t)
	v = newVeth(t)
	pinRoot = testutil.BPFFS(t)
	dir = t.TempDir()
	sp = openSpool(t, dir)
	cfg = testConfig(pinRoot, v.Host)
	cfg.Method = MethodAFPacket
	return v, pinRoot, dir, sp, cfg
}

// A tiny ring (two 64 KiB blocks) whose reader is held back overflows:
// the kernel's drops (PACKET_STATISTICS) appear in Stats and in the
// metrics, and every packet sent is either stored or counted as dropped.
func TestAFPacketDrops(t *testing.T) {
	v, root, dir, sp, cfg := afpacketRig(t)
	cfg.AFPacketRings = 1
	cfg.AFPacketBlockSize = 64 << 10
	cfg.AFPacketBlocks = 2

	h := holdRings(t)

	c := mustStart(t, cfg, sp)
	closed := false
	t.Cleanup(func() {
		if !closed {
			h.let()
			c.Close()
			sp.Close()
		}
	})
	s := testutil.NewSender(t, v)
	h.hold()
	const n = 500
	payload := bytes.Repeat([]byte{0x5a}, 1000)
	for i := range n {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 7, 0, 1}), uint16(i), payload))
	}
	h.let()

	var st Stats
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = c.Stats()
		q := st.Interfaces[0].Queues[0]
		if q.Ring != nil && q.Stored+q.Ring.Drops >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %d, ring %+v (%s): want stored + drops = %d", q.Stored, q.Ring, q.RingError, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	q := st.Interfaces[0].Queues[0]
	t.Logf("sent %d: stored %d, ring %+v", n, q.Stored, *q.Ring)
	if r := q.Ring; r.Drops == 0 || r.QueueFreezes == 0 || q.Stored+r.Drops != n || r.Packets != n || r.Delivered != q.Stored {
		t.Errorf("sent %d: stored %d, ring %+v: want drops, and stored + drops = offered = sent", n, q.Stored, *r)
	}
	waitQuery(t, sp, "host 10.7.0.1", int(q.Stored))
	drops := gatherCounter(t, c, "stenod_afpacket_drops_total")
	if drops != float64(q.Ring.Drops) {
		t.Errorf("stenod_afpacket_drops_total = %v, want %d", drops, q.Ring.Drops)
	}
	closed = true
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkGone(t, dir, root, v.Host)
}

// waitQuery waits until q answers want packets: stored packets become
// queryable at the reader's next flush, once its ring is idle.
func waitQuery(tb testing.TB, sp *spool.Spool, q string, want int) {
	tb.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got := len(answer(tb, sp, q))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%q: %d packets after 1s, want %d", q, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gatherCounter sums a counter over its labels.
func gatherCounter(tb testing.TB, c *Capture, name string) float64 {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c.Collectors()[0]); err != nil {
		tb.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// Drop rules need the XDP program, so AF_PACKET capture loads it in
// observe mode even without XDPObserve: dropped frames never reach the
// ring, are counted by the program, and its maps are pinned for bpftool
// while the capture runs. Close removes all of it.
func TestAFPacketDropRules(t *testing.T) {
	v, root, dir, sp, cfg := afpacketRig(t)
	cfg.DropRules = []xdp.DropRule{{Proto: 17, Port: 7777}}
	c := mustStart(t, cfg, sp)
	s := testutil.NewSender(t, v)
	const n = 10
	for i := range n {
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 8, 0, 1}), 7777, []byte{byte(i)}))
		s.Send(t, udpFrame(netip.AddrFrom4([4]byte{10, 8, 0, 1}), 7778, []byte{byte(i)}))
	}
	waitPackets(t, c, n, 10*time.Second)
	var is InterfaceStats
	deadline := time.Now().Add(5 * time.Second)
	for {
		is = c.Stats().Interfaces[0]
		if p := is.Program; p != nil && p.Packets == 2*n && is.RingBufRecords == p.NewFlows {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("program counters %+v (%s), %d ring buffer records", is.Program, is.ProgramError, is.RingBufRecords)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := is.Program
	t.Logf("program: %+v; ring buffer records %d; attach %s", *p, is.RingBufRecords, is.Attach)
	if !is.Observe || p.DroppedByRule != n || p.Passed != n || p.NewFlows != 1 || p.RingBufFull != 0 {
		t.Errorf("observe %v, program %+v: want %d dropped by the rule, %d passed, one flow", is.Observe, *p, n, n)
	}
	waitQuery(t, sp, "port 7778", n)
	if got := len(answer(t, sp, "port 7777")); got != 0 {
		t.Errorf("%d packets of the dropped port stored", got)
	}
	for _, pin := range []string{xdp.PinFlows, xdp.PinStats, xdp.PinConfig, xdp.PinProgram, xdp.PinLink} {
		if _, err := os.Stat(filepath.Join(root, v.Host, pin)); err != nil {
			t.Errorf("pin %s: %v", pin, err)
		}
	}
	if bpftool, err := exec.LookPath("bpftool"); err == nil {
		out, err := exec.Command(bpftool, "-j", "map", "dump", "pinned", filepath.Join(root, v.Host, xdp.PinFlows)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"packets":10`) {
			t.Errorf("bpftool map dump of the flows: %v\n%s", err, out)
		}
	}
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkGone(t, dir, root, v.Host)
}

// TestAFPacketRate measures AF_PACKET capture on veth: trafgen sends
// minimum-size UDP frames as fast as it can from the peer's namespace (its
// one worker on CPU 0), and the capture stores them on tmpfs, with one
// ring, two rings, and one ring with the XDP program observing. tcpdump -w
// /dev/null on the same traffic is the reference.
//
//	STENOD_BENCH=1 [STENOD_BENCH_PACKETS=3000000] go test ./capture -run AFPacketRate -v
func TestAFPacketRate(t *testing.T) {
	if os.Getenv("STENOD_BENCH") == "" {
		t.Skip("capture benchmark: set STENOD_BENCH=1")
	}
	testutil.RequireCommand(t, "trafgen")
	count := testutil.EnvInt(t, "STENOD_BENCH_PACKETS", 3_000_000)
	for _, c := range []struct {
		name string
		mod  func(*Config)
	}{
		{"tcpdump", nil},
		{"1-ring", func(c *Config) {}},
		{"1-ring-xdp-observe", func(c *Config) { c.XDPObserve = true }},
		{"2-rings", func(c *Config) { c.AFPacketRings = 2 }},
	} {
		t.Run(c.name, func(t *testing.T) { captureRate(t, count, c.mod) })
	}
	t.Run("1-ring-drain", drainRate)
}

// drainRate holds the reader back while trafgen fills the ring, then
// times the reader storing it all: the reader's own rate, with the sender
// out of the way.
func drainRate(t *testing.T) {
	v := testutil.NewVeth(t)
	conf := filepath.Join(t.TempDir(), "udp64.cfg")
	if err := os.WriteFile(conf, []byte(trafgenConf), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/dev/shm", "stenod-rate-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sp := openSpool(t, dir)
	cfg := testConfig(testutil.BPFFS(t), v.Host)
	cfg.Method = MethodAFPacket
	cfg.AFPacketBlockSize = 4 << 20
	cfg.AFPacketBlocks = 64
	h := holdRings(t)
	h.hold()
	c := mustStart(t, cfg, sp)
	// Partly filled blocks retire after the 50 ms block timeout, so the
	// ring holds less than its 1.8 M minimum-size frames.
	const n = 600_000
	v.InNS(t, "trafgen", "--dev", v.Peer, "--conf", conf, "-P", "1", "--no-sock-mem", "--notouch-irq", "--ring-size", "64MiB", "-n", strconv.Itoa(n))
	time.Sleep(200 * time.Millisecond)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	h.let()
	var stored, drops uint64
	for {
		st := c.Stats()
		q := st.Interfaces[0].Queues[0]
		stored, drops = q.Stored, q.Ring.Drops
		if stored+drops >= n || time.Since(start) > 20*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	wall := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	t.Logf("stored %d packets (kernel drops %d) in %v: %.2f M packets/s; process CPU %.3f us per packet; %.5f allocations per packet (the whole process)",
		stored, drops, wall.Round(time.Millisecond), float64(stored)/wall.Seconds()/1e6, cpu.Seconds()*1e6/float64(max(stored, 1)),
		float64(ms.Mallocs-ms0.Mallocs)/float64(max(stored, 1)))
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatal(err)
	}
}

const trafgenConf = `{
  eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02, type=0x0800),
  ipv4(saddr=10.0.0.1, daddr=10.0.0.2, proto=17),
  udp(sp=dinc(1000, 1063), dp=9),
  fill(0x41, 18),
}
`

func captureRate(t *testing.T, count int, mod func(*Config)) {
	v := testutil.NewVeth(t)
	conf := filepath.Join(t.TempDir(), "udp64.cfg")
	if err := os.WriteFile(conf, []byte(trafgenConf), 0o644); err != nil {
		t.Fatal(err)
	}
	var c *Capture
	var sp *spool.Spool
	var td *exec.Cmd
	var tdOut testutil.SyncBuffer
	if mod == nil {
		td = exec.Command("tcpdump", "-i", v.Host, "-n", "-w", "/dev/null")
		td.Stderr = &tdOut
		if err := td.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	} else {
		dir, err := os.MkdirTemp("/dev/shm", "stenod-rate-")
		if err != nil {
			t.Skip(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sp = openSpool(t, dir)
		cfg := testConfig(testutil.BPFFS(t), v.Host)
		cfg.Method = MethodAFPacket
		cfg.AFPacketBlockSize = 4 << 20
		cfg.AFPacketBlocks = 64
		mod(&cfg)
		if c, err = Start(context.Background(), cfg, sp, testLogger(t)); err != nil {
			t.Fatal(err)
		}
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	v.InNS(t, "trafgen", "--dev", v.Peer, "--conf", conf, "-P", "1", "--no-sock-mem", "--notouch-irq", "--ring-size", "64MiB", "-n", strconv.Itoa(count))
	sendTime := time.Since(start)
	rx := sysfsStat(t, v.Host, "rx_packets")
	t.Logf("sent %d frames in %v: %.3f M packets/s", rx, sendTime.Round(time.Millisecond), float64(rx)/sendTime.Seconds()/1e6)
	if td != nil {
		time.Sleep(1500 * time.Millisecond)
		td.Process.Signal(syscall.SIGINT)
		td.Wait()
		t.Logf("tcpdump: %s", strings.Join(strings.Fields(tdOut.String()), " "))
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	var st Stats
	var stored, drops uint64
	for {
		st = c.Stats()
		stored, drops = 0, 0
		for _, q := range st.Interfaces[0].Queues {
			stored += q.Stored
			if q.Ring != nil {
				drops += q.Ring.Drops
			}
		}
		if stored+drops >= rx || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	t.Logf("stored %d, kernel drops %d, lost %d (%.3f%%); process CPU %.3f us per packet", stored, drops,
		rx-stored, 100*float64(rx-stored)/float64(rx), cpu.Seconds()*1e6/float64(max(stored, 1)))
	if p := st.Interfaces[0].Program; p != nil {
		t.Logf("xdp program: %d packets, %d passed, %d flows", p.Packets, p.Passed, p.NewFlows)
	}
	if err := errors.Join(c.Close(), sp.Close()); err != nil {
		t.Fatal(err)
	}
}

func sysfsStat(tb testing.TB, iface, name string) uint64 {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", iface, "statistics", name))
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestAFPacketCloseUnderTraffic: Close stores every packet that arrived
// before it and returns within about a block timeout even while packets
// keep coming, instead of reading on through the blocks filled after the
// stop (up to a ring's worth of block timeouts: 3.2 s here).
func TestAFPacketCloseUnderTraffic(t *testing.T) {
	v, _, _, sp, cfg := afpacketRig(t)
	cfg.AFPacketRings = 1
	cfg.AFPacketBlocks = 64 // 64 block timeouts of 50 ms
	c := mustStart(t, cfg, sp)
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
		sp.Close()
	})
	s := testutil.NewSender(t, v)
	frame := udpFrame(netip.AddrFrom4([4]byte{10, 8, 0, 1}), 4000, bytes.Repeat([]byte{0x3c}, 64))
	for range 2000 {
		s.Send(t, frame)
	}
	// What the ring received before Close: the veth may drop a burst
	// before the ring sees it, so count the ring, not the sender.
	before := ringReceived(t, c)
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		err := c.Close()
		done <- result{time.Since(start), err}
	}()
	closed = true
	var r result
	after := 0
sending:
	for {
		select {
		case r = <-done:
			break sending
		default:
			s.Send(t, frame)
			after++
		}
	}
	if r.err != nil {
		t.Fatalf("close: %v", r.err)
	}
	got := len(answer(t, sp, "host 10.8.0.1"))
	t.Logf("Close took %v; %d packets received before it, %d sent while it ran; %d stored", r.took, before, after, got)
	if got < before {
		t.Errorf("stored %d packets, want at least the %d the ring received before Close", got, before)
	}
	// One block timeout (50 ms) and the blocks ready at the stop are what
	// Close should take; 1 s leaves room for a slow machine, and is still
	// far below the 1.6-3.2 s of reading on through new blocks.
	if limit := time.Second; r.took > limit {
		t.Errorf("Close took %v under traffic, more than %v", r.took, limit)
	}
}

// ringReceived waits until the first ring's count of received packets
// stops moving and returns it, less the ring's drops.
func ringReceived(tb testing.TB, c *Capture) int {
	tb.Helper()
	last := -1
	deadline := time.Now().Add(5 * time.Second)
	for {
		q := c.Stats().Interfaces[0].Queues[0]
		if q.Ring == nil {
			tb.Fatalf("no ring stats: %s", q.RingError)
		}
		n := int(q.Ring.Packets - q.Ring.Drops)
		if n == last && n > 0 {
			return n
		}
		if time.Now().After(deadline) {
			tb.Fatalf("ring count still moving after 5s: %d", n)
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}
