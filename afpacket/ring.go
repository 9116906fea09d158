package afpacket

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("afpacket: ring closed")

// FanoutMode selects how the kernel spreads packets over the Rings of one
// fanout group.
type FanoutMode int

const (
	// FanoutNone: the Ring joins no group and sees every packet of the
	// interface.
	FanoutNone FanoutMode = iota
	// FanoutHash: by the kernel's symmetric flow hash, so both directions of a
	// flow go to the same Ring (PACKET_FANOUT_HASH).
	FanoutHash
	// FanoutCPU: by the CPU that received the packet (PACKET_FANOUT_CPU);
	// pairs with RSS and one Ring per CPU.
	FanoutCPU
	// FanoutQM: by the NIC's receive queue (PACKET_FANOUT_QM).
	FanoutQM
	// FanoutLB: round robin (PACKET_FANOUT_LB); flows are split across Rings.
	FanoutLB
)

func (m FanoutMode) kernel() (uint32, error) {
	switch m {
	case FanoutHash:
		return unix.PACKET_FANOUT_HASH, nil
	case FanoutCPU:
		return unix.PACKET_FANOUT_CPU, nil
	case FanoutQM:
		return unix.PACKET_FANOUT_QM, nil
	case FanoutLB:
		return unix.PACKET_FANOUT_LB, nil
	}
	return 0, fmt.Errorf("unknown fanout mode %d", int(m))
}

// Options configure a Ring. Start from DefaultOptions.
type Options struct {
	// BlockSize is the size of one ring block in bytes, a multiple of the
	// page size. It bounds the largest frame the ring can hold; bigger
	// blocks mean fewer hand-overs per packet.
	BlockSize int
	// BlockCount is the number of blocks. BlockSize*BlockCount is pinned
	// kernel memory and is what absorbs bursts while the consumer is busy.
	BlockCount int
	// FrameSize only has to satisfy the kernel's tpacket_req3 checks (a
	// multiple of 16 that divides BlockSize); TPACKET_V3 packs packets of
	// any size into a block regardless.
	FrameSize int
	// BlockTimeout retires a block that is not full yet, so packets on a
	// quiet link reach the consumer within one to two timeouts
	// (retire_blk_tov, millisecond resolution). It also bounds how much a
	// stalled consumer can fall behind: a block retired early by the timer
	// is sent on partly empty, so the ring holds at most about
	// BlockCount*BlockTimeout of traffic, however large the blocks. The
	// default 50 ms lets 4 MiB blocks fill at 1.3 M minimum-size packets/s
	// (29k per block, 22 ms) and still shows packets well within stenod's
	// one-second promise; 10 ms would halve the ring at that rate.
	BlockTimeout time.Duration
	// SnapLen caps the bytes captured per frame, counted on the frame as it
	// crossed the wire (a re-inserted VLAN tag included). 0 captures whole
	// frames, up to what one block holds.
	SnapLen int
	// BPFFilterFD, if not 0, is the file descriptor of an eBPF socket
	// filter (BPF_PROG_TYPE_SOCKET_FILTER), attached with SO_ATTACH_BPF in
	// place of the classic filter that cuts frames to SnapLen: it returns 0
	// to drop a packet, else the bytes to keep, and must do the snap length
	// itself, 4 bytes less for a frame whose outer VLAN tag the kernel took
	// out (xdp.Program.SocketFilter does, with the same SnapLen in its
	// configuration). SnapLen still sizes the Ring's buffers. The kernel
	// holds its own reference: the caller may close the descriptor after
	// Open.
	BPFFilterFD int
	// Fanout and FanoutGroup make this Ring one of several that share the
	// interface's packets; every Ring of a group must use the same mode.
	// Each packet goes to exactly one Ring of the group. FanoutPick
	// starts a new group under an id the kernel picks, one no socket of
	// the network namespace uses (PACKET_FANOUT_FLAG_UNIQUEID), and
	// ignores FanoutGroup; the others join it with Ring.FanoutGroup's id.
	// (The kernel's ids wrap around, so 0 is an id like any other and
	// cannot mean "pick one".)
	Fanout      FanoutMode
	FanoutGroup uint16
	FanoutPick  bool
	// FanoutDefrag asks the kernel to reassemble IPv4 fragments before
	// choosing a Ring, so every fragment of a datagram lands in the same
	// Ring. The Ring then sees the reassembled datagram, not the fragments
	// that crossed the wire: leave it off for full-packet capture.
	FanoutDefrag bool
	// Promiscuous puts the interface into promiscuous mode for as long as
	// the Ring is open (PACKET_MR_PROMISC, reference counted by the kernel).
	Promiscuous bool
	// IgnoreOutgoing hides packets this host sends on the interface, so
	// only ingress is captured (PACKET_IGNORE_OUTGOING, kernel 4.20).
	IgnoreOutgoing bool
	// PollInterval bounds how long Next waits for a block before it looks
	// again at the ring (a safety net: the kernel's wake-up comes with
	// every block). Close and the end of Next's context wake a waiting
	// Next at once.
	PollInterval time.Duration
}

