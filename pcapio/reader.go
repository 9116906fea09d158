package pcapio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// Link types stenod knows by name.
const (
	LinkTypeEthernet = 1
)

// Magic numbers of the formats, as read in little-endian order.
const (
	magicMicros      = 0xa1b2c3d4
	magicNanos       = 0xa1b23c4d
	magicMicrosSwap  = 0xd4c3b2a1
	magicNanosSwap   = 0x4d3cb2a1
	ngBlockSHB       = 0x0a0d0d0a
	ngByteOrderMagic = 0x1a2b3c4d
	ngBlockIDB       = 1
	ngBlockPB        = 2 // obsolete Packet Block
	ngBlockSPB       = 3
	ngBlockEPB       = 6
)

// MaxPacket is the largest captured length a reader accepts. Larger lengths
// in a file are treated as corruption rather than allocated.
const MaxPacket = 256 * 1024

// maxBlock bounds a pcapng block that is not a packet (options, names, ...).
const maxBlock = 1 << 20

// Sentinel errors. A *FormatError wraps one of them.
var (
	// ErrNotCapture: the file starts with neither a pcap nor a pcapng magic.
	ErrNotCapture = errors.New("not a pcap or pcapng file")
	// ErrCorrupt: a record or block is malformed (bad length, bad magic).
	ErrCorrupt = errors.New("corrupt")
	// ErrTruncated: the file ends inside a record or block.
	ErrTruncated = errors.New("truncated")
)

// FormatError says what is wrong and at which byte offset of the input.
type FormatError struct {
	Offset int64
	Err    error  // ErrNotCapture, ErrCorrupt or ErrTruncated
	Detail string // what exactly
}

func (e *FormatError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("offset %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("offset %d: %v: %s", e.Offset, e.Err, e.Detail)
}

func (e *FormatError) Unwrap() error { return e.Err }

// Packet is one packet as read. Data aliases the reader's buffer and is valid
// until the next call to Next.
type Packet struct {
	Timestamp int64 // unix nanoseconds
	CapLen    int
	OrigLen   int
	Interface int // pcapng interface index; 0 for pcap
	LinkType  int // the link type of the packet's interface
	Offset    int64
	Data      []byte
	// Header is the record's 16-byte header as stored in a pcap file (nil
	// for pcapng), valid as long as Data: with Data, what RecordSum covers.
	Header []byte
}

// Interface describes a capture interface (pcap has exactly one).
type Interface struct {
	LinkType int
	SnapLen  int
	Name     string
	// tsUnit converts the file's timestamp units to nanoseconds: units per
	// second, and whether it is a power of ten (the usual case).
	unitsPerSec uint64
	tsOffsetSec int64
}

// Reader reads pcap or pcapng from an io.Reader, detecting which by magic.
type Reader struct {
	src io.Reader
	// buf holds input read ahead: buf[pos:lim] is not consumed yet. Records
	// are returned in place, without a copy.
	buf      []byte
	pos, lim int
	srcErr   error    // the error that ended reading src (io.EOF at its end)
	hdr      [16]byte // a record header read in two steps
	off      int64
	ng       bool
	swap     bool // the file is big endian
	nanos    bool // pcap: nanosecond timestamps
	ifaces   []Interface
	// badFraction: the last pcap record's fraction of a second was out of
	// range (tests compare timestamps with pcapgo only when it is not).
	badFraction bool
}

// readAhead is how much input a Reader reads at a time: large enough that
// the read system calls cost little per packet, small enough to stay in
// the CPU's cache for the copy that follows.
const readAhead = 128 << 10

// NewReader reads the file header and returns a reader positioned at the
// first packet.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{src: r, buf: make([]byte, readAhead)}
	if rd.fill(4) < 4 {
		return nil, &FormatError{Offset: 0, Err: ErrNotCapture, Detail: "shorter than 4 bytes"}
	}
	magic := rd.buf[:4]
	switch binary.LittleEndian.Uint32(magic) {
	case magicMicros, magicNanos, magicMicrosSwap, magicNanosSwap:
		return rd, rd.readPcapHeader()
	case ngBlockSHB:
		rd.ng = true
		if err := rd.readSHB(); err != nil {
			return nil, err
		}
		return rd, nil
	}
	return nil, &FormatError{Offset: 0, Err: ErrNotCapture, Detail: fmt.Sprintf("magic % x", magic)}
}

// Interfaces returns the interfaces seen so far (pcapng may add more later).
func (r *Reader) Interfaces() []Interface { return r.ifaces }

// IsPcapng reports whether the input is pcapng.
func (r *Reader) IsPcapng() bool { return r.ng }

// Offset is the byte offset of the next record or block.
func (r *Reader) Offset() int64 { return r.off }

