package index

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/stenod/stenod/flow"
)

// The index file format, version 3 (docs/formats.md has the full spec).
// All integers little endian.
//
//	header, 96 bytes:
//	  0  magic "STENODIX"
//	  8  version u32 (FormatVersion)
//	 12  flags u32 (bit 0: timestamps monotone in file order)
//	 16  first ts i64 | 24 last ts i64
//	 32  packets u64  | 40 wire bytes u64
//	 48  data end i64 (pcap bytes covered)
//	 56  flows u32    | 60 blocks u32
//	 64  flows section length u64
//	 72  positions section length u64
//	 80  interface name length u16, 2 bytes reserved (zero)
//	 84  checksum of the first record u32 (Summary.FirstSum)
//	 88  offset of the last record i64 (Summary.LastOffset)
//	 96  checksum of the last record u32 (Summary.LastSum)
//	100  hash of the pcap file's base name u64 (Summary.NameHash)
//	108  crc32c of header bytes 0-107, so that the header alone (all that
//	     ReadSummary reads to prune files by time) is never trusted unchecked
//	interface name
//	blocks: 24 bytes each (offset i64, min ts i64, max ts i64)
//	flows section: one variable-length record per flow (flowRecord below)
//	positions section: per flow, in flow order, its packet offsets as
//	  uvarint(first offset) then uvarint(offset - previous offset) each
//	sums section: per flow, in flow order, the pcapio.RecordSum (u32) of
//	  each of its packets' records, in the order of its positions; 4 bytes
//	  per packet, so its length follows from the header's packet count
//	crc32c (Castagnoli) u32 of everything before it
//
// Version 1 had no sums section; a version 1 index is refused (ErrVersion)
// and rebuilt from its pcap file, which computes the sums. Version 2 had no
// cut counts in its flow records; it is read as it is, with none (it was
// written before the cutoff existed), and a reader older than version 3
// refuses version 3 and rebuilds the index from its pcap file.
const (
	FormatVersion = 3
	// minVersion is the oldest version Open reads.
	minVersion   = 2
	magic        = "STENODIX"
	headerSize   = 112
	blockSize    = 24
	maxIfaceName = 256
	flagMonotone = 1
	// headerCRCOffset is where the header's own checksum sits.
	headerCRCOffset = 108
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A flow record: flags u8, ethertype u16, proto u8; src and dst (4 bytes each
// for IPv4, 16 for IPv6, absent otherwise); ports u16 u16 if FlagPorts; ICMP
// type u8 and code u8 if FlagICMP (a flag older readers refuse, so that they
// rebuild such an index from its pcap file instead of misreading it); vlan
// u16 per VLAN flag; mpls u32 if FlagMPLS; then uvarints: first ts minus the
// header's first ts, last minus first, packets, bytes, length in bytes of the
// flow's positions; from version 3 two more, the packets and wire bytes of
// the flow the per-connection cutoff did not store (Flow.CutPackets and
// CutBytes). A flow with no packet in the file has some cut ones: it was cut
// while the file was being written.
const knownFlags = flow.FlagIPv4 | flow.FlagIPv6 | flow.FlagPorts | flow.FlagFragment |
	flow.FlagVLAN0 | flow.FlagVLAN1 | flow.FlagMPLS | flow.FlagICMP

func appendFlow(dst []byte, f *Flow, base int64, posLen int, version uint32) []byte {
	k := &f.Key
	le := binary.LittleEndian
	dst = append(dst, byte(k.Flags))
	dst = le.AppendUint16(dst, k.EtherType)
	dst = append(dst, k.Proto)
	switch {
	case k.Flags&flow.FlagIPv4 != 0:
		dst = append(append(dst, k.Src[:4]...), k.Dst[:4]...)
	case k.Flags&flow.FlagIPv6 != 0:
		dst = append(append(dst, k.Src[:]...), k.Dst[:]...)
	}
	if k.Flags&flow.FlagPorts != 0 {
		dst = le.AppendUint16(le.AppendUint16(dst, k.SrcPort), k.DstPort)
	}
	if k.Flags&flow.FlagICMP != 0 {
		dst = append(dst, byte(k.SrcPort), byte(k.DstPort))
	}
	if k.Flags&flow.FlagVLAN0 != 0 {
		dst = le.AppendUint16(dst, k.VLAN[0])
	}
	if k.Flags&flow.FlagVLAN1 != 0 {
		dst = le.AppendUint16(dst, k.VLAN[1])
	}
	if k.Flags&flow.FlagMPLS != 0 {
		dst = le.AppendUint32(dst, k.MPLS)
	}
	dst = binary.AppendUvarint(dst, uint64(f.First-base))
	dst = binary.AppendUvarint(dst, uint64(f.Last-f.First))
	dst = binary.AppendUvarint(dst, f.Packets)
	dst = binary.AppendUvarint(dst, f.Bytes)
	dst = binary.AppendUvarint(dst, uint64(posLen))
	if version < 3 {
		return dst
	}
	dst = binary.AppendUvarint(dst, f.CutPackets)
	return binary.AppendUvarint(dst, f.CutBytes)
}

// decoder reads a byte slice and remembers the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("record runs past its section")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// flow decodes a flow record of an index of the given version.
func (d *decoder) flow(f *Flow, base int64, version uint32) (posLen uint64) {
	k := &f.Key
	*k = flow.Key{}
	k.Flags = flow.Flags(d.u8())
	k.EtherType = d.u16()
	k.Proto = d.u8()
	if k.Flags&^knownFlags != 0 || k.Flags&flow.FlagIPv4 != 0 && k.Flags&flow.FlagIPv6 != 0 ||
		k.Flags&flow.FlagPorts != 0 && k.Flags&flow.FlagICMP != 0 {
		d.fail("flow flags %#x", k.Flags)
		return 0
	}
	switch {
	case k.Flags&flow.FlagIPv4 != 0:
		copy(k.Src[:4], d.bytes(4))
		copy(k.Dst[:4], d.bytes(4))
	case k.Flags&flow.FlagIPv6 != 0:
		copy(k.Src[:], d.bytes(16))
		copy(k.Dst[:], d.bytes(16))
	}
	if k.Flags&flow.FlagPorts != 0 {
		k.SrcPort = d.u16()
		k.DstPort = d.u16()
	}
	if k.Flags&flow.FlagICMP != 0 {
		k.SrcPort = uint16(d.u8())
		k.DstPort = uint16(d.u8())
	}
	if k.Flags&flow.FlagVLAN0 != 0 {
		k.VLAN[0] = d.u16()
	}
	if k.Flags&flow.FlagVLAN1 != 0 {
		k.VLAN[1] = d.u16()
	}
	if k.Flags&flow.FlagMPLS != 0 {
		k.MPLS = d.u32()
	}
	first := d.uvarint()
	dur := d.uvarint()
	f.Packets = d.uvarint()
	f.Bytes = d.uvarint()
	posLen = d.uvarint()
	f.CutPackets, f.CutBytes = 0, 0
	if version >= 3 {
		f.CutPackets = d.uvarint()
		f.CutBytes = d.uvarint()
	}
	if first > math.MaxInt64/2 || dur > math.MaxInt64/2 {
		d.fail("flow time out of range")
	}
	f.First = base + int64(first)
	f.Last = f.First + int64(dur)
	switch {
	case f.Packets == 0 && f.CutPackets == 0:
		d.fail("flow without packets")
	case f.Packets == 0 && posLen != 0:
		d.fail("flow without packets has positions")
	}
	return posLen
}

// encode serializes a sealed index. The position section holds each flow's
// offsets in ascending order, delta-encoded as uvarints from 0, flow after
// flow; posLen[i] is flow i's share of it in bytes. The sums section holds
// 4 bytes per packet in the same order. sections writes both. version is
// FormatVersion but in tests of older versions.
func encode(version uint32, sum Summary, iface string, blocks []Block, flows []Flow, posLen []int, sections sealSections) []byte {
	if len(iface) > maxIfaceName {
		iface = iface[:maxIfaceName]
	}
	var flowsSec []byte
	for i := range flows {
		flowsSec = appendFlow(flowsSec, &flows[i], sum.First, posLen[i], version)
	}
	le := binary.LittleEndian
	// One buffer, the position and checksum sections written straight
	// into it: built apart and copied in, they were allocated, cleared
	// and copied once more, a fifth of a seal with one flow.
	out := make([]byte, headerSize, headerSize+len(iface)+len(blocks)*blockSize+len(flowsSec)+sections.posLen+sections.sumLen+4)
	copy(out, magic)
	le.PutUint32(out[8:], version)
	var flags uint32
	if sum.Monotone {
		flags |= flagMonotone
	}
	le.PutUint32(out[12:], flags)
	le.PutUint64(out[16:], uint64(sum.First))
	le.PutUint64(out[24:], uint64(sum.Last))
	le.PutUint64(out[32:], sum.Packets)
	le.PutUint64(out[40:], sum.Bytes)
	le.PutUint64(out[48:], uint64(sum.DataEnd))
	le.PutUint32(out[56:], uint32(len(flows)))
	le.PutUint32(out[60:], uint32(len(blocks)))
	le.PutUint64(out[64:], uint64(len(flowsSec)))
	le.PutUint64(out[72:], uint64(sections.posLen))
	le.PutUint16(out[80:], uint16(len(iface)))
	le.PutUint32(out[84:], sum.FirstSum)
	le.PutUint64(out[88:], uint64(sum.LastOffset))
	le.PutUint32(out[96:], sum.LastSum)
	le.PutUint64(out[100:], sum.NameHash)
	le.PutUint32(out[headerCRCOffset:], crc32.Checksum(out[:headerCRCOffset], castagnoli))
	out = append(out, iface...)
	for _, b := range blocks {
		out = le.AppendUint64(out, uint64(b.Offset))
		out = le.AppendUint64(out, uint64(b.Min))
		out = le.AppendUint64(out, uint64(b.Max))
	}
	out = append(out, flowsSec...)
	at := len(out)
	out = out[:at+sections.posLen+sections.sumLen]
	pos := out[at : at+sections.posLen]
	sections.fill(pos, out[at+sections.posLen:])
	return le.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// sealSections are the position and checksum sections of an index file:
// their lengths, and fill, which writes them into the two slices given.
type sealSections struct {
	posLen, sumLen int
	fill           func(pos, sums []byte)
}