// DefaultOptions returns options for a capture port: 64 blocks of 4 MiB
// (256 MiB: 1.86 M minimum-size frames, 1.4 s at 1.3 M packets/s),
// 50 ms block timeout, whole frames, promiscuous, ingress only.
func DefaultOptions() Options {
	return Options{
		BlockSize:      4 << 20,
		BlockCount:     64,
		FrameSize:      2048,
		BlockTimeout:   50 * time.Millisecond,
		SnapLen:        0,
		Promiscuous:    true,
		IgnoreOutgoing: true,
		PollInterval:   50 * time.Millisecond,
	}
}

// Sizes of the kernel structures the ring holds (include/uapi/linux/if_packet.h).
const (
	blockDescLen  = 48 // struct tpacket_block_desc with tpacket_hdr_v1
	tpacket3Len   = 48 // struct tpacket3_hdr
	sockaddrLLLen = 20 // struct sockaddr_ll, which follows tpacket3_hdr
	minSnapLen    = 16 // Ethernet header plus the 2 bytes a re-inserted tag pushes out
)

func (o *Options) validate() error {
	page := os.Getpagesize()
	switch {
	case o.BlockSize <= 0 || o.BlockSize%page != 0:
		return fmt.Errorf("block size %d is not a positive multiple of the page size %d", o.BlockSize, page)
	case o.BlockCount <= 0:
		return fmt.Errorf("block count %d is not positive", o.BlockCount)
	case uint64(o.BlockSize)*uint64(o.BlockCount) > 1<<40:
		return fmt.Errorf("ring of %d blocks of %d bytes is too large", o.BlockCount, o.BlockSize)
	case o.FrameSize < tpacket3Len+sockaddrLLLen || o.FrameSize%16 != 0 || o.FrameSize > o.BlockSize:
		return fmt.Errorf("frame size %d must be a multiple of 16 between %d and the block size", o.FrameSize, tpacket3Len+sockaddrLLLen)
	case uint64(o.BlockSize/o.FrameSize)*uint64(o.BlockCount) > 1<<32-1:
		return fmt.Errorf("frame size %d makes too many frames", o.FrameSize)
	case o.BlockTimeout < 0 || o.BlockTimeout > time.Duration(1<<32-1)*time.Millisecond:
		return fmt.Errorf("block timeout %v out of range", o.BlockTimeout)
	case o.SnapLen != 0 && o.SnapLen < minSnapLen:
		return fmt.Errorf("snap length %d is below %d", o.SnapLen, minSnapLen)
	case o.PollInterval <= 0:
		return fmt.Errorf("poll interval %v is not positive", o.PollInterval)
	case o.BPFFilterFD < 0:
		return fmt.Errorf("eBPF filter fd %d is negative", o.BPFFilterFD)
	}
	if o.Fanout != FanoutNone {
		if _, err := o.Fanout.kernel(); err != nil {
			return err
		}
	}
	return nil
}

