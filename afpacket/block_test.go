package afpacket

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// synthPkt is one packet of a block built by buildBlock.
type synthPkt struct {
	data    []byte
	origLen int
	sec     uint32
	nsec    uint32
	status  uint32
	tci     uint32
	tpid    uint16
}

// macOff is where the kernel puts a 14-byte link header behind
// tpacket3_hdr and sockaddr_ll: TPACKET_ALIGN(48+20+16) - 14 + 14 = 82.
const macOff = 82

// buildBlock lays packets out in a block the way tpacket_rcv does.
func buildBlock(size int, pkts []synthPkt) []byte {
	b := make([]byte, size)
	ne.PutUint32(b[8:], unix.TP_STATUS_USER)
	ne.PutUint32(b[bdNumPkts:], uint32(len(pkts)))
	ne.PutUint32(b[bdFirstPkt:], blockDescLen)
	off, prev := blockDescLen, -1
	for _, p := range pkts {
		total := (macOff + len(p.data) + 15) &^ 15
		if off+total > size {
			panic("block too small")
		}
		h := b[off:]
		ne.PutUint32(h[phNextOffset:], uint32(total))
		ne.PutUint32(h[phSec:], p.sec)
		ne.PutUint32(h[phNsec:], p.nsec)
		ne.PutUint32(h[phSnaplen:], uint32(len(p.data)))
		ne.PutUint32(h[phLen:], uint32(p.origLen))
		ne.PutUint32(h[phStatus:], unix.TP_STATUS_USER|p.status)
		ne.PutUint16(h[phMac:], macOff)
		ne.PutUint32(h[phVLANTCI:], p.tci)
		ne.PutUint16(h[phVLANTPID:], p.tpid)
		copy(h[macOff:], p.data)
		prev = off
		off += total
	}
	if prev >= 0 {
		ne.PutUint32(b[prev+phNextOffset:], 0)
	}
	ne.PutUint32(b[bdBlkLen:], uint32(off))
	return b
}

// fakeRing is a Ring over one block of ordinary memory.
func fakeRing(blk []byte) *Ring {
	r := &Ring{blockSize: len(blk), nblocks: 1, mem: blk, scratch: make([]byte, len(blk)+4), ifindex: 3}
	r.pkt.Ifindex = 3
	return r
}

func walkAll(r *Ring, fn func(p *Packet) error) error {
	r.open()
	return r.walk(r.mem, fn)
}

