package afpacket

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/internal/testkit/testpcaps"
	"github.com/stenod/stenod/internal/testkit/testutil"
	"github.com/stenod/stenod/xdp"
)

const collectTimeout = 20 * time.Second

func TestReceiveFrames(t *testing.T) {
	v := testutil.NewVeth(t)
	r := openRing(t, v.Host, testOptions())
	s := newSender(t, v.NS, v.Peer)

	var want [][]byte
	for i := range 2000 {
		want = append(want, ether(nil, unix.ETH_P_IP, udp4(1000, 2000, uint32(i), 18+i%1400)))
	}
	wait := collectAsync(r, len(want), collectTimeout)
	before := time.Now().UnixNano()
	for _, f := range want {
		s.send(t, f)
	}
	after := time.Now().UnixNano()
	// Stats may run beside Next (the race detector watches).
	if _, err := r.Stats(); err != nil {
		t.Fatal(err)
	}
	got, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	compareFrames(t, got, want, ifindexOf(t, v.Host))
	for i, f := range got {
		if f.Timestamp < before || f.Timestamp > after {
			t.Fatalf("frame %d: timestamp %d outside the sending window [%d, %d]", i, f.Timestamp, before, after)
		}
		if i > 0 && f.Timestamp < got[i-1].Timestamp {
			t.Fatalf("frame %d: timestamp %d before the previous frame's %d", i, f.Timestamp, got[i-1].Timestamp)
		}
		if f.Retagged {
			t.Fatalf("frame %d: untagged frame went through the VLAN scratch buffer", i)
		}
	}
}

// TestReplayCaptures sends every Ethernet frame of the test captures,
// malformed ones included, and expects each back unchanged.
func TestReplayCaptures(t *testing.T) {
	v := testutil.NewVeth(t)
	// Captured frames are up to 64 KiB (TSO/GRO on the capturing host).
	const mtu = 65535
	testutil.Run(t, "ip", "link", "set", v.Host, "mtu", "65535")
	v.InNS(t, "ip", "link", "set", v.Peer, "mtu", "65535")
	o := testOptions()
	o.BlockCount = 64
	r := openRing(t, v.Host, o)
	s := newSender(t, v.NS, v.Peer)

	var want [][]byte
	skipped := map[string]int{}
	for _, c := range testpcaps.Ethernet(t, "") {
		for _, p := range c.Packets {
			f := p.Data
			switch {
			case len(f) < 14:
				// A packet socket sends no frame shorter than an Ethernet header.
				skipped["shorter than 14 bytes"]++
			case len(f) > mtu+14:
				skipped["larger than the MTU"]++
			case len(f) < 20 && isVLAN(binary.BigEndian.Uint16(f[12:])):
				// skb_vlan_untag drops a tagged frame without 6 bytes after
				// the Ethernet header, before any packet socket sees it.
				skipped["tagged, shorter than 20 bytes"]++
			default:
				want = append(want, f)
			}
		}
	}
	t.Logf("sending %d frames; left out: %v", len(want), skipped)

	wait := collectAsync(r, len(want), 2*collectTimeout)
	tagged := 0
	for _, f := range want {
		s.send(t, f)
		if isVLAN(binary.BigEndian.Uint16(f[12:])) {
			tagged++
		}
	}
	got, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	compareFrames(t, got, want, ifindexOf(t, v.Host))
	retagged := 0
	for _, f := range got {
		if f.Retagged {
			retagged++
		}
	}
	t.Logf("%d frames carried an outer 802.1Q/802.1ad tag; the kernel stripped %d, Next restored them", tagged, retagged)
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops != 0 || st.Malformed != 0 || st.Delivered != uint64(len(want)) {
		t.Errorf("stats %+v, want no drops, nothing malformed, %d delivered", st, len(want))
	}
}

func isVLAN(ethertype uint16) bool {
	return ethertype == unix.ETH_P_8021Q || ethertype == unix.ETH_P_8021AD
}