// Packet is one captured frame, handed to the function given to Next.
type Packet struct {
	// Timestamp is the kernel's receive time in Unix nanoseconds.
	Timestamp int64
	// OrigLen is the frame's length on the wire, without FCS.
	OrigLen int
	// Data is the captured frame: the first min(OrigLen, SnapLen) bytes.
	// It aliases the ring or the Ring's scratch buffer and is valid only
	// until the function given to Next returns.
	Data []byte
	// Ifindex is the index of the interface the frame arrived on.
	Ifindex int
}

// Time returns Timestamp as a time.Time.
func (p *Packet) Time() time.Time { return time.Unix(0, p.Timestamp) }

// Stats are a Ring's counters since Open.
type Stats struct {
	// Packets is every packet the kernel offered the socket, whether it
	// found room in the ring or not (tp_packets, which includes tp_drops).
	Packets uint64 `json:"packets"`
	// Drops are packets lost because every block was held by user space
	// (tp_drops).
	Drops uint64 `json:"drops"`
	// QueueFreezes counts the times the kernel found the ring full
	// (tp_freeze_q_cnt).
	QueueFreezes uint64 `json:"queue_freezes"`
	// Delivered is the number of packets Next handed to its function.
	Delivered uint64 `json:"delivered"`
	// Malformed counts packets skipped because their headers pointed
	// outside their block. Anything but zero means the kernel and this
	// package disagree on the ring layout.
	Malformed uint64 `json:"malformed"`
}

// Ring is an open TPACKET_V3 capture socket on one interface.
//
// Concurrent calls to Next take turns (one reader per Ring is the intended
// use; fanout spreads load across Rings); Stats and Close may be
// called from any goroutine at any time.
type Ring struct {
	iface        string
	ifindex      int
	fanoutGroup  uint16
	blockSize    int
	nblocks      int
	pollInterval time.Duration

	// mu serialises Next and Close, so the ring is never unmapped under a
	// reader. Next holds it for at most PollInterval plus fn's run time.
	mu      sync.Mutex
	closing atomic.Bool
	// wakeCtx is the context whose end wakes a waiting Next (wait), and
	// unwake undoes that; both guarded by mu.
	wakeCtx context.Context
	unwake  func() bool
	fd      int
	mem     []byte
	// file owns fd once the ring is set up: it puts the socket into the
	// Go runtime's poller, so a waiting Next parks its goroutine instead
	// of holding a thread in poll(2). A thread blocked in a system call
	// for more than 20 µs has its P taken by sysmon and handed to another
	// thread, which it wakes; with one P that was a thread wake-up and a
	// context switch per wait, and kept sysmon polling every 20 µs.
	file *os.File
	conn syscall.RawConn
	// ready is r.blockReady, bound once so that waiting allocates nothing;
	// woken and sockErr are its state during one wait.
	ready   func(fd uintptr) bool
	woken   bool
	sockErr error

	// The block Next reads or will read, and where it stopped when fn
	// returned an error in the middle of it.
	cur     int
	inBlock bool
	left    uint32
	off     int
	end     int

	pkt     Packet
	scratch []byte

	delivered atomic.Uint64
	malformed atomic.Uint64

	// statsMu guards totals and the fd against Close while Stats reads it.
	statsMu sync.Mutex
	totals  Stats
	fdOpen  bool
}

// Open opens a TPACKET_V3 ring on the interface named iface. It needs
// CAP_NET_RAW, and CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK for the
// ring memory.
func Open(iface string, opts Options) (*Ring, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("afpacket %s: %w", iface, err)
	}
	// Protocol 0 delivers nothing until bind names ETH_P_ALL, so no packet
	// queues up before the ring, filter and options are in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("afpacket %s: socket: %w", iface, err)
	}
	r := &Ring{iface: iface, fd: fd, fdOpen: true, blockSize: opts.BlockSize, nblocks: opts.BlockCount}
	if err := r.setup(&opts); err != nil {
		return nil, errors.Join(err, r.release())
	}
	return r, nil
}

