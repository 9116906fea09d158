//go:build linux

package xdp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/testkit/testutil"
)

// xskMetaLen is the metadata the test program writes: the 8 bytes at packet
// offset 14 (the sender's sequence number, so metadata provably belongs to
// its packet) and bpf_ktime_get_ns.
const xskMetaLen = 16

// xskTestProgram builds a stand-in for the real XDP program: write 16 bytes
// of metadata with bpf_xdp_adjust_meta, then redirect into an XSKMAP by
// rx_queue_index, passing the packet on when the queue has no socket. It is
// loaded with BPF_F_XDP_HAS_FRAGS so that it can see multi-buffer packets
// (and veth accepts it with an MTU above a page).
func xskTestProgram(tb testing.TB, queues int) (*ebpf.Program, *ebpf.Map) {
	tb.Helper()
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		tb.Fatalf("create xskmap: %v", err)
	}
	tb.Cleanup(func() { xsks.Close() })
	// struct xdp_md: data 0, data_end 4, data_meta 8, ingress_ifindex 12,
	// rx_queue_index 16.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnKtimeGetNs.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -xskMetaLen),
		asm.FnXdpAdjustMeta.Call(),
		asm.JNE.Imm(asm.R0, 0, "redirect"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R1),
		asm.Add.Imm(asm.R4, xskMetaLen),
		asm.JGT.Reg(asm.R4, asm.R2, "redirect"),
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, 22),
		asm.JGT.Reg(asm.R5, asm.R3, "redirect"),
		asm.LoadMem(asm.R5, asm.R2, 14, asm.DWord),
		asm.StoreMem(asm.R1, 0, asm.R5, asm.DWord),
		asm.StoreMem(asm.R1, 8, asm.R7, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word).WithSymbol("redirect"),
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS when the queue has no socket
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: insns,
		License:      "GPL",
		Flags:        unix.BPF_F_XDP_HAS_FRAGS,
	})
	if err != nil {
		tb.Fatalf("load test xdp program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog, xsks
}

// xskRig is a veth pair with the test program on its host end and a socket
// on queue 0 of it.
type xskRig struct {
	v      *testutil.Veth
	ifi    *net.Interface
	s      *Socket
	xsks   *ebpf.Map
	sender *testutil.Sender
}

func xskNewRig(tb testing.TB, attach link.XDPAttachFlags, mtu int, opts SocketOptions) *xskRig {
	tb.Helper()
	v := testutil.NewVeth(tb)
	if mtu != 0 {
		testutil.Run(tb, "ip", "link", "set", v.Host, "mtu", fmt.Sprint(mtu))
		v.InNS(tb, "ip", "link", "set", v.Peer, "mtu", fmt.Sprint(mtu))
	}
	ifi, err := net.InterfaceByName(v.Host)
	if err != nil {
		tb.Fatal(err)
	}
	prog, xsks := xskTestProgram(tb, 1)
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: attach})
	if err != nil {
		tb.Fatalf("attach xdp (flags %v): %v", attach, err)
	}
	tb.Cleanup(func() { l.Close() })
	s, err := NewSocket(ifi.Index, 0, opts)
	if err != nil {
		tb.Fatalf("new socket: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close socket: %v", err)
		}
	})
	if err := xsks.Put(uint32(0), uint32(s.FD())); err != nil {
		tb.Fatalf("insert socket into xskmap: %v", err)
	}
	return &xskRig{v: v, ifi: ifi, s: s, xsks: xsks, sender: testutil.NewSender(tb, v)}
}

// xskFrame is a frame of size bytes with ethertype 0x88b5 (local
// experimental), seq at offset 14 and pseudo-random bytes after it.
func xskFrame(seq uint64, size int) []byte {
	f := make([]byte, size)
	copy(f, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x88, 0xb5})
	binary.LittleEndian.PutUint64(f[14:], seq)
	r := rand.New(rand.NewPCG(seq, uint64(size)))
	for i := 22; i < size; i++ {
		f[i] = byte(r.Uint32())
	}
	return f
}

func xskMonotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

type xskPacket struct {
	data  []byte
	meta  []byte
	descs int
}

