//go:build linux

package xdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An AF_XDP ring is a single-producer single-consumer queue shared with the
// kernel through an mmap of the socket at a fixed page offset
// (XDP_PGOFF_RX_RING, XDP_UMEM_PGOFF_FILL_RING, ...). The kernel reports
// where each field sits inside the mapping with getsockopt(XDP_MMAP_OFFSETS),
// one struct xdp_ring_offset per ring:
//
//	offset.Producer  u32  producer index, free running, wraps at 2^32
//	offset.Consumer  u32  consumer index, free running, wraps at 2^32
//	offset.Flags     u32  XDP_RING_NEED_WAKEUP (since 5.4)
//	offset.Desc      [entries]T  T = u64 UMEM address (fill, completion)
//	                             T = struct xdp_desc (rx, tx):
//	                                   u64 addr, u32 len, u32 options
//
// The kernel places producer and consumer on separate cache lines; we never
// assume where, only use the offsets. entries is a power of two, so slot i is
// i & (entries-1). Entries between consumer and producer belong to the
// consumer side, the others to the producer side.
//
// Each side publishes its index with a store-release after touching the
// slots, and reads the other side's index with a load-acquire before touching
// them. Go's sync/atomic loads and stores are sequentially consistent, which
// is at least as strong (LDAR/STLR on arm64, plain MOV plus compiler barrier
// on amd64). The indexes of the other side are cached so that the shared
// cache line is only read when the cached view runs out.

// xdpDescSize is sizeof(struct xdp_desc).
const xdpDescSize = int(unsafe.Sizeof(Desc{}))

// ringMap is one mmapped ring.
type ringMap struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	entries  uint32
}

// mapRing maps the ring with entries elements of elemSize bytes at page
// offset pgoff of the socket fd.
func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, entries uint32, elemSize int) (ringMap, error) {
	length := int(off.Desc) + int(entries)*elemSize
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ringMap{}, fmt.Errorf("mmap ring at offset %#x: %w", pgoff, err)
	}
	for _, o := range []uint64{off.Producer, off.Consumer, off.Flags} {
		if o+4 > off.Desc || o%4 != 0 {
			_ = unix.Munmap(mem)
			return ringMap{}, fmt.Errorf("ring offsets %+v: index field at %d is not below descriptors or not aligned", off, o)
		}
	}
	return ringMap{
		mem:      mem,
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     entries - 1,
		entries:  entries,
	}, nil
}

func (r *ringMap) unmap() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	*r = ringMap{}
	return err
}

// needWakeup reports whether the kernel asks to be kicked (poll, recvfrom)
// before it looks at this ring again. Only set when bound with
// XDP_USE_NEED_WAKEUP.
func (r *ringMap) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// addrRing is a ring of UMEM addresses that user space produces into: the
// fill ring (frames the kernel may write packets to). The completion ring has
// the same layout but is consumed; receive-only sockets never read it.
type addrRing struct {
	ringMap
	addrs      []uint64
	cachedProd uint32 // our producer index, published on submit
	cachedCons uint32 // last seen consumer index + entries: the end of our free space
}

func newAddrRing(m ringMap, off unix.XDPRingOffset) addrRing {
	return addrRing{
		ringMap:    m,
		addrs:      unsafe.Slice((*uint64)(unsafe.Pointer(&m.mem[off.Desc])), m.entries),
		cachedProd: atomic.LoadUint32(m.producer),
		cachedCons: atomic.LoadUint32(m.consumer) + m.entries,
	}
}

// free returns how many slots can be produced, at least n if that many are
// free; it only reads the kernel's consumer index when the cache says fewer
// than n.
func (r *addrRing) free(n uint32) uint32 {
	f := r.cachedCons - r.cachedProd
	if f >= n {
		return f
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.entries
	return r.cachedCons - r.cachedProd
}

// put writes addr into the next slot without publishing it; the caller has
// checked free.
func (r *addrRing) put(addr uint64) {
	r.addrs[r.cachedProd&r.mask] = addr
	r.cachedProd++
}

// submit publishes every slot put so far.
func (r *addrRing) submit() {
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// descRing is a ring of descriptors that user space consumes: the RX ring.
type descRing struct {
	ringMap
	descs      []Desc
	cachedProd uint32 // last seen producer index
	cachedCons uint32 // our consumer index, published on release
}

func newDescRing(m ringMap, off unix.XDPRingOffset) descRing {
	return descRing{
		ringMap:    m,
		descs:      unsafe.Slice((*Desc)(unsafe.Pointer(&m.mem[off.Desc])), m.entries),
		cachedProd: atomic.LoadUint32(m.producer),
		cachedCons: atomic.LoadUint32(m.consumer),
	}
}

// avail returns how many descriptors are ready, up to max; it reads the
// kernel's producer index only when the cached view is empty.
func (r *descRing) avail(max uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n == 0 {
		r.cachedProd = atomic.LoadUint32(r.producer)
		n = r.cachedProd - r.cachedCons
	}
	return min(n, max)
}

// at returns the i-th ready descriptor.
func (r *descRing) at(i uint32) Desc {
	return r.descs[(r.cachedCons+i)&r.mask]
}

// release hands n slots back to the kernel.
func (r *descRing) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}