func (r *Ring) setup(o *Options) error {
	ifr, err := unix.NewIfreq(r.iface)
	if err != nil {
		return fmt.Errorf("afpacket %s: interface name: %w", r.iface, err)
	}
	if err := unix.IoctlIfreq(r.fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("afpacket %s: look up interface index: %w", r.iface, err)
	}
	r.ifindex = int(ifr.Uint32())
	if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("afpacket %s: set PACKET_VERSION TPACKET_V3: %w", r.iface, err)
	}
	if o.IgnoreOutgoing {
		if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return fmt.Errorf("afpacket %s: set PACKET_IGNORE_OUTGOING: %w", r.iface, err)
		}
	}
	maxFrame := r.blockSize - blockDescLen
	if o.BPFFilterFD != 0 {
		// Before bind: no packet reaches the ring unfiltered.
		if err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, o.BPFFilterFD); err != nil {
			return fmt.Errorf("afpacket %s: attach eBPF socket filter (fd %d): %w", r.iface, o.BPFFilterFD, err)
		}
	}
	if o.SnapLen != 0 && o.SnapLen < maxFrame {
		if o.BPFFilterFD == 0 {
			if err := attachSnapFilter(r.fd, o.SnapLen); err != nil {
				return fmt.Errorf("afpacket %s: attach snap length filter: %w", r.iface, err)
			}
		}
		maxFrame = o.SnapLen
	}
	r.scratch = make([]byte, maxFrame+4)

	framesPerBlock := o.BlockSize / o.FrameSize
	req := unix.TpacketReq3{
		Block_size:     uint32(o.BlockSize),
		Block_nr:       uint32(o.BlockCount),
		Frame_size:     uint32(o.FrameSize),
		Frame_nr:       uint32(framesPerBlock * o.BlockCount),
		Retire_blk_tov: uint32(max(o.BlockTimeout.Milliseconds(), 1)),
	}
	if err := unix.SetsockoptTpacketReq3(r.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("afpacket %s: set PACKET_RX_RING (%d blocks of %d bytes): %w", r.iface, o.BlockCount, o.BlockSize, err)
	}
	size := o.BlockSize * o.BlockCount
	// MAP_POPULATE: the kernel already holds the pages; faulting them in
	// now keeps 64k page faults out of the first seconds of capture.
	mem, err := unix.Mmap(r.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("afpacket %s: mmap ring of %d bytes: %w", r.iface, size, err)
	}
	r.mem = mem

	if o.Promiscuous {
		mreq := unix.PacketMreq{Ifindex: int32(r.ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(r.fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fmt.Errorf("afpacket %s: set promiscuous mode: %w", r.iface, err)
		}
	}
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: r.ifindex}
	if err := unix.Bind(r.fd, &sa); err != nil {
		return fmt.Errorf("afpacket %s: bind to ifindex %d: %w", r.iface, r.ifindex, err)
	}
	if o.Fanout != FanoutNone {
		// The kernel only lets a bound (running) socket join a group.
		mode, _ := o.Fanout.kernel()
		if o.FanoutDefrag {
			mode |= unix.PACKET_FANOUT_FLAG_DEFRAG
		}
		group := o.FanoutGroup
		if o.FanoutPick {
			mode |= unix.PACKET_FANOUT_FLAG_UNIQUEID
			group = 0
		}
		arg := int(uint32(group) | mode<<16)
		if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg); err != nil {
			return fmt.Errorf("afpacket %s: join fanout group %d: %w", r.iface, o.FanoutGroup, err)
		}
		// The id, the kernel's pick for group 0: the low 16 bits.
		got, err := unix.GetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return fmt.Errorf("afpacket %s: read fanout group: %w", r.iface, err)
		}
		r.fanoutGroup = uint16(got)
	}
	r.pollInterval = o.PollInterval
	r.pkt.Ifindex = r.ifindex
	return r.pollable()
}