// vlanFrames are frames with zero, one and two tags, each frame's tags
// written as they cross the wire.
func vlanFrames() (frames [][]byte, names []string) {
	add := func(name string, tags ...tag) {
		for i, size := range []int{18, 200, 1400} {
			frames = append(frames, ether(tags, unix.ETH_P_IP, udp4(7, 9, uint32(len(frames)), size+i)))
			names = append(names, name)
		}
	}
	add("untagged")
	add("802.1Q VID 100", tag{0x8100, 100})
	add("802.1Q PCP 5 DEI VID 4094", tag{0x8100, 5<<13 | 1<<12 | 4094})
	add("802.1Q priority tag VID 0", tag{0x8100, 3 << 13})
	add("802.1ad outer, 802.1Q inner", tag{0x88a8, 200}, tag{0x8100, 300})
	add("802.1Q outer, 802.1Q inner", tag{0x8100, 10}, tag{0x8100, 20})
	add("802.1ad outer, 802.1ad inner", tag{0x88a8, 1}, tag{0x88a8, 2})
	add("0x9100 (not a tag to the kernel)", tag{0x9100, 42})
	return frames, names
}

// TestVLANTags shows what the kernel does to tagged frames on veth and that
// Next undoes it: with rx-vlan-offload on and off, the outer 802.1Q or
// 802.1ad tag is always stripped (skb_vlan_untag runs in the receive path
// for every device, offload or not), inner tags stay in the data.
func TestVLANTags(t *testing.T) {
	testutil.RequireCommand(t, "ethtool")
	for _, offload := range []string{"on", "off"} {
		t.Run("rxvlan="+offload, func(t *testing.T) {
			v := testutil.NewVeth(t)
			testutil.Run(t, "ethtool", "-K", v.Host, "rxvlan", offload)
			r := openRing(t, v.Host, testOptions())
			s := newSender(t, v.NS, v.Peer)
			want, names := vlanFrames()
			wait := collectAsync(r, len(want), collectTimeout)
			for _, f := range want {
				s.send(t, f)
			}
			got, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			compareFrames(t, got, want, ifindexOf(t, v.Host))
			for i := range min(len(got), len(want)) {
				stripped := isVLAN(binary.BigEndian.Uint16(want[i][12:]))
				if got[i].Retagged != stripped {
					t.Errorf("%s: kernel stripped the outer tag: %v, want %v", names[i], got[i].Retagged, stripped)
				}
			}
		})
	}
}

// TestSnapLen checks that SnapLen cuts frames as they crossed the wire,
// tagged or not: the filter cuts tagged frames 4 bytes shorter because the
// kernel has taken the tag out already.
func TestSnapLen(t *testing.T) {
	v := testutil.NewVeth(t)
	o := testOptions()
	o.SnapLen = 64
	r := openRing(t, v.Host, o)
	s := newSender(t, v.NS, v.Peer)
	frames, names := vlanFrames()
	wait := collectAsync(r, len(frames), collectTimeout)
	for _, f := range frames {
		s.send(t, f)
	}
	got, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(frames) {
		t.Fatalf("got %d frames, want %d", len(got), len(frames))
	}
	for i, f := range frames {
		want := f[:min(len(f), o.SnapLen)]
		if string(got[i].Data) != string(want) || got[i].OrigLen != len(f) {
			t.Errorf("%s, %d bytes: got %d bytes, orig %d\n%x\nwant %d bytes, orig %d\n%x",
				names[i], len(f), len(got[i].Data), got[i].OrigLen, got[i].Data, len(want), len(f), want)
		}
	}
}

func TestStats(t *testing.T) {
	v := testutil.NewVeth(t)
	r := openRing(t, v.Host, testOptions())
	s := newSender(t, v.NS, v.Peer)
	const n = 500
	for i := range n {
		s.send(t, ether(nil, unix.ETH_P_IP, udp4(1, 2, uint32(i), 100)))
	}
	// Read with a consumer that keeps nothing, counting the process's
	// allocations: the hot path must not allocate.
	got := 0
	count := func(*Packet) error { got++; return nil }
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	for got < n {
		if err := r.Next(ctx, count); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&ms)
	if d := ms.Mallocs - mallocs; d > 5 {
		t.Errorf("%d allocations while reading %d packets", d, n)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{Packets: n, Delivered: n}); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	// The kernel has reset its counters; the totals must stay.
	if st2, err := r.Stats(); err != nil || st2 != st {
		t.Fatalf("second read: %+v, %v; want %+v", st2, err, st)
	}
}

