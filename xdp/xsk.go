//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors returned by Socket methods, to test with errors.Is.
var (
	// ErrSocketClosed: the socket was closed.
	ErrSocketClosed = errors.New("xdp socket closed")
	// ErrSocketDetached: the socket is no longer bound, because its
	// interface went away (or was moved to another namespace). Close it.
	ErrSocketDetached = errors.New("xdp socket detached from its interface")
	// ErrSocketBatchTooSmall: the next packet has more descriptors than the
	// batch passed to Receive holds. A batch of SocketMaxFragments always
	// holds one.
	ErrSocketBatchTooSmall = errors.New("batch too small for one multi-buffer packet")
	// ErrSocketFillRingFull: Release was given more frames than the
	// kernel has handed out, which means frames were released twice or
	// did not come from this socket.
	ErrSocketFillRingFull = errors.New("more frames released than received")
)

// SocketMaxFragments bounds the descriptors of one multi-buffer packet: the
// kernel's MAX_SKB_FRAGS (17 by default) plus the head.
const SocketMaxFragments = 18

// SocketMode selects how the kernel moves packets into the UMEM.
type SocketMode int

const (
	// SocketModeAuto tries zero-copy and falls back to copy mode,
	// recording why (Socket.FallbackReason). With MultiBuffer it tries
	// zero-copy with XDP_USE_SG, then copy with it, then copy without:
	// copy mode that keeps jumbo frames beats zero-copy that drops them.
	SocketModeAuto SocketMode = iota
	// SocketModeCopy (XDP_COPY): the kernel copies each packet into a
	// UMEM frame. Works on every driver with XDP, and in generic mode.
	SocketModeCopy
	// SocketModeZeroCopy (XDP_ZEROCOPY): the driver receives straight
	// into UMEM frames. Needs driver support (not veth, not generic XDP).
	SocketModeZeroCopy
)

