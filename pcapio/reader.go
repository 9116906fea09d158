package pcapio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
	r      *bufio.Reader
	off    int64
	ng     bool
	order  binary.ByteOrder
	nanos  bool // pcap: nanosecond timestamps
	ifaces []Interface
	buf    []byte
	// badFraction: the last pcap record's fraction of a second was out of
	// range (tests compare timestamps with pcapgo only when it is not).
	badFraction bool
}

// NewReader reads the file header and returns a reader positioned at the
// first packet.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{r: bufio.NewReaderSize(r, 1<<16), buf: make([]byte, 0, 1<<16)}
	magic, err := rd.r.Peek(4)
	if err != nil {
		return nil, &FormatError{Offset: 0, Err: ErrNotCapture, Detail: "shorter than 4 bytes"}
	}
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

func (r *Reader) read(n int) ([]byte, error) {
	// Most records fit the bufio buffer: return them in place, without a
	// copy. The slice is valid until the next read, which Packet documents.
	if n <= r.r.Size() {
		b, err := r.r.Peek(n)
		if err == nil {
			_, _ = r.r.Discard(n)
			r.off += int64(n)
			return b, nil
		}
		if len(b) == 0 && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if errors.Is(err, io.EOF) {
			r.off += int64(len(b))
			_, _ = r.r.Discard(len(b))
			return nil, io.ErrUnexpectedEOF
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	m, err := io.ReadFull(r.r, b)
	r.off += int64(m)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || (errors.Is(err, io.EOF) && m > 0) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

func (r *Reader) readPcapHeader() error {
	h, err := r.read(24)
	if err != nil {
		return &FormatError{Offset: 0, Err: ErrTruncated, Detail: "pcap file header"}
	}
	r.order = binary.LittleEndian
	switch binary.LittleEndian.Uint32(h) {
	case magicNanos:
		r.nanos = true
	case magicMicrosSwap:
		r.order = binary.BigEndian
	case magicNanosSwap:
		r.order = binary.BigEndian
		r.nanos = true
	}
	snap := int(r.order.Uint32(h[16:]))
	// The upper bits of the link-type field carry FCS information (pcap-linktype(7)).
	lt := int(r.order.Uint32(h[20:]) & 0x0fffffff)
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
	h, err := r.read(16)
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return &FormatError{Offset: start, Err: ErrTruncated, Detail: "record header"}
	}
	sec := int64(r.order.Uint32(h[0:]))
	frac := int64(r.order.Uint32(h[4:]))
	capLen := r.order.Uint32(h[8:])
	origLen := r.order.Uint32(h[12:])
	if capLen > MaxPacket {
		return &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("captured length %d exceeds %d", capLen, MaxPacket)}
	}
	// Fractions of a second out of range (tcpdump prints "invalid
	// timestamp") carry into the seconds, as pcapgo and time.Unix do.
	r.badFraction = frac >= int64(r.ifaces[0].unitsPerSec)
	if !r.nanos {
		frac *= 1000
	}
	data, err := r.read(int(capLen))
	if err != nil {
		return &FormatError{Offset: start, Err: ErrTruncated, Detail: fmt.Sprintf("record of %d bytes", capLen)}
	}
	*p = Packet{
		Timestamp: sec*1_000_000_000 + frac,
		CapLen:    int(capLen),
		OrigLen:   int(max(origLen, capLen)),
		LinkType:  r.ifaces[0].LinkType,
		Offset:    start,
		Data:      data,
	}
	return nil
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
		r.order = binary.LittleEndian
	case 0x4d3c2b1a:
		r.order = binary.BigEndian
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
		typ := r.order.Uint32(h)
		total := r.order.Uint32(h[4:])
		if total < 12 || total%4 != 0 || total > MaxPacket+maxBlock {
			return &FormatError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("block type %d length %d", typ, total)}
		}
		body, err := r.read(int(total) - 8)
		if err != nil {
			return &FormatError{Offset: start, Err: ErrTruncated, Detail: fmt.Sprintf("block type %d of %d bytes", typ, total)}
		}
		if r.order.Uint32(body[len(body)-4:]) != total {
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
			orig := int(r.order.Uint32(body))
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
		LinkType:    int(r.order.Uint16(b)),
		SnapLen:     int(r.order.Uint32(b[4:])),
		unitsPerSec: 1_000_000,
	}
	opts := b[8:]
	for len(opts) >= 4 {
		code := r.order.Uint16(opts)
		n := int(r.order.Uint16(opts[2:]))
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
				ifc.tsOffsetSec = int64(r.order.Uint64(v))
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
		ifIdx = int(r.order.Uint16(b))
	} else {
		ifIdx = int(r.order.Uint32(b))
	}
	if ifIdx >= len(r.ifaces) {
		return fmt.Errorf("packet block names interface %d of %d", ifIdx, len(r.ifaces))
	}
	ifc := &r.ifaces[ifIdx]
	ts := uint64(r.order.Uint32(b[4:]))<<32 | uint64(r.order.Uint32(b[8:]))
	capLen := r.order.Uint32(b[12:])
	origLen := r.order.Uint32(b[16:])
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
