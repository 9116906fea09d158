package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Sender writes raw Ethernet frames onto the peer end of a Veth, from inside
// its namespace, so they arrive on the host end as if from the wire.
type Sender struct {
	fd      int
	ifindex int
	Frames  int
	Bytes   int
}

// NewSender opens an AF_PACKET socket on v.Peer inside v.NS. A socket keeps
// the namespace it was created in, so only its creation needs a thread
// switched into the namespace; the thread goes back before it is released.
func NewSender(tb testing.TB, v *Veth) *Sender {
	tb.Helper()
	type result struct {
		s   *Sender
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread()
		s, restored, err := openInNS(v)
		if restored {
			// A thread left in the other namespace dies with the goroutine.
			runtime.UnlockOSThread()
		}
		ch <- result{s, err}
	}()
	r := <-ch
	if r.err != nil {
		tb.Fatalf("packet socket in %s: %v", v.NS, r.err)
	}
	tb.Cleanup(func() { unix.Close(r.s.fd) })
	return r.s
}

func openInNS(v *Veth) (*Sender, bool, error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+v.NS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("setns: %w", err)
	}
	fd, serr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	var idx uint32
	if serr == nil {
		var ifr *unix.Ifreq
		if ifr, serr = unix.NewIfreq(v.Peer); serr == nil {
			if serr = unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); serr == nil {
				idx = ifr.Uint32()
			}
		}
	}
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return nil, false, fmt.Errorf("setns back: %w", err)
	}
	if serr != nil {
		return nil, true, serr
	}
	return &Sender{fd: fd, ifindex: int(idx)}, true, nil
}

// Send writes one frame, waiting while the socket's queue is full.
func (s *Sender) Send(tb testing.TB, frame []byte) {
	tb.Helper()
	for {
		err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex})
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			tb.Fatalf("send %d-byte frame: %v", len(frame), err)
		}
		s.Frames++
		s.Bytes += len(frame)
		return
	}
}

// BPFFS mounts a bpf filesystem on a temporary directory, to serve as a
// test's pin root, and unmounts it when the test ends.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	RequireRoot(tb)
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		SkipOrFail(tb, "mount bpffs: %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount bpffs: %v", err)
		}
	})
	return dir
}
