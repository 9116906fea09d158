//go:build linux

package xdp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/internal/hugemem"
)

// UMEM is the packet memory of one socket: NumFrames chunks of FrameSize
// bytes in one anonymous mapping, registered with the kernel by
// XDP_UMEM_REG. The kernel writes each received packet into a chunk the
// socket handed it through the fill ring, laid out as:
//
//	chunk start                                       chunk start + FrameSize
//	| Headroom | XDP_PACKET_HEADROOM (256)       | packet data ...          |
//	           |             ... | meta (MetaLen) ^ Desc.Addr
//
// The 256 bytes of XDP_PACKET_HEADROOM are reserved by the kernel in every
// mode; bpf_xdp_adjust_meta grows the metadata backwards from the packet
// start into it, and the kernel copies that metadata along with the packet
// in copy mode (and it is already in place in zero-copy mode, where the
// driver runs XDP on the chunk itself). So the metadata needs no extra
// user headroom; Headroom is space the kernel never touches, for callers
// that want to prepend their own header in place.
type UMEM struct {
	region    hugemem.Region
	mem       []byte
	frameSize uint64
	frameMask uint64 // ^(frameSize-1): frame sizes are powers of two
	headroom  uint32
	metaLen   uint64
}

func newUMEM(numFrames, frameSize, headroom, metaLen int) (*UMEM, error) {
	size := numFrames * frameSize
	// In huge pages: every packet lands in a chunk of its own, so in base
	// pages the receive loop took a TLB miss on nearly every packet (256
	// MiB of chunks), and the first touch of a packet was the most costly
	// load of the AF_XDP path. The pages are faulted in when the kernel
	// pins the area at registration, not on the receive path.
	region, err := hugemem.Map(size)
	if err != nil {
		return nil, fmt.Errorf("umem: %w", err)
	}
	return &UMEM{
		region:    region,
		mem:       region.Mem[:size],
		frameSize: uint64(frameSize),
		frameMask: ^uint64(frameSize - 1),
		headroom:  uint32(headroom),
		metaLen:   uint64(metaLen),
	}, nil
}

// register hands the area to the socket fd (XDP_UMEM_REG), which pins it.
func (u *UMEM) register(fd int) error {
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&u.mem[0]))),
		Len:      uint64(len(u.mem)),
		Size:     uint32(u.frameSize),
		Headroom: u.headroom,
	}
	if err := setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("register umem: %w", err)
	}
	return nil
}

func (u *UMEM) unmap() error {
	if u == nil || u.mem == nil {
		return nil
	}
	u.mem = nil
	return u.region.Unmap()
}

// NumFrames is the number of chunks in the area.
func (u *UMEM) NumFrames() int { return len(u.mem) / int(u.frameSize) }

// FrameSize is the size of one chunk.
func (u *UMEM) FrameSize() int { return int(u.frameSize) }

// Bytes is the whole area. It aliases kernel-written memory: only the frames
// of descriptors returned by Receive and not yet released are stable.
func (u *UMEM) Bytes() []byte { return u.mem }

// Frame returns the bytes of d, aliasing the UMEM: valid until d is released.
func (u *UMEM) Frame(d Desc) []byte {
	return u.mem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
}

// Meta returns the MetaLen bytes the XDP program placed immediately before
// the packet with bpf_xdp_adjust_meta. Only the first descriptor of a
// packet carries metadata; for a continuation descriptor, and when the
// program wrote none, the bytes are whatever the chunk held before.
func (u *UMEM) Meta(d Desc) []byte {
	return u.mem[d.Addr-u.metaLen : d.Addr : d.Addr]
}

// frameAddr is the chunk start of an address inside the chunk.
func (u *UMEM) frameAddr(addr uint64) uint64 { return addr & u.frameMask }

// setsockopt and getsockopt take raw structs: x/sys/unix has no typed
// wrappers for the AF_XDP ones.
func setsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// getsockopt returns the length the kernel wrote.
func getsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return uintptr(l), nil
}