func TestWalk(t *testing.T) {
	frameA := ether(nil, unix.ETH_P_IP, udp4(1, 2, 1, 18))
	frameB := ether(nil, unix.ETH_P_IP, udp4(1, 2, 2, 100))
	tagged := ether([]tag{{0x88a8, 0x2005}}, unix.ETH_P_IP, udp4(1, 2, 3, 30))
	stripped := append(append([]byte{}, tagged[:12]...), tagged[16:]...)
	tagged8100 := ether([]tag{{0x8100, 7}}, unix.ETH_P_IP, udp4(1, 2, 4, 30))
	blk := buildBlock(4096, []synthPkt{
		{data: frameA, origLen: len(frameA), sec: 1700000000, nsec: 123456789},
		{data: frameB[:64], origLen: len(frameB), sec: 1700000001, nsec: 1},
		{data: stripped, origLen: len(stripped), status: unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID, tci: 0x2005, tpid: 0x88a8},
		// Without TP_STATUS_VLAN_TPID_VALID (kernels before 3.14) the TPID is 802.1Q.
		{data: append(append([]byte{}, tagged8100[:12]...), tagged8100[16:]...), origLen: len(tagged8100) - 4, status: unix.TP_STATUS_VLAN_VALID, tci: 7, tpid: 0x1234},
	})
	r := fakeRing(blk)
	var got []frame
	err := walkAll(r, func(p *Packet) error {
		got = append(got, frame{Data: bytes.Clone(p.Data), OrigLen: p.OrigLen, Timestamp: p.Timestamp, Ifindex: p.Ifindex})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []frame{
		{Data: frameA, OrigLen: len(frameA), Timestamp: 1700000000123456789, Ifindex: 3},
		{Data: frameB[:64], OrigLen: len(frameB), Timestamp: 1700000001000000001, Ifindex: 3},
		{Data: tagged, OrigLen: len(tagged), Timestamp: 0, Ifindex: 3},
		{Data: tagged8100, OrigLen: len(tagged8100), Timestamp: 0, Ifindex: 3},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].Data, want[i].Data) || got[i].OrigLen != want[i].OrigLen || got[i].Timestamp != want[i].Timestamp || got[i].Ifindex != want[i].Ifindex {
			t.Errorf("packet %d: got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if r.delivered.Load() != 4 || r.malformed.Load() != 0 {
		t.Errorf("delivered %d, malformed %d", r.delivered.Load(), r.malformed.Load())
	}
}

// TestWalkAliasing pins down the aliasing rule: untagged Data points into the
// ring, tagged Data into the scratch buffer, which the next tagged packet
// overwrites.
func TestWalkAliasing(t *testing.T) {
	f := ether(nil, unix.ETH_P_IP, udp4(1, 2, 1, 18))
	blk := buildBlock(4096, []synthPkt{
		{data: f, origLen: len(f)},
		{data: f, origLen: len(f), status: unix.TP_STATUS_VLAN_VALID, tci: 1},
	})
	r := fakeRing(blk)
	var ptrs []*byte
	if err := walkAll(r, func(p *Packet) error { ptrs = append(ptrs, unsafe.SliceData(p.Data)); return nil }); err != nil {
		t.Fatal(err)
	}
	ringStart, ringEnd := uintptr(unsafe.Pointer(&blk[0])), uintptr(unsafe.Pointer(&blk[len(blk)-1]))
	if p := uintptr(unsafe.Pointer(ptrs[0])); p < ringStart || p > ringEnd {
		t.Errorf("untagged Data at %#x, outside the ring [%#x, %#x]", p, ringStart, ringEnd)
	}
	if ptrs[1] != &r.scratch[0] {
		t.Errorf("tagged Data at %p, not the scratch buffer %p", ptrs[1], &r.scratch[0])
	}
}

func TestWalkResume(t *testing.T) {
	var pkts []synthPkt
	for i := range 10 {
		f := ether(nil, unix.ETH_P_IP, udp4(1, 2, uint32(i), 18))
		pkts = append(pkts, synthPkt{data: f, origLen: len(f)})
	}
	r := fakeRing(buildBlock(4096, pkts))
	errStop := errors.New("stop")
	var seqs []uint32
	fn := func(p *Packet) error {
		seqs = append(seqs, seqOf(p.Data))
		if len(seqs)%3 == 0 {
			return errStop
		}
		return nil
	}
	r.open()
	for {
		err := r.walk(r.mem, fn)
		if err == nil {
			break
		}
		if !errors.Is(err, errStop) {
			t.Fatal(err)
		}
	}
	for i, s := range seqs {
		if s != uint32(i) || len(seqs) != 10 {
			t.Fatalf("sequence %v, want 0..9", seqs)
		}
	}
}

// TestWalkMalformed feeds blocks whose headers point outside the block: no
// panic, no packet outside the block, every packet counted once.
func TestWalkMalformed(t *testing.T) {
	f := ether(nil, unix.ETH_P_IP, udp4(1, 2, 1, 18))
	good := func() []byte {
		return buildBlock(4096, []synthPkt{{data: f, origLen: len(f)}, {data: f, origLen: len(f)}, {data: f, origLen: len(f)}})
	}
	second := blockDescLen + (macOff+len(f)+15)&^15
	cases := []struct {
		name      string
		mod       func(b []byte)
		delivered uint64
	}{
		{"first packet past the end", func(b []byte) { ne.PutUint32(b[bdFirstPkt:], 4090) }, 0},
		{"first packet inside the block header", func(b []byte) { ne.PutUint32(b[bdFirstPkt:], 8) }, 0},
		{"first packet offset 2^32-1", func(b []byte) { ne.PutUint32(b[bdFirstPkt:], 1<<32-1) }, 0},
		{"mac offset past the end", func(b []byte) { ne.PutUint16(b[second+phMac:], 0xffff) }, 1},
		{"mac offset inside the header", func(b []byte) { ne.PutUint16(b[second+phMac:], 4) }, 1},
		{"snaplen past the end", func(b []byte) { ne.PutUint32(b[second+phSnaplen:], 4000) }, 1},
		{"snaplen 2^32-1", func(b []byte) { ne.PutUint32(b[second+phSnaplen:], 1<<32-1) }, 1},
		{"blk_len cuts the last packet", func(b []byte) { ne.PutUint32(b[bdBlkLen:], uint32(second+100)) }, 1},
		{"blk_len past the block", func(b []byte) { ne.PutUint32(b[bdBlkLen:], 1<<31) }, 3},
		{"next offset 0 too early", func(b []byte) { ne.PutUint32(b[blockDescLen+phNextOffset:], 0) }, 1},
		{"next offset 2^32-1", func(b []byte) { ne.PutUint32(b[blockDescLen+phNextOffset:], 1<<32-1) }, 1},
		{"more packets than the chain", func(b []byte) { ne.PutUint32(b[bdNumPkts:], 1000) }, 3},
		{"tiny snaplen with a tag", func(b []byte) {
			ne.PutUint32(b[second+phSnaplen:], 3)
			ne.PutUint32(b[second+phStatus:], unix.TP_STATUS_VLAN_VALID)
		}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			blk := good()
			c.mod(blk)
			r := fakeRing(blk)
			n := ne.Uint32(blk[bdNumPkts:])
			err := walkAll(r, func(p *Packet) error {
				if !within(p.Data, blk) && !within(p.Data, r.scratch) {
					t.Errorf("Data outside the block and the scratch buffer")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if d, m := r.delivered.Load(), r.malformed.Load(); d != c.delivered || d+m != uint64(n) {
				t.Errorf("delivered %d, malformed %d; want %d delivered, %d in all", d, m, c.delivered, n)
			}
		})
	}
}

func within(s, buf []byte) bool {
	if len(s) == 0 {
		return true
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(s))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return p >= lo && p+uintptr(len(s)) <= lo+uintptr(len(buf))
}

// TestInsertTagScratchFull: a frame longer than the scratch buffer is cut,
// not a panic.
func TestInsertTagScratchFull(t *testing.T) {
	r := &Ring{scratch: make([]byte, 20)}
	data := bytes.Repeat([]byte{0xaa}, 100)
	got := r.insertTag(data, 0x8100, 5)
	want := append(append(bytes.Repeat([]byte{0xaa}, 12), 0x81, 0x00, 0x00, 0x05), 0xaa, 0xaa, 0xaa, 0xaa)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

func FuzzWalk(f *testing.F) {
	fr := ether(nil, unix.ETH_P_IP, udp4(1, 2, 1, 18))
	f.Add(buildBlock(1024, []synthPkt{{data: fr, origLen: len(fr)}, {data: fr, origLen: len(fr), status: unix.TP_STATUS_VLAN_VALID}}))
	f.Add(buildBlock(1024, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		blk := make([]byte, 1024)
		copy(blk, in)
		r := fakeRing(blk)
		r.scratch = r.scratch[:64]
		n := ne.Uint32(blk[bdNumPkts:])
		err := walkAll(r, func(p *Packet) error {
			if !within(p.Data, blk) && !within(p.Data, r.scratch) {
				t.Fatal("Data outside the block and the scratch buffer")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if d, m := r.delivered.Load(), r.malformed.Load(); d+m != uint64(n) {
			t.Fatalf("delivered %d + malformed %d != num_pkts %d", d, m, n)
		}
	})
}