// TestStatsDrops fills a tiny ring nobody reads and checks that every
// packet is counted as kept or dropped, across several kernel reads.
func TestStatsDrops(t *testing.T) {
	v := testutil.NewVeth(t)
	o := testOptions()
	o.BlockSize = os.Getpagesize()
	o.BlockCount = 2
	o.FrameSize = 256
	r := openRing(t, v.Host, o)
	s := newSender(t, v.NS, v.Peer)
	var total Stats
	const rounds, n = 3, 100
	for round := range rounds {
		for i := range n {
			s.send(t, ether(nil, unix.ETH_P_IP, udp4(1, 2, uint32(i), 1000)))
		}
		st, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		total = st
		if st.Packets != uint64((round+1)*n) {
			t.Fatalf("round %d: %d packets counted, want %d", round, st.Packets, (round+1)*n)
		}
	}
	if total.Drops == 0 || total.Drops >= total.Packets || total.QueueFreezes == 0 {
		t.Fatalf("stats %+v: want some drops and queue freezes", total)
	}
	kept := total.Packets - total.Drops
	got, err := collect(r, int(kept), collectTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != kept {
		t.Fatalf("read %d frames, the kernel kept %d", len(got), kept)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != kept || st.Packets != total.Packets || st.Drops != total.Drops {
		t.Fatalf("after reading: %+v, want %d delivered and the counts of %+v", st, kept, total)
	}
	t.Logf("ring of 2 pages: %+v", st)
}

// TestFanout checks that the Rings of one group together see every packet
// exactly once, and that each gets a share.
func TestFanout(t *testing.T) {
	for _, mode := range []FanoutMode{FanoutHash, FanoutLB} {
		t.Run(map[FanoutMode]string{FanoutHash: "hash", FanoutLB: "lb"}[mode], func(t *testing.T) {
			v := testutil.NewVeth(t)
			o := testOptions()
			o.Fanout = mode
			// The first ring starts a group under an id the kernel
			// picks; the second joins it.
			o.FanoutPick = true
			r1 := openRing(t, v.Host, o)
			o.FanoutPick, o.FanoutGroup = false, r1.FanoutGroup()
			r2 := openRing(t, v.Host, o)
			if r2.FanoutGroup() != r1.FanoutGroup() {
				t.Fatalf("second ring in group %d, first in %d", r2.FanoutGroup(), r1.FanoutGroup())
			}
			// Another kernel-picked group, on the same interface, is a
			// group of its own: it would take half the packets if not.
			o.FanoutPick = true
			other := openRing(t, v.Host, o)
			if other.FanoutGroup() == r1.FanoutGroup() {
				t.Fatalf("two kernel-picked groups share id %d", r1.FanoutGroup())
			}
			if err := other.Close(); err != nil {
				t.Fatal(err)
			}
			s := newSender(t, v.NS, v.Peer)
			const n = 3000
			var (
				mu   sync.Mutex
				seen = make([]int, n)
				per  [2]int
			)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i, r := range []*Ring{r1, r2} {
				wg.Go(func() {
					for {
						err := r.Next(ctx, func(p *Packet) error {
							mu.Lock()
							defer mu.Unlock()
							seen[seqOf(p.Data)]++
							per[i]++
							return nil
						})
						if err != nil {
							return
						}
					}
				})
			}
			for i := range n {
				// 64 flows, so the hash has something to spread.
				s.send(t, ether(nil, unix.ETH_P_IP, udp4(uint16(10000+i%64), 53, uint32(i), 32)))
			}
			deadline := time.Now().Add(collectTimeout)
			for {
				mu.Lock()
				total := per[0] + per[1]
				mu.Unlock()
				if total >= n || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // catch duplicates
			cancel()
			wg.Wait()
			for seq, c := range seen {
				if c != 1 {
					t.Errorf("packet %d seen %d times", seq, c)
				}
			}
			if per[0] == 0 || per[1] == 0 || per[0]+per[1] != n {
				t.Errorf("rings got %d and %d packets, want %d in total and some in each", per[0], per[1], n)
			}
			t.Logf("rings got %d and %d packets", per[0], per[1])
		})
	}
}

// TestFanoutDefrag shows why FanoutDefrag is off by default: with it, the
// kernel hands the Ring a reassembled datagram instead of the fragments that
// crossed the wire.
func TestFanoutDefrag(t *testing.T) {
	whole := udp4(5000, 53, 1, 24) // 20-byte IP header, 32-byte UDP datagram
	frag := func(payload []byte, offset8 int, more bool) []byte {
		ip := append([]byte{}, whole[:20]...)
		ip = append(ip, payload...)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[4:], 0x4242)
		flags := uint16(offset8)
		if more {
			flags |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], flags)
		ip[10], ip[11] = 0, 0
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		return ether(nil, unix.ETH_P_IP, ip)
	}
	frags := [][]byte{frag(whole[20:36], 0, true), frag(whole[36:], 2, false)}
	for _, defrag := range []bool{false, true} {
		t.Run(fmt.Sprintf("defrag=%v", defrag), func(t *testing.T) {
			v := testutil.NewVeth(t)
			o := testOptions()
			o.Fanout = FanoutHash
			o.FanoutGroup = 9
			o.FanoutDefrag = defrag
			r := openRing(t, v.Host, o)
			s := newSender(t, v.NS, v.Peer)
			wait := collectAsync(r, 2, 500*time.Millisecond)
			for _, f := range frags {
				s.send(t, f)
			}
			got, _ := wait()
			if !defrag {
				compareFrames(t, got, frags, ifindexOf(t, v.Host))
				return
			}
			if len(got) != 1 || len(got[0].Data) != 14+len(whole) || string(got[0].Data[14+20:]) != string(whole[20:]) {
				t.Fatalf("got %d frames, want the reassembled %d-byte datagram as one frame", len(got), 14+len(whole))
			}
			t.Logf("two fragments of %d and %d bytes arrived as one %d-byte frame", len(frags[0]), len(frags[1]), len(got[0].Data))
		})
	}
}

func TestCancel(t *testing.T) {
	v := testutil.NewVeth(t)
	o := testOptions()
	// The end of a context without a deadline wakes a waiting Next at
	// once, not after its poll interval; so does Close.
	o.PollInterval = time.Minute
	r := openRing(t, v.Host, o)
	fn := func(*Packet) error { return nil }

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Next(ctx, fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	err := r.Next(ctx, fn)
	if took := time.Since(start); !errors.Is(err, context.Canceled) || took > o.PollInterval/2 {
		t.Fatalf("Next returned %v after %v, want context.Canceled at once (30 ms)", err, took)
	}

	// A context with a deadline ends the wait at its deadline.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = r.Next(ctx, fn)
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > o.PollInterval/2 {
		t.Fatalf("Next returned %v after %v, want context.DeadlineExceeded at its deadline (30 ms)", err, took)
	}

	r = openRing(t, v.Host, o)
	done := make(chan error)
	go func() { done <- r.Next(context.Background(), fn) }()
	time.Sleep(30 * time.Millisecond)
	start = time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next during Close: %v", err)
	}
	if took := time.Since(start); took > o.PollInterval/2 {
		t.Fatalf("Close took %v: it waited for the poll interval", took)
	}
	if err := r.Next(context.Background(), fn); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestResume checks that an error from fn keeps the rest of the block for the
// next call.
func TestResume(t *testing.T) {
	v := testutil.NewVeth(t)
	o := testOptions()
	o.BlockTimeout = 50 * time.Millisecond // one block for all ten
	r := openRing(t, v.Host, o)
	s := newSender(t, v.NS, v.Peer)
	for i := range 10 {
		s.send(t, ether(nil, unix.ETH_P_IP, udp4(1, 2, uint32(i), 20)))
	}
	errStop := errors.New("stop")
	var seqs []uint32
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	for calls := 0; len(seqs) < 10; calls++ {
		err := r.Next(ctx, func(p *Packet) error {
			seqs = append(seqs, seqOf(p.Data))
			if len(seqs) == 3 || len(seqs) == 4 {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			t.Fatal(err)
		}
	}
	for i, s := range seqs {
		if s != uint32(i) {
			t.Fatalf("sequence %v, want 0..9 once each", seqs)
		}
	}
}

// TestIgnoreOutgoing sends from the host end itself: the frames are outgoing
// there, seen only without IgnoreOutgoing.
func TestIgnoreOutgoing(t *testing.T) {
	for _, ignore := range []bool{true, false} {
		v := testutil.NewVeth(t)
		o := testOptions()
		o.IgnoreOutgoing = ignore
		r := openRing(t, v.Host, o)
		s := newSender(t, "", v.Host)
		for i := range 10 {
			s.send(t, ether(nil, unix.ETH_P_IP, udp4(1, 2, uint32(i), 20)))
		}
		want := 10
		if ignore {
			want = 0
		}
		got, err := collect(r, want, collectTimeout)
		if err != nil || len(got) != want {
			t.Errorf("IgnoreOutgoing=%v: got %d frames (%v), want %d", ignore, len(got), err, want)
		}
	}
}

// TestLinkDown: the kernel reports ENETDOWN when the interface goes down and
// resumes the socket when it comes back.
func TestLinkDown(t *testing.T) {
	v := testutil.NewVeth(t)
	r := openRing(t, v.Host, testOptions())
	fn := func(*Packet) error { return nil }
	time.AfterFunc(50*time.Millisecond, func() { _ = exec.Command("ip", "link", "set", v.Host, "down").Run() })
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	if err := r.Next(ctx, fn); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("Next while the link goes down: %v, want ENETDOWN", err)
	}
	testutil.Run(t, "ip", "link", "set", v.Host, "up")
	s := newSender(t, v.NS, v.Peer)
	want := ether(nil, unix.ETH_P_IP, udp4(1, 2, 7, 20))
	// The veth carrier may take a moment; send until a frame arrives.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_, _ = unix.Write(s.fd, want)
			}
		}
	}()
	got, err := collect(r, 1, collectTimeout)
	if err != nil || len(got) == 0 || string(got[0].Data) != string(want) {
		t.Fatalf("after link up: %d frames, %v", len(got), err)
	}
}