// pollable hands the socket to the runtime's poller. From here on the
// os.File owns the descriptor and closes it.
func (r *Ring) pollable() error {
	if err := unix.SetNonblock(r.fd, true); err != nil {
		return fmt.Errorf("afpacket %s: set non-blocking: %w", r.iface, err)
	}
	f := os.NewFile(uintptr(r.fd), "afpacket:"+r.iface)
	r.file = f
	// A deadline is only accepted by a file in the poller.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("afpacket %s: socket not pollable: %w", r.iface, err)
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("afpacket %s: %w", r.iface, err)
	}
	r.conn = conn
	r.ready = r.blockReady
	return nil
}

// FanoutGroup returns the id of the fanout group the Ring joined (the
// kernel's pick with Options.FanoutPick), or 0 without fanout.
func (r *Ring) FanoutGroup() uint16 { return r.fanoutGroup }

// Classic BPF ancillary load of "does the skb carry a VLAN tag" (linux/filter.h).
const (
	skfAdOff              = -0x1000
	skfAdVLANTagPresent   = 48
	bpfLdWAbs             = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeqK               = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfRetK               = unix.BPF_RET | unix.BPF_K
	skfAdVLANTagPresentAt = uint32(1<<32 + skfAdOff + skfAdVLANTagPresent) // k is a u32 holding a negative offset
)

// attachSnapFilter truncates frames in the kernel, before they are copied
// into the ring. The kernel has already taken the outer VLAN tag out of the
// frame, so a tagged frame is cut 4 bytes earlier: once Next puts the tag
// back, every frame is exactly snap bytes of what crossed the wire.
func attachSnapFilter(fd, snap int) error {
	prog := []unix.SockFilter{
		{Code: bpfLdWAbs, K: skfAdVLANTagPresentAt},
		{Code: bpfJeqK, K: 0, Jt: 0, Jf: 1},
		{Code: bpfRetK, K: uint32(snap)},
		{Code: bpfRetK, K: uint32(snap - 4)},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Stats returns the counters since Open. The kernel resets its counters on
// every read, so the Ring adds each read to its totals; after Close, Stats
// returns the final totals.
func (r *Ring) Stats() (Stats, error) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	var err error
	if r.fdOpen {
		err = r.readKernelStats()
	}
	s := r.totals
	s.Delivered = r.delivered.Load()
	s.Malformed = r.malformed.Load()
	return s, err
}

// readKernelStats must be called with statsMu held.
func (r *Ring) readKernelStats() error {
	ks, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("afpacket %s: read PACKET_STATISTICS: %w", r.iface, err)
	}
	r.totals.Packets += uint64(ks.Packets)
	r.totals.Drops += uint64(ks.Drops)
	r.totals.QueueFreezes += uint64(ks.Freeze_q_cnt)
	return nil
}

// Close unmaps the ring and closes the socket. A Next running in another
// goroutine returns ErrClosed at once if it is waiting, or after the block
// it is walking, and Close waits for that. Close must not be called from inside fn. Calling
// Close again returns nil.
func (r *Ring) Close() error {
	if r.closing.Swap(true) {
		return nil
	}
	if r.conn != nil {
		// Wakes a waiting Next, which then sees closing. The deadline
		// comes after closing is set, and Next checks closing after it
		// sets its own deadline, so one of the two always sees the other.
		r.wake()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.release()
}

func (r *Ring) release() error {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	var errs []error
	if r.fdOpen {
		// The last counts would be lost with the socket.
		errs = append(errs, r.readKernelStats())
	}
	if r.mem != nil {
		if err := unix.Munmap(r.mem); err != nil {
			errs = append(errs, fmt.Errorf("afpacket %s: munmap ring: %w", r.iface, err))
		}
		r.mem = nil
	}
	if r.fdOpen {
		closeFD := func() error { return unix.Close(r.fd) }
		if r.file != nil {
			closeFD = r.file.Close
		}
		if err := closeFD(); err != nil {
			errs = append(errs, fmt.Errorf("afpacket %s: close socket: %w", r.iface, err))
		}
		r.fdOpen = false
		r.fd = -1
	}
	return errors.Join(errs...)
}

// statusWord returns block i's block_status, the word through which the
// kernel and user space hand the block to each other.
func (r *Ring) statusWord(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[i*r.blockSize+8]))
}
