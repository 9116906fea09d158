package afpacket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Next waits for the next block of packets, calls fn for each packet of it in
// arrival order, and hands the block back to the kernel once fn has seen all
// of it. It returns nil after a whole block, ctx.Err() when ctx ends while it
// waits, and ErrClosed after Close.
//
// If fn returns an error, Next returns it unchanged and keeps the rest of the
// block: the next call resumes with the packet after the one fn failed on.
// The Packet and its Data are valid only until fn returns (see Packet.Data).
func (r *Ring) Next(ctx context.Context, fn func(p *Packet) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem == nil || r.closing.Load() {
		return ErrClosed
	}
	// Checked before every block, not only while waiting: under endless
	// traffic a block is always ready and the wait is never reached.
	if err := ctx.Err(); err != nil {
		return err
	}
	if !r.inBlock {
		if err := r.wait(ctx); err != nil {
			return err
		}
		r.open()
	}
	if err := r.walk(r.mem[r.cur*r.blockSize:(r.cur+1)*r.blockSize], fn); err != nil {
		return err
	}
	// Release store: every read of the block above happens before the
	// kernel may overwrite it.
	atomic.StoreUint32(r.statusWord(r.cur), unix.TP_STATUS_KERNEL)
	r.inBlock = false
	r.cur++
	if r.cur == r.nblocks {
		r.cur = 0
	}
	return nil
}

// Ready reports whether Next would start without waiting: it is in the
// middle of a block, or the next block belongs to user space.
func (r *Ring) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mem != nil && (r.inBlock || r.userOwned())
}

// wait returns once block r.cur belongs to user space. It parks the
// goroutine in the runtime's poller: the kernel signals the socket when it
// hands a block over (when the block is full, or its timeout retires it).
// A ctx without a deadline wakes it when it ends, as Close does (a read
// deadline in the past), so that it needs no periodic look at ctx: each
// wake-up of a capture thread costs several thread switches, and waking
// every few milliseconds to look had been most of a reader's switches. A
// ctx with a deadline bounds the wait by it instead.
func (r *Ring) wait(ctx context.Context) error {
	if r.userOwned() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok && ctx.Done() != nil && ctx != r.wakeCtx {
		// Once per context, not per wait: the reader's context lives
		// as long as it does, and a registration allocates.
		if r.unwake != nil {
			r.unwake()
		}
		r.wakeCtx, r.unwake = ctx, context.AfterFunc(ctx, r.wake)
	}
	for {
		if r.userOwned() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.closing.Load() {
			return ErrClosed
		}
		now := time.Now()
		deadline := now.Add(r.pollInterval)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			if !d.After(now) {
				// Passed, but ctx's timer may not have fired yet.
				return context.DeadlineExceeded
			}
			deadline = d
		}
		if err := r.file.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("afpacket %s: set deadline: %w", r.iface, err)
		}
		// After the deadline is set: a ctx that ends from here on has
		// its wake come after it.
		if err := ctx.Err(); err != nil {
			return err
		}
		r.woken, r.sockErr = false, nil
		err := r.conn.Read(r.ready)
		if r.sockErr != nil {
			return r.sockErr
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			if r.closing.Load() {
				return ErrClosed
			}
			return fmt.Errorf("afpacket %s: wait for a block: %w", r.iface, err)
		}
	}
}

// wake makes a waiting Next's read return at once.
func (r *Ring) wake() { _ = r.file.SetReadDeadline(time.Unix(1, 0)) }

// userOwned reports whether block r.cur belongs to user space. Acquire
// load: the kernel writes the packets, then block_status (with a write
// barrier), so seeing TP_STATUS_USER makes them visible.
func (r *Ring) userOwned() bool {
	return atomic.LoadUint32(r.statusWord(r.cur))&unix.TP_STATUS_USER != 0
}

// blockReady is wait's test for the poller: done when the block is ours,
// the ring is closing, or, after a wake-up that brought no block, the
// socket reports an error (the interface went down). Reading SO_ERROR
// clears it, so a later Next can go on after the interface comes back up.
func (r *Ring) blockReady(uintptr) bool {
	if r.userOwned() || r.closing.Load() {
		return true
	}
	if r.woken {
		soErr, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			r.sockErr = fmt.Errorf("afpacket %s: read SO_ERROR: %w", r.iface, err)
			return true
		case soErr != 0:
			r.sockErr = fmt.Errorf("afpacket %s: socket error: %w", r.iface, unix.Errno(soErr))
			return true
		}
	}
	r.woken = true
	return false
}

