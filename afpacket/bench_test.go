package afpacket

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// benchBlock is a full 4 MiB block of 60-byte frames (64 bytes on the wire
// with the FCS), every tagEvery-th one with a stripped VLAN tag (0: none).
func benchBlock(tagEvery int) []byte {
	f := ether(nil, unix.ETH_P_IP, udp4(1000, 9, 0, 18))
	var pkts []synthPkt
	for i := 0; (i+1)*((macOff+len(f)+15)&^15) < 4<<20-blockDescLen; i++ {
		p := synthPkt{data: f, origLen: len(f), sec: 1700000000, nsec: uint32(i)}
		if tagEvery > 0 && i%tagEvery == 0 {
			p.status = unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID
			p.tpid, p.tci = 0x8100, 100
		}
		pkts = append(pkts, p)
	}
	return buildBlock(4<<20, pkts)
}

// benchWalk measures the per-packet cost of walking blocks with a consumer
// that only counts; one op is one packet.
func benchWalk(b *testing.B, tagEvery int) {
	r := fakeRing(benchBlock(tagEvery))
	var n, bytes int
	fn := func(p *Packet) error {
		n++
		bytes += len(p.Data)
		return nil
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n < b.N {
		r.open()
		if err := r.walk(r.mem, fn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bytes)/float64(n), "B/pkt")
}

func BenchmarkWalk(b *testing.B)         { benchWalk(b, 0) }
func BenchmarkWalkVLAN(b *testing.B)     { benchWalk(b, 1) }
func BenchmarkWalkVLAN1in8(b *testing.B) { benchWalk(b, 8) }

// TestCaptureRate is the capture benchmark: trafgen sends minimum-size UDP
// frames as fast as it can from the namespace side of a veth pair; the Ring
// reads on the host side from a thread pinned to the other CPU, optionally
// with tcpdump capturing the same interface as the reference. It reports what
// was sent, received and dropped, and the reader's own CPU time per packet.
//
//	STENOD_BENCH=1 [STENOD_BENCH_PACKETS=10000000] go test ./afpacket -run CaptureRate -v
func TestCaptureRate(t *testing.T) {
	if os.Getenv("STENOD_BENCH") == "" {
		t.Skip("capture benchmark: set STENOD_BENCH=1")
	}
	testutil.RequireCommand(t, "trafgen")
	count := testutil.EnvInt(t, "STENOD_BENCH_PACKETS", 10_000_000)
	for _, c := range []struct {
		name    string
		tcpdump bool
		write   bool
	}{
		{"ring+tcpdump", true, false},
		{"ring", false, false},
		{"ring-writing", false, true},
	} {
		t.Run(c.name, func(t *testing.T) { captureRate(t, count, c.tcpdump, c.write) })
	}
	t.Run("drain", drainRate)
}

// drainRate fills the ring while nobody reads, then times the reader
// emptying it: how fast the reader goes when the sender is not the limit.
func drainRate(t *testing.T) {
	v := testutil.NewVeth(t)
	conf := filepath.Join(t.TempDir(), "udp64.cfg")
	if err := os.WriteFile(conf, []byte(trafgenConf), 0o644); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	// Blocks retire when full or after BlockTimeout, whichever comes first;
	// trafgen takes longer than the default 50 ms to fill a block here, so
	// the default would leave every block partly empty.
	o.BlockTimeout = time.Second
	r := openRing(t, v.Host, o)
	// 64 blocks of 4 MiB hold 64*29127 frames of 60 bytes (144 bytes each
	// with header and alignment).
	const n = 1_600_000
	v.InNS(t, "trafgen", "--dev", v.Peer, "--conf", conf, "-P", "1", "--no-sock-mem", "--notouch-irq", "--ring-size", "64MiB", "-n", strconv.Itoa(n))
	time.Sleep(2 * o.BlockTimeout)
	before, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	kept := before.Packets - before.Drops
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := readLoop(ctx, r, nil, kept)
	if res.err != nil {
		t.Fatal(res.err)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drained %d blocks, %d packets per block", res.blocks, res.delivered/max(res.blocks, 1))
	t.Logf("drained %d packets (kernel drops %d) in %v: %.2f M packets/s; %.3f us thread CPU per packet; %.4f allocations per packet",
		res.delivered, st.Drops, res.wall.Round(time.Millisecond), float64(res.delivered)/res.wall.Seconds()/1e6,
		res.threadCPU.Seconds()*1e6/float64(res.delivered), float64(res.mallocs)/float64(res.delivered))
	if res.delivered != kept || st.Malformed != 0 {
		t.Errorf("stats %+v, delivered %d, want the %d the kernel kept", st, res.delivered, kept)
	}
}

const trafgenConf = `{
  eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02, type=0x0800),
  ipv4(saddr=10.0.0.1, daddr=10.0.0.2, proto=17),
  udp(sp=dinc(1000, 1063), dp=9),
  fill(0x41, 18),
}
`

// readerCPU is where the reader thread runs; trafgen's one worker pins
// itself to CPU 0, and the veth receive path runs there in its context.
const readerCPU = 1

type readerResult struct {
	delivered, bytes uint64
	blocks           uint64
	threadCPU, wall  time.Duration
	mallocs          uint64
	err              error
}

func captureRate(t *testing.T, count int, withTcpdump, write bool) {
	v := testutil.NewVeth(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "udp64.cfg")
	if err := os.WriteFile(conf, []byte(trafgenConf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := openRing(t, v.Host, DefaultOptions())

	var td *tcpdump
	if withTcpdump {
		td = startTcpdump(t, v.Host)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out *os.File
	if write {
		var err error
		if out, err = os.Create(filepath.Join(dir, "spool")); err != nil {
			t.Fatal(err)
		}
		defer out.Close()
	}
	resCh := make(chan readerResult, 1)
	go func() { resCh <- readLoop(ctx, r, out, 0) }()

	rx0, drop0 := sysStat(t, v.Host, "rx_packets"), sysStat(t, v.Host, "rx_dropped")
	start := time.Now()
	tg := v.InNS(t, "trafgen", "--dev", v.Peer, "--conf", conf, "-P", "1", "--no-sock-mem", "--notouch-irq", "--ring-size", "64MiB", "-n", strconv.Itoa(count))
	sendTime := time.Since(start)
	rx, vethDrops := sysStat(t, v.Host, "rx_packets")-rx0, sysStat(t, v.Host, "rx_dropped")-drop0

	// Let the reader drain the ring, then stop it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, _ := r.Stats()
		if st.Delivered+st.Drops >= rx {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	res := <-resCh
	if res.err != nil && res.err != context.Canceled {
		t.Fatal(res.err)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("trafgen: %s", strings.Join(strings.Fields(grepLine(tg, "packets outgoing")), " "))
	t.Logf("sent %d frames of 60 bytes (64 on the wire) in %v: %.3f M packets/s; veth rx_dropped %d",
		rx, sendTime.Round(time.Millisecond), float64(rx)/sendTime.Seconds()/1e6, vethDrops)
	t.Logf("ring: received %d, kernel drops %d, kernel packets %d, queue freezes %d, malformed %d, lost %d (%.4f%%)",
		st.Delivered, st.Drops, st.Packets, st.QueueFreezes, st.Malformed, rx-st.Delivered, 100*float64(rx-st.Delivered)/float64(rx))
	t.Logf("ring reader: %.3f us thread CPU per packet (%v for %d packets), %.4f allocations per packet",
		res.threadCPU.Seconds()*1e6/float64(res.delivered), res.threadCPU.Round(time.Millisecond), res.delivered,
		float64(res.mallocs)/float64(max(res.delivered, 1)))
	if td != nil {
		// libpcap retires tcpdump's blocks after its 1 s timeout.
		time.Sleep(1500 * time.Millisecond)
		td.stop(t, rx)
	}
	if st.Malformed != 0 || st.Delivered != res.delivered || st.Delivered+st.Drops != st.Packets {
		t.Errorf("inconsistent counters: %+v, reader saw %d", st, res.delivered)
	}
	if st.Delivered != rx {
		t.Errorf("LOSS: %d of %d packets not delivered", rx-st.Delivered, rx)
	}
}

// readLoop reads r until ctx ends, on a thread pinned to readerCPU, and
// measures that thread's CPU time; with stopAt > 0 it stops after that many
// packets. With out set, it also does what a spool
// writer does: copy each packet behind a 16-byte record header into a 1 MiB
// buffer and write the buffer to out when full.
func readLoop(ctx context.Context, r *Ring, out *os.File, stopAt uint64) (res readerResult) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(readerCPU)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return readerResult{err: err}
	}
	var buf []byte
	var fileOff int64
	var writeErr error
	if out != nil {
		buf = make([]byte, 0, 1<<20)
	}
	count := func(p *Packet) error {
		res.delivered++
		res.bytes += uint64(len(p.Data))
		return nil
	}
	spool := func(p *Packet) error {
		res.delivered++
		res.bytes += uint64(len(p.Data))
		if len(buf)+16+len(p.Data) > cap(buf) {
			if _, err := out.WriteAt(buf, fileOff); err != nil && writeErr == nil {
				writeErr = err
			}
			// Keep the file at 256 MiB: page cache, not disk space, is
			// what this stands in for.
			fileOff = (fileOff + int64(len(buf))) % (256 << 20)
			buf = buf[:0]
		}
		buf = binary.LittleEndian.AppendUint64(buf, uint64(p.Timestamp))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(p.Data)))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(p.OrigLen))
		buf = append(buf, p.Data...)
		return nil
	}
	fn := count
	if out != nil {
		fn = spool
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs0 := ms.Mallocs
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	start := time.Now()
	for stopAt == 0 || res.delivered < stopAt {
		if err := r.Next(ctx, fn); err != nil {
			res.err = err
			break
		}
		res.blocks++
	}
	res.wall = time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	runtime.ReadMemStats(&ms)
	res.mallocs = ms.Mallocs - mallocs0
	res.threadCPU = time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	if res.err == context.Canceled && writeErr != nil {
		res.err = writeErr
	}
	return res
}

func sysStat(tb testing.TB, iface, name string) uint64 {
	tb.Helper()
	b, err := os.ReadFile("/sys/class/net/" + iface + "/statistics/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func grepLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

type tcpdump struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

// startTcpdump runs tcpdump -w /dev/null on iface with its defaults
// (TPACKET_V3, 2 MiB buffer, 262144-byte snap length) and waits until it
// captures.
func startTcpdump(tb testing.TB, iface string) *tcpdump {
	tb.Helper()
	testutil.RequireCommand(tb, "tcpdump")
	td := &tcpdump{cmd: exec.Command("tcpdump", "-i", iface, "-n", "-w", "/dev/null"), done: make(chan struct{})}
	pipe, err := td.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := td.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = td.cmd.Process.Kill(); _ = td.cmd.Wait() })
	listening := make(chan struct{})
	go func() {
		defer close(td.done)
		sc := bufio.NewScanner(pipe)
		once := sync.Once{}
		for sc.Scan() {
			td.mu.Lock()
			td.stderr.WriteString(sc.Text() + "\n")
			td.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		tb.Fatal("tcpdump did not start")
	}
	return td
}

var tcpdumpCount = regexp.MustCompile(`(\d+) packets? (captured|received by filter|dropped by kernel)`)

// stop ends tcpdump and reports its counts and CPU time.
func (td *tcpdump) stop(tb testing.TB, sent uint64) {
	tb.Helper()
	cpu := procCPU(td.cmd.Process.Pid)
	_ = td.cmd.Process.Signal(syscall.SIGINT)
	<-td.done
	_ = td.cmd.Wait()
	td.mu.Lock()
	out := td.stderr.String()
	td.mu.Unlock()
	counts := map[string]uint64{}
	for _, m := range tcpdumpCount.FindAllStringSubmatch(out, -1) {
		counts[m[2]], _ = strconv.ParseUint(m[1], 10, 64)
	}
	captured := counts["captured"]
	tb.Logf("tcpdump: captured %d, received by filter %d, dropped by kernel %d, lost %d (%.4f%%); %.3f us CPU per packet (process, user+sys)",
		captured, counts["received by filter"], counts["dropped by kernel"], sent-captured,
		100*float64(sent-captured)/float64(sent), cpu.Seconds()*1e6/float64(max(captured, 1)))
}

// procCPU returns a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15, in clock ticks (USER_HZ = 100).
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