// read consumes the next n bytes of input and returns them in place: the
// slice is valid until the next read, which Packet documents. At the end of
// the input it returns io.EOF if nothing is left, io.ErrUnexpectedEOF
// (consuming the rest) if fewer than n bytes are. Callers bound n before
// they call it: the buffer grows to n.
func (r *Reader) read(n int) ([]byte, error) {
	if r.lim-r.pos < n {
		return r.readSlow(n)
	}
	b := r.buf[r.pos : r.pos+n]
	r.pos += n
	r.off += int64(n)
	return b, nil
}

// readSlow is read when fewer than n bytes are buffered.
func (r *Reader) readSlow(n int) ([]byte, error) {
	if r.fill(n) < n {
		return nil, r.short()
	}
	return r.read(n)
}

// fill reads input until at least n bytes are buffered or the input ends,
// and returns how many are.
func (r *Reader) fill(n int) int {
	if r.pos > 0 {
		r.lim = copy(r.buf, r.buf[r.pos:r.lim])
		r.pos = 0
	}
	if n > len(r.buf) {
		b := make([]byte, max(n, 2*len(r.buf)))
		copy(b, r.buf[:r.lim])
		r.buf = b
	}
	for empty := 0; r.lim < n && r.srcErr == nil; {
		m, err := r.src.Read(r.buf[r.lim:])
		r.lim += m
		switch {
		case err != nil:
			r.srcErr = err
		case m == 0:
			if empty++; empty == 100 {
				r.srcErr = io.ErrNoProgress
			}
		}
	}
	return r.lim
}

// short is read's error when the input ended (or failed) before n bytes.
func (r *Reader) short() error {
	if !errors.Is(r.srcErr, io.EOF) {
		return r.srcErr
	}
	if r.lim == r.pos {
		return io.EOF
	}
	r.off += int64(r.lim - r.pos)
	r.pos = r.lim
	return io.ErrUnexpectedEOF
}

// u16, u32 and u64 decode integers in the file's byte order.
func (r *Reader) u16(b []byte) uint16 {
	v := binary.LittleEndian.Uint16(b)
	if r.swap {
		v = bits.ReverseBytes16(v)
	}
	return v
}

func (r *Reader) u32(b []byte) uint32 {
	v := binary.LittleEndian.Uint32(b)
	if r.swap {
		v = bits.ReverseBytes32(v)
	}
	return v
}

func (r *Reader) u64(b []byte) uint64 {
	v := binary.LittleEndian.Uint64(b)
	if r.swap {
		v = bits.ReverseBytes64(v)
	}
	return v
}

func (r *Reader) readPcapHeader() error {
	h, err := r.read(24)
	if err != nil {
		return &FormatError{Offset: 0, Err: ErrTruncated, Detail: "pcap file header"}
	}
	r.swap = false
	switch binary.LittleEndian.Uint32(h) {
	case magicNanos:
		r.nanos = true
	case magicMicrosSwap:
		r.swap = true
	case magicNanosSwap:
		r.swap = true
		r.nanos = true
	}
	snap := int(r.u32(h[16:]))
	// The upper bits of the link-type field carry FCS information (pcap-linktype(7)).
	lt := int(r.u32(h[20:]) & 0x0fffffff)
	unit := uint64(1_000_000)
	if r.nanos {
		unit = 1_000_000_000
	}
	r.ifaces = []Interface{{LinkType: lt, SnapLen: snap, unitsPerSec: unit}}
	return nil
}

// Next returns the next packet. It returns io.EOF at a clean end of input and
// a *FormatError for anything else; packets returned before stay valid input.
func (r *Reader) Next(p *Packet) error {
	if r.ng {
		return r.nextNg(p)
	}
	return r.nextPcap(p)
}

func (r *Reader) nextPcap(p *Packet) error {
	start := r.off
	var h, data []byte
	// The record is most often buffered whole: take it in place.
	if b := r.buf[r.pos:r.lim]; len(b) >= 16 {
		if n := uint64(r.u32(b[8:])); n <= MaxPacket && n <= uint64(len(b)-16) {
			h, data = b[:16], b[16:16+n]
			r.pos += 16 + int(n)
			r.off += 16 + int64(n)
		}
	}
	if h == nil {
		var err error
		if h, data, err = r.readPcapRecord(start); err != nil {
			return err
		}
	}
	sec := int64(r.u32(h[0:]))
	frac := int64(r.u32(h[4:]))
	origLen := r.u32(h[12:])
	// Fractions of a second out of range (tcpdump prints "invalid
	// timestamp") carry into the seconds, as pcapgo and time.Unix do.
	ifc := &r.ifaces[0]
	r.badFraction = uint64(frac) >= ifc.unitsPerSec
	if !r.nanos {
		frac *= 1000
	}
	*p = Packet{
		Timestamp: sec*1_000_000_000 + frac,
		CapLen:    len(data),
		OrigLen:   max(int(origLen), len(data)),
		LinkType:  ifc.LinkType,
		Offset:    start,
		Data:      data,
		Header:    h,
	}
	return nil
}