func (m SocketMode) String() string {
	switch m {
	case SocketModeAuto:
		return "auto"
	case SocketModeCopy:
		return "copy"
	case SocketModeZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("SocketMode(%d)", int(m))
}

// SocketOptions configures a Socket. Start from DefaultSocketOptions.
type SocketOptions struct {
	// FrameSize is the size of one UMEM chunk: a power of two from 2048 to
	// the page size. A packet longer than FrameSize minus Headroom minus
	// 256 (XDP_PACKET_HEADROOM) needs MultiBuffer.
	FrameSize int
	// NumFrames is the number of chunks. Every chunk not held by the
	// caller sits in the fill ring, so NumFrames is how many packets the
	// kernel can take while the consumer is stalled (on disk, say) before
	// it starts dropping (counted in SocketStats.RxFillRingEmptyDescs).
	NumFrames int
	// FillRingSize, RxRingSize and CompletionRingSize are the ring sizes
	// in entries, powers of two. FillRingSize must be at least NumFrames
	// so that every frame can be given to the kernel; RxRingSize below
	// NumFrames caps the backlog the kernel can queue during a stall
	// (overflow counted in SocketStats.RxRingFull). The completion ring is
	// only for transmit, which this package does not do, but the kernel
	// requires one.
	FillRingSize, RxRingSize, CompletionRingSize int
	// Headroom is extra space at the start of each chunk that the kernel
	// never writes. The XDP metadata needs none: see UMEM.
	Headroom int
	// MetaLen is the length of the metadata the XDP program writes before
	// each packet with bpf_xdp_adjust_meta, a multiple of 4 up to 256.
	MetaLen int
	// Mode selects copy or zero-copy.
	Mode SocketMode
	// MultiBuffer binds with XDP_USE_SG so that packets longer than a
	// frame arrive as chained descriptors instead of being dropped. When
	// the kernel refuses it the socket is bound without it, and
	// FallbackReason says so.
	MultiBuffer bool
	// PollTimeout bounds how long Run waits for packets before it checks
	// its context and whether the interface still exists.
	PollTimeout time.Duration
}

// DefaultSocketOptions returns options that work on any driver: 4 KiB frames,
// 65536 of them (256 MiB per queue, about 65 ms of 1 Mpps with the consumer
// stalled), auto mode, multi-buffer, MetaSize bytes of metadata.
func DefaultSocketOptions() SocketOptions {
	return SocketOptions{
		FrameSize:          4096,
		NumFrames:          65536,
		FillRingSize:       65536,
		RxRingSize:         65536,
		CompletionRingSize: 64,
		Headroom:           0,
		MetaLen:            MetaSize,
		Mode:               SocketModeAuto,
		MultiBuffer:        true,
		PollTimeout:        100 * time.Millisecond,
	}
}

func (o *SocketOptions) validate() error {
	pow2 := func(v int) bool { return v > 0 && v&(v-1) == 0 }
	switch {
	case !pow2(o.FrameSize) || o.FrameSize < 2048 || o.FrameSize > os.Getpagesize():
		return fmt.Errorf("frame size %d: not a power of two between 2048 and the page size %d", o.FrameSize, os.Getpagesize())
	case o.NumFrames <= 0:
		return fmt.Errorf("number of frames %d: not positive", o.NumFrames)
	case !pow2(o.FillRingSize) || !pow2(o.RxRingSize) || !pow2(o.CompletionRingSize):
		return fmt.Errorf("ring sizes fill %d, rx %d, completion %d: not all powers of two", o.FillRingSize, o.RxRingSize, o.CompletionRingSize)
	case o.FillRingSize < o.NumFrames:
		return fmt.Errorf("fill ring size %d is below the number of frames %d", o.FillRingSize, o.NumFrames)
	case o.Headroom < 0 || o.Headroom+unix.XDP_PACKET_HEADROOM >= o.FrameSize:
		return fmt.Errorf("headroom %d: leaves no room for packets in %d-byte frames", o.Headroom, o.FrameSize)
	case o.MetaLen < 0 || o.MetaLen > unix.XDP_PACKET_HEADROOM || o.MetaLen%4 != 0:
		return fmt.Errorf("metadata length %d: not a multiple of 4 up to %d", o.MetaLen, unix.XDP_PACKET_HEADROOM)
	case o.Mode < SocketModeAuto || o.Mode > SocketModeZeroCopy:
		return fmt.Errorf("mode %v: unknown", o.Mode)
	case o.PollTimeout <= 0:
		return fmt.Errorf("poll timeout %v: not positive", o.PollTimeout)
	}
	return nil
}

// Desc is one RX descriptor (struct xdp_desc): Len bytes at UMEM offset
// Addr. Addr points at the packet data, past the headroom and metadata.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// More reports whether the packet continues in the next descriptor
// (XDP_PKT_CONTD): a multi-buffer packet is a run of descriptors with More
// set, closed by one without.
func (d Desc) More() bool { return d.Options&unix.XDP_PKT_CONTD != 0 }

// Socket is an AF_XDP socket bound to one RX queue of one interface, with its
// own UMEM. It receives only; it never transmits.
//
// Receive, Release, Poll and Run are for one goroutine at a time (the queue's
// worker); Stats and FD may be called from any goroutine while the socket is
// open. Close must not race with anything.
type Socket struct {
	fd      int
	ifindex int
	queue   int
	umem    *UMEM
	fill    addrRing
	comp    ringMap
	rx      descRing
	// pending parks released frames the fill ring has no room for yet.
	// That happens although the ring holds every frame: the kernel
	// publishes RX descriptors before it publishes that it consumed their
	// frames from the fill ring (xsk_flush), so for a moment we can hold
	// more frames than the fill ring shows free slots.
	pending     []uint64
	pollfd      [1]unix.PollFd
	pollTimeout time.Duration
	zeroCopy    bool
	multiBuffer bool
	fallback    error
}

// NewSocket creates a socket with its UMEM and rings, gives every frame to
// the fill ring, and binds it to queue of the interface with index ifindex.
// Packets reach it only once an XDP program redirects them into an XSKMAP
// entry holding FD() (bpf_redirect_map(xsks, rx_queue_index, ...)).
func NewSocket(ifindex, queue int, opts SocketOptions) (_ *Socket, err error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("socket options: %w", err)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create AF_XDP socket: %w", err)
	}
	s := &Socket{fd: fd, ifindex: ifindex, queue: queue, pollTimeout: opts.PollTimeout}
	s.pollfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()

	if s.umem, err = newUMEM(opts.NumFrames, opts.FrameSize, opts.Headroom, opts.MetaLen); err != nil {
		return nil, err
	}
	if err := s.umem.register(fd); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		name        string
		opt, values int
	}{
		{"fill", unix.XDP_UMEM_FILL_RING, opts.FillRingSize},
		{"completion", unix.XDP_UMEM_COMPLETION_RING, opts.CompletionRingSize},
		{"rx", unix.XDP_RX_RING, opts.RxRingSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.values); err != nil {
			return nil, fmt.Errorf("set %s ring size %d: %w", r.name, r.values, err)
		}
	}

	// The flags offsets came with 5.4; the kernel answers a shorter struct
	// before that, which we refuse rather than guess.
	var off unix.XDPMmapOffsets
	n, err := getsockopt(fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return nil, fmt.Errorf("get mmap offsets: %w", err)
	}
	if n != unsafe.Sizeof(off) {
		return nil, fmt.Errorf("get mmap offsets: kernel returned %d bytes, want %d (kernel before 5.4?)", n, unsafe.Sizeof(off))
	}
	m, err := mapRing(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, uint32(opts.FillRingSize), 8)
	if err != nil {
		return nil, fmt.Errorf("fill ring: %w", err)
	}
	s.fill = newAddrRing(m, off.Fr)
	if s.comp, err = mapRing(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, uint32(opts.CompletionRingSize), 8); err != nil {
		return nil, fmt.Errorf("completion ring: %w", err)
	}
	if m, err = mapRing(fd, unix.XDP_PGOFF_RX_RING, off.Rx, uint32(opts.RxRingSize), xdpDescSize); err != nil {
		return nil, fmt.Errorf("rx ring: %w", err)
	}
	s.rx = newDescRing(m, off.Rx)

	// Fill before binding: a zero-copy driver takes buffers from the fill
	// ring as soon as it is bound.
	for i := range opts.NumFrames {
		s.fill.put(uint64(i) * uint64(opts.FrameSize))
	}
	s.fill.submit()
	s.pending = make([]uint64, 0, opts.NumFrames)

	if err := s.bind(opts); err != nil {
		return nil, err
	}
	return s, nil
}