// xskCollect receives want packets, copying them out, or fails after 5 s.
func xskCollect(tb testing.TB, s *Socket, want int) []xskPacket {
	tb.Helper()
	var pkts []xskPacket
	batch := make([]Desc, 64)
	deadline := time.Now().Add(5 * time.Second)
	for len(pkts) < want {
		n, err := s.Receive(batch)
		if err != nil {
			tb.Fatalf("receive: %v", err)
		}
		if n == 0 {
			if time.Now().After(deadline) {
				st, _ := s.Stats()
				tb.Fatalf("received %d packets, want %d; stats %+v", len(pkts), want, st)
			}
			if _, err := s.Poll(50 * time.Millisecond); err != nil {
				tb.Fatalf("poll: %v", err)
			}
			continue
		}
		for rest := batch[:n]; len(rest) > 0; {
			pkt := SocketPacket(rest)
			rest = rest[len(pkt):]
			pkts = append(pkts, xskPacket{
				data:  s.AppendPacket(nil, pkt),
				meta:  bytes.Clone(s.Meta(pkt[0])),
				descs: len(pkt),
			})
		}
		if err := s.Release(batch[:n]); err != nil {
			tb.Fatalf("release: %v", err)
		}
	}
	return pkts
}

func xskSmallOptions() SocketOptions {
	o := DefaultSocketOptions()
	o.NumFrames, o.FillRingSize, o.RxRingSize = 4096, 4096, 4096
	return o
}

func xskCheckStats(tb testing.TB, s *Socket) {
	tb.Helper()
	st, err := s.Stats()
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	if st != (SocketStats{}) {
		tb.Errorf("stats %+v, want all zero", st)
	}
}

// xskCheckPackets checks that got are the frames sent, in order, byte for
// byte, each with metadata naming its own sequence number and a kernel
// timestamp between t0 and t1.
func xskCheckPackets(tb testing.TB, sent [][]byte, got []xskPacket, t0, t1 uint64) {
	tb.Helper()
	for i, p := range got {
		if !bytes.Equal(p.data, sent[i]) {
			tb.Errorf("packet %d: %d bytes differ from the %d sent", i, len(p.data), len(sent[i]))
			continue
		}
		if !bytes.Equal(p.meta[:8], sent[i][14:22]) {
			tb.Errorf("packet %d: metadata flow id %x, want %x", i, p.meta[:8], sent[i][14:22])
		}
		if ts := binary.NativeEndian.Uint64(p.meta[8:]); ts < t0 || ts > t1 {
			tb.Errorf("packet %d: metadata timestamp %d outside [%d, %d]", i, ts, t0, t1)
		}
	}
}

var xskAttachModes = []struct {
	name  string
	flags link.XDPAttachFlags
}{
	{"driver", link.XDPDriverMode},
	{"generic", link.XDPGenericMode},
}

// TestSocketReceive: frames of every size up to the MTU arrive byte-identical
// with the metadata the program wrote in front of them, in native (veth
// driver) and generic XDP, both of which run the socket in copy mode.
func TestSocketReceive(t *testing.T) {
	for _, mode := range xskAttachModes {
		t.Run(mode.name, func(t *testing.T) {
			r := xskNewRig(t, mode.flags, 0, xskSmallOptions())
			if r.s.ZeroCopy() {
				t.Errorf("veth socket claims zero-copy")
			}
			if !errors.Is(r.s.FallbackReason(), unix.EOPNOTSUPP) {
				t.Errorf("fallback reason %v, want zero-copy refused with EOPNOTSUPP", r.s.FallbackReason())
			}
			t.Logf("zero-copy %v, multi-buffer %v, fallback: %v", r.s.ZeroCopy(), r.s.MultiBuffer(), r.s.FallbackReason())

			var sent [][]byte
			for i := range 1000 {
				sent = append(sent, xskFrame(uint64(i), 60+i*1454/999))
			}
			t0 := xskMonotonic()
			for _, f := range sent {
				r.sender.Send(t, f)
			}
			got := xskCollect(t, r.s, len(sent))
			xskCheckPackets(t, sent, got, t0, xskMonotonic())
			for i, p := range got {
				if p.descs != 1 {
					t.Errorf("packet %d: %d descriptors, want 1", i, p.descs)
				}
			}
			xskCheckStats(t, r.s)
		})
	}
}