// readPcapRecord reads the pcap record at offset start (the current one)
// when it is not buffered whole: its header and its captured bytes.
func (r *Reader) readPcapRecord(start int64) (h, data []byte, err error) {
	h, err = r.read(16)
	if err == io.EOF {
		return nil, nil, io.EOF
	}
	if err != nil {
		return nil, nil, &FormatError{Offset: start, Err: ErrTruncated, Detail: "record header"}
	}
	capLen := r.u32(h[8:])
	if capLen > MaxPacket {
		return nil, nil, &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("captured length %d exceeds %d", capLen, MaxPacket)}
	}
	// The next read may move the buffer: keep a copy of the header.
	copy(r.hdr[:], h)
	data, err = r.read(int(capLen))
	if err != nil {
		return nil, nil, &FormatError{Offset: start, Err: ErrTruncated, Detail: fmt.Sprintf("record of %d bytes", capLen)}
	}
	return r.hdr[:], data, nil
}

// readSHB reads the section header block at the current offset.
func (r *Reader) readSHB() error {
	start := r.off
	h, err := r.read(8)
	if err != nil {
		return &FormatError{Offset: start, Err: ErrTruncated, Detail: "section header block"}
	}
	return r.readSHBRest(start, binary.LittleEndian.Uint32(h[4:]))
}

// readSHBRest reads a section header block whose first 8 bytes (type and
// length, lengthLE read as little endian) are consumed. The byte-order magic
// decides the order of the length and of every later block in the section.
func (r *Reader) readSHBRest(start int64, lengthLE uint32) error {
	m, err := r.read(4)
	if err != nil {
		return &FormatError{Offset: start, Err: ErrTruncated, Detail: "section header block"}
	}
	total := lengthLE
	switch binary.LittleEndian.Uint32(m) {
	case ngByteOrderMagic:
		r.swap = false
	case 0x4d3c2b1a:
		r.swap = true
		total = lengthLE>>24 | lengthLE>>8&0xff00 | lengthLE<<8&0xff0000 | lengthLE<<24
	default:
		return &FormatError{Offset: start, Err: ErrCorrupt, Detail: "section header byte-order magic"}
	}
	if total < 28 || total%4 != 0 || total > maxBlock {
		return &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("section header length %d", total)}
	}
	if _, err := r.read(int(total) - 12); err != nil {
		return &FormatError{Offset: start, Err: ErrTruncated, Detail: "section header block"}
	}
	// Interface numbers restart with every section.
	r.ifaces = r.ifaces[:0]
	return nil
}

func (r *Reader) nextNg(p *Packet) error {
	for {
		start := r.off
		h, err := r.read(8)
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return &FormatError{Offset: start, Err: ErrTruncated, Detail: "block header"}
		}
		if binary.LittleEndian.Uint32(h) == ngBlockSHB {
			if err := r.readSHBRest(start, binary.LittleEndian.Uint32(h[4:])); err != nil {
				return err
			}
			continue
		}
		typ := r.u32(h)
		total := r.u32(h[4:])
		if total < 12 || total%4 != 0 || total > MaxPacket+maxBlock {
			return &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("block type %d length %d", typ, total)}
		}
		body, err := r.read(int(total) - 8)
		if err != nil {
			return &FormatError{Offset: start, Err: ErrTruncated, Detail: fmt.Sprintf("block type %d of %d bytes", typ, total)}
		}
		if r.u32(body[len(body)-4:]) != total {
			return &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("block type %d: trailing length differs from %d", typ, total)}
		}
		body = body[:len(body)-4]
		switch typ {
		case ngBlockIDB:
			if err := r.addInterface(body); err != nil {
				return &FormatError{Offset: start, Err: ErrCorrupt, Detail: err.Error()}
			}
		case ngBlockEPB, ngBlockPB:
			if err := r.packetBlock(p, typ, body); err != nil {
				return &FormatError{Offset: start, Err: ErrCorrupt, Detail: err.Error()}
			}
			p.Offset = start
			return nil
		case ngBlockSPB:
			if len(r.ifaces) == 0 {
				return &FormatError{Offset: start, Err: ErrCorrupt, Detail: "simple packet block before any interface"}
			}
			if len(body) < 4 {
				return &FormatError{Offset: start, Err: ErrCorrupt, Detail: "simple packet block too short"}
			}
			orig := int(r.u32(body))
			capLen := min(orig, len(body)-4)
			if snap := r.ifaces[0].SnapLen; snap > 0 && capLen > snap {
				capLen = snap
			}
			// A simple packet block has no timestamp.
			*p = Packet{CapLen: capLen, OrigLen: orig, LinkType: r.ifaces[0].LinkType, Offset: start, Data: body[4 : 4+capLen]}
			return nil
		}
		// Other blocks (statistics, name resolution, custom) are skipped.
	}
}