// bind tries the flag sets the mode allows, best first, on the same socket:
// a failed bind leaves the UMEM and rings registered, and the kernel itself
// falls back from a failed zero-copy setup to copy mode on the same rings
// when bound without XDP_COPY or XDP_ZEROCOPY.
func (s *Socket) bind(opts SocketOptions) error {
	var attempts []uint16
	sgs := []uint16{0}
	if opts.MultiBuffer {
		sgs = []uint16{unix.XDP_USE_SG, 0}
	}
	switch opts.Mode {
	case SocketModeAuto:
		for _, mode := range []uint16{unix.XDP_ZEROCOPY, unix.XDP_COPY} {
			for _, sg := range sgs {
				if mode == unix.XDP_ZEROCOPY && sg == 0 && opts.MultiBuffer {
					continue
				}
				attempts = append(attempts, mode|sg)
			}
		}
	case SocketModeCopy:
		for _, sg := range sgs {
			attempts = append(attempts, unix.XDP_COPY|sg)
		}
	case SocketModeZeroCopy:
		for _, sg := range sgs {
			attempts = append(attempts, unix.XDP_ZEROCOPY|sg)
		}
	}
	var reasons []error
	for _, flags := range attempts {
		flags |= unix.XDP_USE_NEED_WAKEUP
		sa := unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)}
		err := unix.Bind(s.fd, &sa)
		if err != nil {
			reasons = append(reasons, fmt.Errorf("bind %s to ifindex %d queue %d: %w", bindFlagsString(flags), s.ifindex, s.queue, err))
			continue
		}
		s.multiBuffer = flags&unix.XDP_USE_SG != 0
		s.zeroCopy = flags&unix.XDP_ZEROCOPY != 0
		// The kernel's own word on the mode, in case the flags and the
		// outcome ever disagree.
		var xo uint32
		if _, err := getsockopt(s.fd, unix.SOL_XDP, unix.XDP_OPTIONS, unsafe.Pointer(&xo), unsafe.Sizeof(xo)); err == nil {
			s.zeroCopy = xo&unix.XDP_OPTIONS_ZEROCOPY != 0
		}
		s.fallback = errors.Join(reasons...)
		return nil
	}
	return errors.Join(reasons...)
}