// Layout of a block (struct tpacket_block_desc, include/uapi/linux/if_packet.h),
// all fields in host byte order:
//
//	off  size  field
//	  0     4  version
//	  4     4  offset_to_priv
//	  8     4  block_status         TP_STATUS_KERNEL (0) or TP_STATUS_USER (1) | flags
//	 12     4  num_pkts
//	 16     4  offset_to_first_pkt  from the start of the block
//	 20     4  blk_len              bytes in use, from the start of the block
//	 24     8  seq_num
//	 32     8  ts_first_pkt         {u32 sec, u32 nsec}
//	 40     8  ts_last_pkt
//
// The block's packets follow as a chain of struct tpacket3_hdr, each 16-byte
// aligned:
//
//	off  size  field
//	  0     4  tp_next_offset       from this header to the next; 0 on the last
//	  4     4  tp_sec
//	  8     4  tp_nsec
//	 12     4  tp_snaplen           bytes captured
//	 16     4  tp_len               bytes received (without a stripped VLAN tag)
//	 20     4  tp_status            TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID, ...
//	 24     2  tp_mac               from this header to the frame's first byte
//	 26     2  tp_net
//	 28     4  hv1.tp_rxhash
//	 32     4  hv1.tp_vlan_tci      the stripped outer tag's TCI
//	 36     2  hv1.tp_vlan_tpid     and its TPID
//	 38    10  padding
//
// struct sockaddr_ll sits between the header and the frame; we bind to one
// interface, so its ifindex is known without reading it.
const (
	bdNumPkts    = 12
	bdFirstPkt   = 16
	bdBlkLen     = 20
	phNextOffset = 0
	phSec        = 4
	phNsec       = 8
	phSnaplen    = 12
	phLen        = 16
	phStatus     = 20
	phMac        = 24
	phVLANTCI    = 32
	phVLANTPID   = 36
)

var ne = binary.NativeEndian

// open reads the header of block r.cur and points the walk at its first packet.
func (r *Ring) open() {
	blk := r.mem[r.cur*r.blockSize : (r.cur+1)*r.blockSize]
	r.left, r.off, r.end = blockBounds(blk)
	r.inBlock = true
}

// blockBounds returns a block's packet count, first packet offset and the end
// of its used bytes. A blk_len the block cannot hold falls back to the block
// size; every packet is still checked against that.
func blockBounds(blk []byte) (n uint32, first, end int) {
	n = ne.Uint32(blk[bdNumPkts:])
	first = int(ne.Uint32(blk[bdFirstPkt:]))
	end = int(ne.Uint32(blk[bdBlkLen:]))
	if end < blockDescLen || end > len(blk) {
		end = len(blk)
	}
	return n, first, end
}

// walk calls fn for the packets of blk from r.off on, r.left of them.
func (r *Ring) walk(blk []byte, fn func(p *Packet) error) (err error) {
	blk = blk[:min(r.end, len(blk))]
	p := &r.pkt
	left, off := r.left, r.off
	var done uint64
	for left > 0 {
		if off < blockDescLen || off > len(blk)-tpacket3Len {
			r.malformed.Add(uint64(left))
			left = 0
			break
		}
		h := blk[off : off+tpacket3Len]
		snap := int(ne.Uint32(h[phSnaplen:]))
		start := off + int(ne.Uint16(h[phMac:]))
		if start < off+tpacket3Len || snap > len(blk)-start {
			r.malformed.Add(uint64(left))
			left = 0
			break
		}
		data := blk[start : start+snap : start+snap]
		p.Timestamp = int64(ne.Uint32(h[phSec:]))*1e9 + int64(ne.Uint32(h[phNsec:]))
		p.OrigLen = int(ne.Uint32(h[phLen:]))
		if status := ne.Uint32(h[phStatus:]); status&unix.TP_STATUS_VLAN_VALID != 0 {
			tpid := uint16(0x8100)
			if status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
				tpid = ne.Uint16(h[phVLANTPID:])
			}
			data = r.insertTag(data, tpid, uint16(ne.Uint32(h[phVLANTCI:])))
			p.OrigLen += 4
		}
		p.Data = data

		left--
		next := int(ne.Uint32(h[phNextOffset:]))
		if next == 0 && left > 0 {
			// Out of bounds on purpose: the next round counts the rest
			// as malformed.
			next = len(blk)
		}
		off += next
		done++
		if err = fn(p); err != nil {
			break
		}
	}
	r.left, r.off = left, off
	r.delivered.Add(done)
	return err
}

// insertTag rebuilds the frame as it crossed the wire in r.scratch: MAC
// addresses, the tag the kernel stripped, then the rest of the frame.
func (r *Ring) insertTag(data []byte, tpid, tci uint16) []byte {
	s := r.scratch
	if len(data) > len(s)-4 {
		data = data[:len(s)-4]
	}
	macs := min(len(data), 12)
	copy(s, data[:macs])
	s[macs] = byte(tpid >> 8)
	s[macs+1] = byte(tpid)
	s[macs+2] = byte(tci >> 8)
	s[macs+3] = byte(tci)
	n := copy(s[macs+4:], data[macs:])
	return s[: macs+4+n : macs+4+n]
}