func TestOpenErrors(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := Open("stnnoexist0", DefaultOptions()); !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "stnnoexist0") {
		t.Errorf("missing interface: %v, want ENODEV naming the interface", err)
	}
	for name, mod := range map[string]func(*Options){
		"block size":    func(o *Options) { o.BlockSize = 1000 },
		"block count":   func(o *Options) { o.BlockCount = 0 },
		"frame size":    func(o *Options) { o.FrameSize = 100 },
		"snap length":   func(o *Options) { o.SnapLen = 8 },
		"fanout mode":   func(o *Options) { o.Fanout = 99 },
		"poll interval": func(o *Options) { o.PollInterval = 0 },
	} {
		o := testOptions()
		mod(&o)
		if _, err := Open("lo", o); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// TestCloseNoLeaks opens and closes rings, and fails Opens late, and checks
// that no descriptor and no mapping outlives them.
func TestCloseNoLeaks(t *testing.T) {
	v := testutil.NewVeth(t)
	fds := countFDs(t)
	o := testOptions()
	o.Fanout = FanoutHash
	o.FanoutGroup = 7
	o.BlockCount = 4
	for range 8 {
		r, err := Open(v.Host, o)
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("%x-", unsafe.SliceData(r.mem))
		if !mapped(t, addr) {
			t.Fatalf("ring at %s not in /proc/self/maps", addr)
		}
		// Joining the group with another mode fails after the ring is mapped.
		o2 := o
		o2.Fanout = FanoutLB
		if r2, err := Open(v.Host, o2); err == nil {
			r2.Close()
			t.Fatal("Open with a clashing fanout mode succeeded")
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if mapped(t, addr) {
			t.Fatalf("ring at %s still mapped after Close", addr)
		}
	}
	if _, err := Open("stnnoexist0", o); err == nil {
		t.Fatal("Open of a missing interface succeeded")
	}
	if now := countFDs(t); now != fds {
		t.Errorf("%d open descriptors before, %d after", fds, now)
	}
}

func mapped(tb testing.TB, addrPrefix string) bool {
	tb.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.HasPrefix(line, addrPrefix) {
			return true
		}
	}
	return false
}

func countFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// TestReady: Ready says whether Next would start without waiting.
func TestReady(t *testing.T) {
	v := testutil.NewVeth(t)
	o := testOptions()
	r := openRing(t, v.Host, o)
	if r.Ready() {
		t.Fatal("Ready on an empty ring")
	}
	s := newSender(t, v.NS, v.Peer)
	s.send(t, ether(nil, unix.ETH_P_IP, udp4(1000, 2000, 1, 32)))
	// The block timeout hands the partly filled block over.
	deadline := time.Now().Add(collectTimeout)
	for !r.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("not Ready %v after a frame was sent (block timeout %v)", collectTimeout, o.BlockTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n := 0
	if err := r.Next(context.Background(), func(*Packet) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("Next: %v, %d packets, want 1", err, n)
	}
	if r.Ready() {
		t.Fatal("Ready after the only block was read")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.Ready() {
		t.Fatal("Ready after Close")
	}
}

// TestBPFFilter attaches the cutoff's eBPF socket filter (xdp's
// SocketFilter) in place of the classic snap length filter: frames are cut
// to SnapLen as they crossed the wire, tagged or not, exactly as with the
// classic filter, and the packets the cutoff cuts (the Go model's
// decision on the wire frames, tags included) never reach the ring.
func TestBPFFilter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cutoff xdp.CutoffConfig
	}{
		{"snap length", xdp.CutoffConfig{}},
		{"cutoff", xdp.CutoffConfig{Default: xdp.Limit{Packets: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testutil.NewVeth(t)
			const snap = 64
			prog, err := xdp.LoadProgram(xdp.ProgramOptions{MaxFlows: 1024, Config: xdp.ProgramConfig{SnapLen: snap, Cutoff: tc.cutoff}})
			if err != nil {
				t.Fatalf("load: %+v", err)
			}
			t.Cleanup(func() {
				if err := prog.Close(); err != nil {
					t.Error(err)
				}
			})
			o := testOptions()
			o.SnapLen = snap
			o.BPFFilterFD = prog.SocketFilter().FD()
			r := openRing(t, v.Host, o)
			s := newSender(t, v.NS, v.Peer)
			model, err := xdp.NewCutoffModel(tc.cutoff, nil)
			if err != nil {
				t.Fatal(err)
			}
			frames, names := vlanFrames()
			var sent, want [][]byte
			var wantNames []string
			var k flow.Key
			for round := range 3 {
				for i, f := range frames {
					sent = append(sent, f)
					flow.Parse(f, &k)
					if !model.Packet(&k, uint64(len(f)), flow.TCPFlags(f, &k), 0) {
						want = append(want, f)
						wantNames = append(wantNames, fmt.Sprintf("%s round %d", names[i], round))
					}
				}
			}
			if tc.cutoff.Enabled() && len(want) == len(sent) {
				t.Fatal("the model cuts nothing: the test tests nothing")
			}
			wait := collectAsync(r, len(want), collectTimeout)
			for _, f := range sent {
				s.send(t, f)
			}
			got, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d frames, want %d of the %d sent", len(got), len(want), len(sent))
			}
			for i, f := range want {
				w := f[:min(len(f), snap)]
				if !bytes.Equal(got[i].Data, w) || got[i].OrigLen != len(f) {
					t.Errorf("%s, %d bytes: got %d bytes, orig %d\n%x\nwant %d bytes\n%x",
						wantNames[i], len(f), len(got[i].Data), got[i].OrigLen, got[i].Data, len(w), w)
				}
			}
			if !tc.cutoff.Enabled() {
				return
			}
			// The kernel's connections are the model's: keys with the
			// VLAN tag the stack took out, counts with its 4 bytes.
			model.Conns(func(c *xdp.Conn) {
				kc, ok, err := prog.LookupConn(&c.Key)
				if err != nil || !ok {
					t.Fatalf("connection %v not in the kernel: %v", c.Key, err)
				}
				kc.LastCut, c.LastCut = 0, 0
				if kc != *c {
					t.Errorf("connection %v:\n got %+v\nwant %+v", c.Key, kc, *c)
				}
			})
		})
	}
}