// addInterface parses an interface description block:
// linktype u16, reserved u16, snaplen u32, options.
func (r *Reader) addInterface(b []byte) error {
	if len(b) < 8 {
		return errors.New("interface description block too short")
	}
	if len(r.ifaces) >= 1<<16 {
		return errors.New("too many interfaces")
	}
	ifc := Interface{
		LinkType:    int(r.u16(b)),
		SnapLen:     int(r.u32(b[4:])),
		unitsPerSec: 1_000_000,
	}
	opts := b[8:]
	for len(opts) >= 4 {
		code := r.u16(opts)
		n := int(r.u16(opts[2:]))
		if 4+n > len(opts) {
			return fmt.Errorf("interface option %d overruns its block", code)
		}
		v := opts[4 : 4+n]
		switch code {
		case 0:
			opts = nil
			continue
		case 2: // if_name
			ifc.Name = string(v)
		case 9: // if_tsresol: bit 7 set means a power of two
			if n >= 1 {
				e := uint64(v[0] & 0x7f)
				var units uint64
				if v[0]&0x80 != 0 {
					if e > 63 {
						return fmt.Errorf("if_tsresol 2^-%d", e)
					}
					units = 1 << e
				} else {
					if e > 19 {
						return fmt.Errorf("if_tsresol 10^-%d", e)
					}
					units = 1
					for range e {
						units *= 10
					}
				}
				ifc.unitsPerSec = units
			}
		case 14: // if_tsoffset, seconds
			if n >= 8 {
				ifc.tsOffsetSec = int64(r.u64(v))
			}
		}
		opts = opts[4+(n+3)&^3:]
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

// packetBlock parses an enhanced packet block (interface u32, ts high u32,
// ts low u32, caplen u32, origlen u32, data) or the obsolete packet block
// (interface u16, drops u16, then the same).
func (r *Reader) packetBlock(p *Packet, typ uint32, b []byte) error {
	if len(b) < 20 {
		return errors.New("packet block too short")
	}
	var ifIdx int
	if typ == ngBlockPB {
		ifIdx = int(r.u16(b))
	} else {
		ifIdx = int(r.u32(b))
	}
	if ifIdx >= len(r.ifaces) {
		return fmt.Errorf("packet block names interface %d of %d", ifIdx, len(r.ifaces))
	}
	ifc := &r.ifaces[ifIdx]
	ts := uint64(r.u32(b[4:]))<<32 | uint64(r.u32(b[8:]))
	capLen := r.u32(b[12:])
	origLen := r.u32(b[16:])
	if int64(capLen) > int64(len(b)-20) {
		return fmt.Errorf("captured length %d exceeds block", capLen)
	}
	*p = Packet{
		Timestamp: ifc.toNanos(ts),
		CapLen:    int(capLen),
		OrigLen:   int(max(origLen, capLen)),
		Interface: ifIdx,
		LinkType:  ifc.LinkType,
		Data:      b[20 : 20+capLen],
	}
	return nil
}

func (ifc *Interface) toNanos(ts uint64) int64 {
	u := ifc.unitsPerSec
	sec := ts / u
	frac := ts % u
	var ns uint64
	if u <= 1_000_000_000 {
		ns = frac * (1_000_000_000 / u)
		if 1_000_000_000%u != 0 { // power-of-two resolutions
			ns = uint64(float64(frac) * 1e9 / float64(u))
		}
	} else {
		ns = uint64(float64(frac) * 1e9 / float64(u))
	}
	if sec > math.MaxInt64/1_000_000_000-1 {
		sec = math.MaxInt64/1_000_000_000 - 1
	}
	return (int64(sec)+ifc.tsOffsetSec)*1_000_000_000 + int64(ns)
}

// LinkTypeName returns the tcpdump name of common link types, for messages.
func LinkTypeName(lt int) string {
	switch lt {
	case 0:
		return "NULL (BSD loopback)"
	case 1:
		return "EN10MB (Ethernet)"
	case 101:
		return "RAW (IP)"
	case 105:
		return "IEEE802_11"
	case 113:
		return "LINUX_SLL (Linux cooked)"
	case 127:
		return "IEEE802_11_RADIO (radiotap)"
	case 228:
		return "IPV4"
	case 229:
		return "IPV6"
	case 276:
		return "LINUX_SLL2 (Linux cooked v2)"
	}
	return fmt.Sprintf("DLT %d", lt)
}