func bindFlagsString(flags uint16) string {
	var parts []string
	for _, f := range []struct {
		bit  uint16
		name string
	}{
		{unix.XDP_COPY, "XDP_COPY"},
		{unix.XDP_ZEROCOPY, "XDP_ZEROCOPY"},
		{unix.XDP_USE_NEED_WAKEUP, "XDP_USE_NEED_WAKEUP"},
		{unix.XDP_USE_SG, "XDP_USE_SG"},
	} {
		if flags&f.bit != 0 {
			parts = append(parts, f.name)
		}
	}
	return strings.Join(parts, "|")
}

// FD is the socket's file descriptor, to store in an XSKMAP at the queue's
// index. The socket keeps ownership: do not close it.
func (s *Socket) FD() int { return s.fd }

// Ifindex is the interface the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue is the RX queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// ZeroCopy reports whether the kernel bound the socket in zero-copy mode.
func (s *Socket) ZeroCopy() bool { return s.zeroCopy }

// MultiBuffer reports whether the socket was bound with XDP_USE_SG. Without
// it the kernel drops packets that do not fit a frame and counts them in
// SocketStats.RxDropped.
func (s *Socket) MultiBuffer() bool { return s.multiBuffer }

// FallbackReason is nil when the socket got the first flag set its options
// asked for, and otherwise the errors of the bind attempts that failed, for
// example why zero-copy was refused.
func (s *Socket) FallbackReason() error { return s.fallback }

// UMEM is the socket's packet memory.
func (s *Socket) UMEM() *UMEM { return s.umem }

// Frame returns the packet bytes of d, aliasing the UMEM until d is released.
func (s *Socket) Frame(d Desc) []byte { return s.umem.Frame(d) }

// Meta returns the metadata before the packet of d (see UMEM.Meta).
func (s *Socket) Meta(d Desc) []byte { return s.umem.Meta(d) }

// Receive moves up to len(batch) ready descriptors from the RX ring into
// batch and returns how many; it never blocks and returns 0 when nothing is
// ready. It only returns whole packets: a multi-buffer packet's descriptors
// are all in one batch. The frames belong to the caller until it passes the
// descriptors to Release. Receive allocates nothing.
func (s *Socket) Receive(batch []Desc) (int, error) {
	if s.fd < 0 {
		return 0, ErrSocketClosed
	}
	for refreshed := false; ; refreshed = true {
		n := s.rx.avail(uint32(len(batch)))
		if n == 0 {
			if len(s.pending) > 0 {
				s.flushPending(s.fill.free(uint32(len(s.pending))))
				s.fill.submit()
			}
			if s.fill.needWakeup() {
				if err := s.kick(); err != nil {
					return 0, err
				}
			}
			return 0, nil
		}
		end := 0
		for i := range n {
			d := s.rx.at(i)
			batch[i] = d
			if !d.More() {
				end = int(i) + 1
			}
		}
		if end > 0 {
			s.rx.release(uint32(end))
			return end, nil
		}
		if n == uint32(len(batch)) {
			return 0, ErrSocketBatchTooSmall
		}
		// The cache ends inside a packet. The kernel publishes whole
		// packets, so the rest is there once we look again.
		if refreshed {
			return 0, nil
		}
		s.rx.cachedProd = s.rx.cachedCons
	}
}

// Release gives the frames of batch back to the kernel through the fill ring.
// It allocates nothing.
func (s *Socket) Release(batch []Desc) error {
	if s.fd < 0 {
		return ErrSocketClosed
	}
	n := uint32(len(batch))
	free := s.fill.free(n + uint32(len(s.pending)))
	if len(s.pending) > 0 {
		free -= s.flushPending(free)
	}
	for i, d := range batch {
		if uint32(i) == free {
			if len(s.pending)+len(batch)-i > cap(s.pending) {
				s.fill.submit()
				return ErrSocketFillRingFull
			}
			for _, d := range batch[i:] {
				s.pending = append(s.pending, s.umem.frameAddr(d.Addr))
			}
			break
		}
		s.fill.put(s.umem.frameAddr(d.Addr))
	}
	s.fill.submit()
	// A zero-copy driver that ran out of buffers sleeps until told that
	// there are new ones.
	if s.fill.needWakeup() {
		return s.kick()
	}
	return nil
}

