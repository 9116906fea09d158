package afpacket

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testOptions is a small ring for tests: the machine is shared.
func testOptions() Options {
	o := DefaultOptions()
	o.BlockSize = 1 << 20
	o.BlockCount = 16
	o.BlockTimeout = 2 * time.Millisecond
	o.PollInterval = 20 * time.Millisecond
	return o
}

func openRing(tb testing.TB, iface string, o Options) *Ring {
	tb.Helper()
	r, err := Open(iface, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return r
}

// sender writes raw frames to an interface through its own packet socket,
// which lives in the namespace it was created in.
type sender struct{ fd int }

// newSender opens a packet socket on iface inside the network namespace ns
// ("" for the test's own namespace).
func newSender(tb testing.TB, ns, iface string) *sender {
	tb.Helper()
	fd, err := senderSocket(ns, iface)
	if err != nil {
		tb.Fatalf("sender on %s in %q: %v", iface, ns, err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &sender{fd: fd}
}

func senderSocket(ns, iface string) (int, error) {
	if ns != "" {
		leave, err := enterNS(ns)
		if err != nil {
			return -1, err
		}
		// A socket stays in the namespace it was created in, so only the
		// socket call needs this thread in ns.
		defer leave()
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(iface)
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr)
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: int(ifr.Uint32())})
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// enterNS moves the calling goroutine's locked thread into the network
// namespace ns; leave moves it back.
func enterNS(ns string) (leave func(), err error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
	}
	if err != nil {
		unix.Close(orig)
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", ns, err)
	}
	return func() {
		defer unix.Close(orig)
		// A thread that cannot go back stays locked, so the runtime
		// retires it with its goroutine instead of reusing it.
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}, nil
}

func (s *sender) send(tb testing.TB, frame []byte) {
	tb.Helper()
	if _, err := unix.Write(s.fd, frame); err != nil {
		tb.Fatalf("send %d-byte frame: %v", len(frame), err)
	}
}

// frame is a copy of a received Packet.
type frame struct {
	Data      []byte
	OrigLen   int
	Timestamp int64
	Ifindex   int
	// Retagged: Data came from the scratch buffer, i.e. the kernel had
	// stripped a tag that Next put back.
	Retagged bool
}

// collect reads from r until it has n frames, the timeout passes, or Next
// fails; then it waits one more quiet period to catch surplus frames.
func collect(r *Ring, n int, timeout time.Duration) ([]frame, error) {
	var out []frame
	fn := func(p *Packet) error {
		out = append(out, frame{
			Data:      bytes.Clone(p.Data),
			OrigLen:   p.OrigLen,
			Timestamp: p.Timestamp,
			Ifindex:   p.Ifindex,
			Retagged:  len(p.Data) > 0 && unsafe.SliceData(p.Data) == unsafe.SliceData(r.scratch),
		})
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for len(out) < n {
		if err := r.Next(ctx, fn); err != nil {
			return out, fmt.Errorf("after %d of %d frames: %w", len(out), n, err)
		}
	}
	quiet, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	for {
		if err := r.Next(quiet, fn); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return out, nil
			}
			return out, err
		}
	}
}

// collectAsync runs collect in a goroutine; wait returns its result.
func collectAsync(r *Ring, n int, timeout time.Duration) (wait func() ([]frame, error)) {
	type result struct {
		f   []frame
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := collect(r, n, timeout)
		ch <- result{f, err}
	}()
	return func() ([]frame, error) {
		res := <-ch
		return res.f, res.err
	}
}

var (
	macDst = []byte{0x02, 0, 0, 0, 0, 0x01}
	macSrc = []byte{0x02, 0, 0, 0, 0, 0x02}
)

// tag is one VLAN tag: TPID and TCI (PCP, DEI, VID).
type tag struct{ tpid, tci uint16 }

// ether builds an Ethernet frame: MACs, tags (outer first), ethertype, payload.
func ether(tags []tag, ethertype uint16, payload []byte) []byte {
	b := append([]byte{}, macDst...)
	b = append(b, macSrc...)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t.tpid)
		b = binary.BigEndian.AppendUint16(b, t.tci)
	}
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, payload...)
}

// udp4 builds an IPv4/UDP packet from 10.0.0.1:sport to 10.0.0.2:dport whose
// payload starts with seq and is padded to size bytes of payload.
func udp4(sport, dport uint16, seq uint32, size int) []byte {
	size = max(size, 8)
	b := make([]byte, 28+size)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = unix.IPPROTO_UDP
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+size))
	binary.BigEndian.PutUint32(b[28:], seq)
	for i := 32; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

// seqOf returns the sequence number udp4 put into a frame without tags.
func seqOf(f []byte) uint32 { return binary.BigEndian.Uint32(f[14+28:]) }

// compareFrames checks that got is want, frame for frame and byte for byte,
// with OrigLen the sent length and Ifindex the capture interface.
func compareFrames(tb testing.TB, got []frame, want [][]byte, ifindex int) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("got %d frames, want %d", len(got), len(want))
	}
	bad := 0
	for i := range min(len(got), len(want)) {
		g := got[i]
		if !bytes.Equal(g.Data, want[i]) || g.OrigLen != len(want[i]) || g.Ifindex != ifindex {
			tb.Errorf("frame %d: got %d bytes (orig %d, ifindex %d) %x\nwant %d bytes (ifindex %d) %x",
				i, len(g.Data), g.OrigLen, g.Ifindex, head(g.Data), len(want[i]), ifindex, head(want[i]))
			if bad++; bad > 5 {
				tb.Fatal("too many mismatches")
			}
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 48)] }

func ifindexOf(tb testing.TB, iface string) int {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		tb.Fatal(err)
	}
	return int(ifr.Uint32())
}