// TestSocketJumbo: with MTU 9000, frames longer than a 4 KiB UMEM frame
// arrive as chained descriptors (XDP_USE_SG) with the metadata in front of
// the first.
func TestSocketJumbo(t *testing.T) {
	for _, mode := range xskAttachModes {
		t.Run(mode.name, func(t *testing.T) {
			r := xskNewRig(t, mode.flags, 9000, xskSmallOptions())
			if !r.s.MultiBuffer() {
				t.Fatalf("no multi-buffer on veth copy mode: %v", r.s.FallbackReason())
			}
			sizes := []int{9014, 60, 3000, 3840, 3841, 4096, 7681, 8000, 9013, 1514, 9014}
			var sent [][]byte
			for i, size := range sizes {
				sent = append(sent, xskFrame(uint64(i), size))
			}
			t0 := xskMonotonic()
			for _, f := range sent {
				r.sender.Send(t, f)
			}
			got := xskCollect(t, r.s, len(sent))
			xskCheckPackets(t, sent, got, t0, xskMonotonic())
			for i, p := range got {
				t.Logf("%d-byte frame: %d descriptors", len(p.data), p.descs)
				if len(p.data) > 4096-unix.XDP_PACKET_HEADROOM && p.descs < 2 {
					t.Errorf("packet %d: %d bytes in %d descriptor", i, len(p.data), p.descs)
				}
			}
			xskCheckStats(t, r.s)
		})
	}
}

// TestSocketJumboWithoutMultiBuffer documents what happens to frames longer
// than a UMEM frame when the socket is bound without XDP_USE_SG: the kernel
// drops them and counts them in RxDropped; shorter ones still arrive.
func TestSocketJumboWithoutMultiBuffer(t *testing.T) {
	o := xskSmallOptions()
	o.MultiBuffer = false
	r := xskNewRig(t, link.XDPDriverMode, 9000, o)
	if r.s.MultiBuffer() {
		t.Fatal("multi-buffer on although not asked for")
	}
	r.sender.Send(t, xskFrame(0, 9014))
	r.sender.Send(t, xskFrame(1, 3840))
	r.sender.Send(t, xskFrame(2, 3841))
	r.sender.Send(t, xskFrame(3, 100))
	got := xskCollect(t, r.s, 2)
	if len(got[0].data) != 3840 || len(got[1].data) != 100 {
		t.Errorf("got frames of %d and %d bytes, want 3840 and 100", len(got[0].data), len(got[1].data))
	}
	st, err := r.s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RxDropped != 2 {
		t.Errorf("stats %+v: want RxDropped 2", st)
	}
}

// TestSocketRun recycles a small UMEM many times over through Run, with the
// sender kept just behind the consumer so nothing is dropped.
func TestSocketRun(t *testing.T) {
	o := xskSmallOptions()
	o.NumFrames, o.FillRingSize, o.RxRingSize = 128, 128, 128
	o.PollTimeout = 10 * time.Millisecond
	r := xskNewRig(t, link.XDPDriverMode, 0, o)

	const total = 20000
	var received atomic.Int64
	var bad atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		batch := make([]Desc, 32)
		errc <- r.s.Run(ctx, batch, func(b []Desc) error {
			for _, d := range b {
				seq := binary.LittleEndian.Uint64(r.s.Frame(d)[14:])
				if seq != uint64(received.Load()) || !bytes.Equal(r.s.Meta(d)[:8], r.s.Frame(d)[14:22]) {
					bad.Add(1)
				}
				received.Add(1)
			}
			return nil
		})
	}()
	// At most 64 frames in flight: the handler counts a batch's packets
	// before Run gives their frames back, so up to a batch (32) more are
	// held than received shows, and 64 + 32 stay below the 128 frames.
	// (A window of 100 let the fill ring run dry now and then.)
	for i := range total {
		for int64(i)-received.Load() >= 64 {
			time.Sleep(50 * time.Microsecond)
		}
		r.sender.Send(t, xskFrame(uint64(i), 64+i%1400))
	}
	deadline := time.Now().Add(5 * time.Second)
	for received.Load() < total && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := received.Load(); n != total {
		t.Errorf("received %d, want %d", n, total)
	}
	if n := bad.Load(); n != 0 {
		t.Errorf("%d packets out of order or with wrong metadata", n)
	}
	xskCheckStats(t, r.s)
}

// TestSocketRunHandlerError: Run stops at the handler's error, having given
// the frames back.
func TestSocketRunHandlerError(t *testing.T) {
	r := xskNewRig(t, link.XDPDriverMode, 0, xskSmallOptions())
	r.sender.Send(t, xskFrame(0, 100))
	boom := errors.New("boom")
	err := r.s.Run(context.Background(), make([]Desc, 8), func([]Desc) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("run: %v, want %v", err, boom)
	}
}