// flushPending moves up to free parked frames into the fill ring, without
// submitting, and returns how many it moved.
func (s *Socket) flushPending(free uint32) uint32 {
	k := min(free, uint32(len(s.pending)))
	for _, a := range s.pending[:k] {
		s.fill.put(a)
	}
	s.pending = s.pending[:copy(s.pending, s.pending[k:])]
	return k
}

// kick wakes the driver with a non-blocking recvfrom, which is what the
// kernel expects under XDP_USE_NEED_WAKEUP for RX. Transient errors are the
// kernel's business; the one that matters is the socket losing its device.
func (s *Socket) kick() error {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case unix.ENXIO, unix.ENETDOWN:
		return fmt.Errorf("%w: %w", ErrSocketDetached, errno)
	}
	return nil
}

// Poll waits up to timeout for the RX ring to have descriptors, and reports
// whether it has. Polling also wakes the driver when it waits for fill ring
// entries. When the wait times out, Poll checks that the socket is still
// bound and returns ErrSocketDetached if not.
func (s *Socket) Poll(timeout time.Duration) (bool, error) {
	if s.fd < 0 {
		return false, ErrSocketClosed
	}
	ms := int(timeout / time.Millisecond)
	if timeout < 0 {
		ms = -1
	}
	s.pollfd[0].Revents = 0
	n, err := unix.Poll(s.pollfd[:], ms)
	if errors.Is(err, unix.EINTR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("poll xdp socket: %w", err)
	}
	if n == 0 {
		return false, s.kick()
	}
	return s.pollfd[0].Revents&unix.POLLIN != 0, nil
}

// Run receives in a loop until ctx is done, calling handle with each batch
// of whole packets and releasing the batch when handle returns: handle must
// not keep the frames. batch is the caller's buffer, at least
// SocketMaxFragments long for multi-buffer sockets; Run allocates nothing
// per packet. Run returns nil when ctx is done, the first error of handle,
// or the socket's error.
func (s *Socket) Run(ctx context.Context, batch []Desc, handle func(batch []Desc) error) error {
	done := ctx.Done()
	for {
		select {
		case <-done:
			return nil
		default:
		}
		n, err := s.Receive(batch)
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := s.Poll(s.pollTimeout); err != nil {
				return err
			}
			continue
		}
		herr := handle(batch[:n])
		if err := s.Release(batch[:n]); err != nil {
			return errors.Join(herr, err)
		}
		if herr != nil {
			return herr
		}
	}
}

// SocketStats are the kernel's per-socket counters (struct xdp_statistics).
type SocketStats struct {
	// RxDropped: packets dropped for other reasons than the two below,
	// for example longer than a frame without multi-buffer.
	RxDropped uint64 `json:"rx_dropped"`
	// RxInvalidDescs, TxInvalidDescs: descriptors the kernel rejected.
	RxInvalidDescs uint64 `json:"rx_invalid_descs"`
	TxInvalidDescs uint64 `json:"tx_invalid_descs"`
	// RxRingFull: packets dropped because the RX ring was full (the
	// consumer is behind). Since 5.9, like the two below.
	RxRingFull uint64 `json:"rx_ring_full"`
	// RxFillRingEmptyDescs: times the kernel found no frame in the fill
	// ring (every frame held by the consumer or queued in the RX ring).
	RxFillRingEmptyDescs uint64 `json:"rx_fill_ring_empty_descs"`
	// TxRingEmptyDescs: times the TX ring was empty; zero for receivers.
	TxRingEmptyDescs uint64 `json:"tx_ring_empty_descs"`
}

// Stats reads the socket's counters (getsockopt XDP_STATISTICS). On kernels
// before 5.9 the last three fields stay zero.
func (s *Socket) Stats() (SocketStats, error) {
	if s.fd < 0 {
		return SocketStats{}, ErrSocketClosed
	}
	var st unix.XDPStatistics
	if _, err := getsockopt(s.fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st)); err != nil {
		return SocketStats{}, fmt.Errorf("get xdp statistics: %w", err)
	}
	return SocketStats{
		RxDropped:            st.Rx_dropped,
		RxInvalidDescs:       st.Rx_invalid_descs,
		TxInvalidDescs:       st.Tx_invalid_descs,
		RxRingFull:           st.Rx_ring_full,
		RxFillRingEmptyDescs: st.Rx_fill_ring_empty_descs,
		TxRingEmptyDescs:     st.Tx_ring_empty_descs,
	}, nil
}

// Close unmaps the rings, closes the socket (which removes it from any
// XSKMAP) and unmaps the UMEM. Frames the caller still holds are invalid
// afterwards. Closing twice is a no-op.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := errors.Join(s.rx.unmap(), s.fill.unmap(), s.comp.unmap())
	if cerr := unix.Close(s.fd); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close xdp socket: %w", cerr))
	}
	s.fd = -1
	if uerr := s.umem.unmap(); uerr != nil {
		err = errors.Join(err, fmt.Errorf("unmap umem: %w", uerr))
	}
	return err
}

// SocketPacket returns the descriptors of the first packet in descs: one
// for a packet that fits a frame, the whole run for a multi-buffer packet.
// Slice descs past it for the next one.
func SocketPacket(descs []Desc) []Desc {
	for i, d := range descs {
		if !d.More() {
			return descs[:i+1]
		}
	}
	return descs
}

// SocketPacketLen is the length of the packet made of pkt's descriptors.
func SocketPacketLen(pkt []Desc) int {
	n := 0
	for _, d := range pkt {
		n += int(d.Len)
	}
	return n
}

// AppendPacket appends the bytes of the packet made of pkt's descriptors
// (from SocketPacket) to dst: the reassembled frame of a multi-buffer packet.
// Writers that can gather (writev) should write each Frame instead.
func (s *Socket) AppendPacket(dst []byte, pkt []Desc) []byte {
	for _, d := range pkt {
		dst = append(dst, s.umem.Frame(d)...)
	}
	return dst
}

// PinToCPU locks the calling goroutine to its OS thread and restricts that
// thread to cpu, so that a queue's worker runs where the queue's interrupts
// land. The goroutine stays locked: if it exits, the runtime discards the
// thread rather than reuse it with a narrowed affinity.
func PinToCPU(cpu int) error {
	if cpu < 0 || cpu >= len(unix.CPUSet{})*bits.UintSize {
		return fmt.Errorf("pin to cpu %d: out of range", cpu)
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	// pid 0 is the calling thread, not the whole process.
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	return nil
}

// ethtoolChannels is struct ethtool_channels (ETHTOOL_GCHANNELS).
type ethtoolChannels struct {
	Cmd                                         uint32
	MaxRx, MaxTx, MaxOther, MaxCombined         uint32
	RxCount, TxCount, OtherCount, CombinedCount uint32
}

// ifreqData is struct ifreq carrying a pointer in its union, as SIOCETHTOOL
// wants; x/sys/unix keeps its own version private.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [unsafe.Sizeof(unix.Ifreq{}) - unix.IFNAMSIZ - unsafe.Sizeof(uintptr(0))]byte
}

// RxQueueCount returns how many RX queues ifname has, so that one socket can
// be bound per queue: the rx-only plus combined channels ethtool reports,
// or, for drivers without ETHTOOL_GCHANNELS, the rx-* entries in
// /sys/class/net/IFNAME/queues.
func RxQueueCount(ifname string) (int, error) {
	n, err := ethtoolRxQueues(ifname)
	if err == nil && n > 0 {
		return n, nil
	}
	n, serr := sysfsRxQueues(ifname)
	if serr != nil {
		return 0, errors.Join(err, serr)
	}
	return n, nil
}

func ethtoolRxQueues(ifname string) (int, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for ethtool: %w", err)
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{Cmd: unix.ETHTOOL_GCHANNELS}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&ch)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, fmt.Errorf("ethtool get channels of %s: %w", ifname, errno)
	}
	return int(ch.RxCount + ch.CombinedCount), nil
}

func sysfsRxQueues(ifname string) (int, error) {
	ents, err := os.ReadDir("/sys/class/net/" + ifname + "/queues")
	if err != nil {
		return 0, fmt.Errorf("count rx queues of %s: %w", ifname, err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "rx-") {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("count rx queues of %s: none in sysfs", ifname)
	}
	return n, nil
}