// TestSocketReceiveAllocs: the receive path allocates nothing.
func TestSocketReceiveAllocs(t *testing.T) {
	r := xskNewRig(t, link.XDPDriverMode, 0, xskSmallOptions())
	for i := range 600 {
		r.sender.Send(t, xskFrame(uint64(i), 100))
	}
	batch := make([]Desc, 8)
	var total int
	allocs := testing.AllocsPerRun(50, func() {
		n, err := r.s.Receive(batch)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if err := r.s.Release(batch[:n]); err != nil {
			t.Fatal(err)
		}
	})
	if total == 0 {
		t.Fatal("received nothing")
	}
	if allocs != 0 {
		t.Errorf("%v allocations per Receive+Release, want 0", allocs)
	}
}

// TestSocketCloseLeaks: Close releases the descriptor and every mapping, and
// failing constructors leave nothing behind either.
func TestSocketCloseLeaks(t *testing.T) {
	v := testutil.NewVeth(t)
	ifi, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	fds := xskCountFDs(t)
	mapsBefore := xskMappings(t)

	s, err := NewSocket(ifi.Index, 0, xskSmallOptions())
	if err != nil {
		t.Fatal(err)
	}
	addrs := []uintptr{
		uintptr(unsafe.Pointer(&s.umem.mem[0])),
		uintptr(unsafe.Pointer(&s.fill.mem[0])),
		uintptr(unsafe.Pointer(&s.comp.mem[0])),
		uintptr(unsafe.Pointer(&s.rx.mem[0])),
	}
	// The leak check below looks for these as mapping starts: make sure
	// it would see them.
	open := xskMappings(t)
	for _, a := range addrs {
		if !strings.Contains(open, fmt.Sprintf("\n%x-", a)) {
			t.Fatalf("mapping at %#x not found in /proc/self/maps", a)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := s.Receive(make([]Desc, 1)); !errors.Is(err, ErrSocketClosed) {
		t.Errorf("receive after close: %v, want ErrSocketClosed", err)
	}
	if _, err := s.Stats(); !errors.Is(err, ErrSocketClosed) {
		t.Errorf("stats after close: %v, want ErrSocketClosed", err)
	}

	// A queue that does not exist fails at bind, after everything is set up.
	if _, err := NewSocket(ifi.Index, 7, xskSmallOptions()); err == nil {
		t.Error("bind to queue 7 of a one-queue veth succeeded")
	} else {
		t.Logf("bind to missing queue: %v", err)
	}

	if n := xskCountFDs(t); n != fds {
		t.Errorf("%d open fds after close, %d before", n, fds)
	}
	maps := xskMappings(t)
	for _, a := range addrs {
		if strings.Contains(maps, fmt.Sprintf("\n%x-", a)) && !strings.Contains(mapsBefore, fmt.Sprintf("\n%x-", a)) {
			t.Errorf("mapping at %#x still present after close", a)
		}
	}
}

func xskCountFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

func xskMappings(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	return "\n" + string(b)
}

// TestSocketDetached: when the interface goes away the socket says so
// instead of waiting forever.
func TestSocketDetached(t *testing.T) {
	v := testutil.NewVeth(t)
	ifi, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSocket(ifi.Index, 0, xskSmallOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Poll(time.Millisecond); err != nil {
		t.Fatalf("poll while bound: %v", err)
	}
	testutil.Run(t, "ip", "link", "del", v.Host)
	if _, err := s.Poll(time.Millisecond); !errors.Is(err, ErrSocketDetached) {
		t.Fatalf("poll after link del: %v, want ErrSocketDetached", err)
	}
}

// TestSocketModes: forced zero-copy fails on veth with the kernel's reason;
// forced copy binds without a fallback.
func TestSocketModes(t *testing.T) {
	v := testutil.NewVeth(t)
	ifi, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	o := xskSmallOptions()
	o.Mode = SocketModeZeroCopy
	if s, err := NewSocket(ifi.Index, 0, o); err == nil {
		s.Close()
		t.Error("zero-copy bind on veth succeeded")
	} else if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("zero-copy bind on veth: %v, want EOPNOTSUPP", err)
	}
	o.Mode = SocketModeCopy
	s, err := NewSocket(ifi.Index, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.FallbackReason() != nil || s.ZeroCopy() || !s.MultiBuffer() {
		t.Errorf("copy mode: fallback %v, zero-copy %v, multi-buffer %v", s.FallbackReason(), s.ZeroCopy(), s.MultiBuffer())
	}
}

// TestSocketDefaultOptions: the default 256 MiB UMEM and 64 Ki-entry rings
// are accepted by the kernel.
func TestSocketDefaultOptions(t *testing.T) {
	v := testutil.NewVeth(t)
	ifi, err := net.InterfaceByName(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSocket(ifi.Index, 0, DefaultSocketOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSocketOptionsValidate(t *testing.T) {
	for name, mod := range map[string]func(*SocketOptions){
		"frame size not power of two": func(o *SocketOptions) { o.FrameSize = 3000 },
		"frame size too small":        func(o *SocketOptions) { o.FrameSize = 1024 },
		"no frames":                   func(o *SocketOptions) { o.NumFrames = 0 },
		"fill ring below frames":      func(o *SocketOptions) { o.FillRingSize = o.NumFrames / 2 },
		"rx ring not power of two":    func(o *SocketOptions) { o.RxRingSize = 1000 },
		"headroom fills frame":        func(o *SocketOptions) { o.Headroom = o.FrameSize - 256 },
		"odd metadata":                func(o *SocketOptions) { o.MetaLen = 10 },
		"bad mode":                    func(o *SocketOptions) { o.Mode = 7 },
		"no poll timeout":             func(o *SocketOptions) { o.PollTimeout = 0 },
	} {
		o := DefaultSocketOptions()
		mod(&o)
		if _, err := NewSocket(1, 0, o); err == nil || !strings.HasPrefix(err.Error(), "socket options:") {
			t.Errorf("%s: %v, want an options error", name, err)
		}
	}
}

// TestUMEMLayout: Frame and Meta slice where the kernel puts a packet and
// its metadata, and Release recovers the chunk from any address in it.
func TestUMEMLayout(t *testing.T) {
	u, err := newUMEM(4, 4096, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer u.unmap()
	d := Desc{Addr: 2*4096 + unix.XDP_PACKET_HEADROOM, Len: 100}
	copy(u.Bytes()[d.Addr-16:], "0123456789abcdefPACKET")
	if got := string(u.Meta(d)); got != "0123456789abcdef" {
		t.Errorf("meta %q", got)
	}
	if got := u.Frame(d); len(got) != 100 || cap(got) != 100 || string(got[:6]) != "PACKET" {
		t.Errorf("frame %q (cap %d)", got[:6], cap(got))
	}
	if a := u.frameAddr(d.Addr + 99); a != 2*4096 {
		t.Errorf("frame address %d, want %d", a, 2*4096)
	}
	if u.NumFrames() != 4 || u.FrameSize() != 4096 {
		t.Errorf("%d frames of %d bytes", u.NumFrames(), u.FrameSize())
	}
}

func TestSocketPacketSplit(t *testing.T) {
	more := Desc{Len: 3, Options: unix.XDP_PKT_CONTD}
	end := Desc{Len: 2}
	descs := []Desc{end, more, more, end, more}
	var lens []int
	for rest := descs; len(rest) > 0; {
		p := SocketPacket(rest)
		lens = append(lens, SocketPacketLen(p))
		rest = rest[len(p):]
	}
	if fmt.Sprint(lens) != "[2 8 3]" {
		t.Errorf("packet lengths %v, want [2 8 3]", lens)
	}
}

func TestSocketRxQueueCount(t *testing.T) {
	v := testutil.NewVeth(t)
	n, err := RxQueueCount(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sysfsRxQueues(v.Host)
	if err != nil {
		t.Fatal(err)
	}
	e, eerr := ethtoolRxQueues(v.Host)
	t.Logf("%s: %d rx queues (ethtool %d %v, sysfs %d)", v.Host, n, e, eerr, s)
	if n != s {
		t.Errorf("RxQueueCount %d, sysfs %d", n, s)
	}
	// veth with more queues than the default one.
	name := fmt.Sprintf("stnq%d", os.Getpid()%100000)
	testutil.Run(t, "ip", "link", "add", name, "numrxqueues", "3", "numtxqueues", "3", "type", "veth", "peer", "name", name+"p", "numrxqueues", "3", "numtxqueues", "3")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
	n, err = RxQueueCount(name)
	s, _ = sysfsRxQueues(name)
	e, eerr = ethtoolRxQueues(name)
	t.Logf("%s: %d rx queues (ethtool %d %v, sysfs %d)", name, n, e, eerr, s)
	if err != nil || n != 3 {
		t.Errorf("RxQueueCount(%s) = %d, %v; want 3", name, n, err)
	}
	if _, err := RxQueueCount("nosuchif0"); err == nil {
		t.Error("RxQueueCount of a missing interface succeeded")
	}
}

func TestSocketPinToCPU(t *testing.T) {
	cpu := runtime.NumCPU() - 1
	errc := make(chan error)
	go func() {
		if err := PinToCPU(cpu); err != nil {
			errc <- err
			return
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			errc <- err
			return
		}
		if set.Count() != 1 || !set.IsSet(cpu) {
			errc <- fmt.Errorf("affinity %v after pinning to %d", set, cpu)
			return
		}
		errc <- nil
		// Exit locked: the runtime discards the pinned thread.
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := PinToCPU(-1); err == nil {
		t.Error("PinToCPU(-1) succeeded")
	}
}

// BenchmarkSocketReceive counts 64-byte frames that trafgen sends from the
// peer's namespace as fast as it can; one op is one packet received and
// released. It measures the slower of the two sides: on veth that is
// usually the sender, whose CPU also runs the XDP program and the copy.
func BenchmarkSocketReceive(b *testing.B) {
	testutil.RequireRoot(b)
	trafgen := testutil.RequireCommand(b, "trafgen")
	o := DefaultSocketOptions()
	o.NumFrames, o.FillRingSize, o.RxRingSize = 16384, 16384, 16384
	r := xskNewRig(b, link.XDPDriverMode, 0, o)

	cmd := exec.Command("ip", "netns", "exec", r.v.NS, trafgen, "--dev", r.v.Peer, "--cpus", "1", "--no-sock-mem", "-Q", "-C",
		"{ 0x02,0,0,0,0,1, 0x02,0,0,0,0,2, c16(0x88b5), fill(0x00, 50) }")
	// A file, not a pipe: trafgen's worker processes would keep a pipe
	// open and Wait would block on it.
	out, err := os.CreateTemp(b.TempDir(), "trafgen")
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	if os.Getenv("XSK_BENCH_PIN") != "" {
		if err := PinToCPU(0); err != nil {
			b.Fatal(err)
		}
		defer runtime.UnlockOSThread()
	}

	batch := make([]Desc, 64)
	var n, i int
	deadline := time.Now().Add(10 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		for i == n {
			if err := r.s.Release(batch[:n]); err != nil {
				b.Fatalf("release %d: %v", n, err)
			}
			var err error
			n, err = r.s.Receive(batch)
			i = 0
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				if time.Now().After(deadline) {
					log, _ := os.ReadFile(out.Name())
					b.Fatalf("no packets from trafgen: %s", log)
				}
				if _, err := r.s.Poll(100 * time.Millisecond); err != nil {
					b.Fatal(err)
				}
			}
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	st, err := r.s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.RxRingFull+st.RxDropped+st.RxFillRingEmptyDescs), "drops")
}

// BenchmarkSocketDrain measures the consumer alone: the RX ring is filled
// with the timer stopped, then drained with Receive and Release; one op is
// one packet.
func BenchmarkSocketDrain(b *testing.B) {
	const fill = 4096
	o := DefaultSocketOptions()
	o.NumFrames, o.FillRingSize, o.RxRingSize = fill, fill, fill
	r := xskNewRig(b, link.XDPDriverMode, 0, o)
	frame := xskFrame(0, 64)
	batch := make([]Desc, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		want := min(fill, b.N-done)
		for range want {
			r.sender.Send(b, frame)
		}
		b.StartTimer()
		for got := 0; got < want; {
			n, err := r.s.Receive(batch)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				if _, err := r.s.Poll(time.Second); err != nil {
					b.Fatal(err)
				}
				continue
			}
			got += n
			if err := r.s.Release(batch[:n]); err != nil {
				b.Fatal(err)
			}
		}
		done += want
	}
	b.StopTimer()
	xskCheckStats(b, r.s)
}

// xskFakeRing is a ring in ordinary memory, laid out like the kernel's, for
// driving the ring logic without a socket.
func xskFakeRing(entries uint32, elemSize int) (ringMap, unix.XDPRingOffset) {
	off := unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}
	mem := make([]byte, int(off.Desc)+int(entries)*elemSize)
	return ringMap{
		mem:      mem,
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     entries - 1,
		entries:  entries,
	}, off
}

// xskFakeSocket has fake fill and RX rings of 8 entries and 8 frames, all
// in the fill ring. It makes no syscalls as long as no ring asks for a
// wakeup.
func xskFakeSocket() *Socket {
	s := &Socket{fd: 1 << 30, umem: &UMEM{mem: make([]byte, 8*4096), frameSize: 4096, frameMask: ^uint64(4095), metaLen: 16}}
	m, off := xskFakeRing(8, 8)
	s.fill = newAddrRing(m, off)
	m, off = xskFakeRing(8, xdpDescSize)
	s.rx = newDescRing(m, off)
	for i := range 8 {
		s.fill.put(uint64(i) * 4096)
	}
	s.fill.submit()
	s.pending = make([]uint64, 0, 8)
	return s
}

// TestSocketReleasePending: frames released while the kernel has not yet
// published their fill ring slots as consumed are parked, and handed over
// in order once it has.
func TestSocketReleasePending(t *testing.T) {
	s := xskFakeSocket()
	// The kernel took frames 0-3 and delivered them, but published only
	// two fill ring slots as consumed.
	*s.fill.consumer = 2
	descs := []Desc{{Addr: 0*4096 + 256}, {Addr: 1*4096 + 256}, {Addr: 2*4096 + 256}, {Addr: 3*4096 + 300}}
	if err := s.Release(descs); err != nil {
		t.Fatal(err)
	}
	if *s.fill.producer != 10 || len(s.pending) != 2 {
		t.Fatalf("fill producer %d, %d pending; want 10 and 2", *s.fill.producer, len(s.pending))
	}
	*s.fill.consumer = 4
	if n, err := s.Receive(make([]Desc, 4)); n != 0 || err != nil {
		t.Fatalf("receive on an empty ring: %d, %v", n, err)
	}
	if *s.fill.producer != 12 || len(s.pending) != 0 {
		t.Fatalf("fill producer %d, %d pending; want 12 and 0", *s.fill.producer, len(s.pending))
	}
	for i, want := range []uint64{0, 4096, 2 * 4096, 3 * 4096} {
		if got := s.fill.addrs[(8+i)&7]; got != want {
			t.Errorf("fill slot %d holds %d, want %d", 8+i, got, want)
		}
	}
	if err := s.Release(make([]Desc, 9)); !errors.Is(err, ErrSocketFillRingFull) {
		t.Errorf("releasing more frames than exist: %v, want ErrSocketFillRingFull", err)
	}
}

// TestSocketReceiveWholePackets: Receive returns whole multi-buffer packets
// only, waits for the rest of a packet, and refuses a batch too small for
// one.
func TestSocketReceiveWholePackets(t *testing.T) {
	s := xskFakeSocket()
	more := uint32(unix.XDP_PKT_CONTD)
	produce := func(ds ...Desc) {
		p := *s.rx.producer
		for _, d := range ds {
			s.rx.descs[p&7] = d
			p++
		}
		*s.rx.producer = p
	}
	batch := make([]Desc, 8)
	produce(Desc{Addr: 1, Options: more}, Desc{Addr: 2}, Desc{Addr: 3, Options: more})
	if n, err := s.Receive(batch); n != 2 || err != nil || batch[1].Addr != 2 {
		t.Fatalf("receive: %d, %v (%v); want the first two", n, err, batch[:n])
	}
	if n, err := s.Receive(batch); n != 0 || err != nil {
		t.Fatalf("receive with half a packet ready: %d, %v", n, err)
	}
	produce(Desc{Addr: 4})
	if n, err := s.Receive(batch); n != 2 || err != nil || batch[0].Addr != 3 || batch[1].Addr != 4 {
		t.Fatalf("receive: %d, %v (%v); want descriptors 3 and 4", n, err, batch[:n])
	}
	if *s.rx.consumer != 4 {
		t.Errorf("rx consumer %d, want 4", *s.rx.consumer)
	}
	produce(Desc{Addr: 5, Options: more}, Desc{Addr: 6, Options: more}, Desc{Addr: 7})
	if _, err := s.Receive(batch[:2]); !errors.Is(err, ErrSocketBatchTooSmall) {
		t.Errorf("receive a 3-descriptor packet into 2: %v, want ErrSocketBatchTooSmall", err)
	}
	if n, err := s.Receive(batch[:3]); n != 3 || err != nil {
		t.Errorf("receive: %d, %v; want 3", n, err)
	}
}
