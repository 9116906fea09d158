package pcapio

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// PcapHeaderSize and RecordHeaderSize are the sizes of the pcap file header
// and of each record header.
const (
	PcapHeaderSize   = 24
	RecordHeaderSize = 16
)

// AppendPcapHeader appends a nanosecond pcap file header (magic a1b23c4d,
// version 2.4, little endian).
func AppendPcapHeader(dst []byte, snapLen, linkType int) []byte {
	var h [PcapHeaderSize]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], magicNanos)
	le.PutUint16(h[4:], 2)
	le.PutUint16(h[6:], 4)
	le.PutUint32(h[16:], uint32(snapLen))
	le.PutUint32(h[20:], uint32(linkType))
	return append(dst, h[:]...)
}

// AppendRecord appends one nanosecond pcap record. It allocates only when
// dst lacks capacity.
func AppendRecord(dst []byte, ts int64, origLen int, data []byte) []byte {
	var h [RecordHeaderSize]byte
	PutRecordHeader(h[:], ts, len(data), origLen)
	return append(append(dst, h[:]...), data...)
}

// PutRecordHeader writes a nanosecond pcap record header into h[:16].
func PutRecordHeader(h []byte, ts int64, capLen, origLen int) {
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(ts/1_000_000_000))
	le.PutUint32(h[4:], uint32(ts%1_000_000_000))
	le.PutUint32(h[8:], uint32(capLen))
	le.PutUint32(h[12:], uint32(origLen))
}

// RecordHeader is a decoded nanosecond pcap record header of a spool file.
type RecordHeader struct {
	Timestamp int64
	CapLen    int
	OrigLen   int
}

// ParseRecordHeader decodes a record header written by AppendRecord. It
// checks nothing beyond the length of h: spool files are trusted only as far
// as their index says, and callers bound CapLen themselves.
func ParseRecordHeader(h []byte) RecordHeader {
	le := binary.LittleEndian
	return RecordHeader{
		Timestamp: int64(le.Uint32(h[0:]))*1_000_000_000 + int64(le.Uint32(h[4:])),
		CapLen:    int(le.Uint32(h[8:])),
		OrigLen:   int(le.Uint32(h[12:])),
	}
}

// PacketWriter is where query answers go: a pcap or pcapng stream.
type PacketWriter interface {
	// WritePacket writes one packet captured on the interface named iface.
	WritePacket(ts int64, origLen int, data []byte, iface string) error
	// Flush writes buffered data to the underlying writer.
	Flush() error
}

// PcapWriter writes nanosecond pcap. The interface name is not recorded.
type PcapWriter struct {
	w   *bufio.Writer
	hdr [RecordHeaderSize]byte
}

// NewPcapWriter writes the file header at once, so an empty answer is still a
// valid capture file.
func NewPcapWriter(w io.Writer, snapLen int) (*PcapWriter, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.Write(AppendPcapHeader(nil, snapLen, LinkTypeEthernet)); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &PcapWriter{w: bw}, nil
}

// WritePacket implements PacketWriter.
func (p *PcapWriter) WritePacket(ts int64, origLen int, data []byte, _ string) error {
	PutRecordHeader(p.hdr[:], ts, len(data), origLen)
	if _, err := p.w.Write(p.hdr[:]); err != nil {
		return err
	}
	_, err := p.w.Write(data)
	return err
}

// Flush implements PacketWriter.
func (p *PcapWriter) Flush() error { return p.w.Flush() }

// PcapngWriter writes pcapng with one interface description block per
// capture interface, added when the first packet of that interface is
// written, and nanosecond timestamps (if_tsresol 9).
type PcapngWriter struct {
	w       *bufio.Writer
	snapLen int
	ifaces  map[string]uint32
	buf     []byte
}

// NewPcapngWriter writes the section header block at once.
func NewPcapngWriter(w io.Writer, snapLen int) (*PcapngWriter, error) {
	p := &PcapngWriter{w: bufio.NewWriterSize(w, 1<<16), snapLen: snapLen, ifaces: map[string]uint32{}}
	// SHB: type, length, byte-order magic, version 1.0, section length -1, shb_userappl option.
	b := p.buf[:0]
	b = le32(b, ngBlockSHB)
	b = le32(b, 0) // length, patched below
	b = le32(b, ngByteOrderMagic)
	b = le16(b, 1)
	b = le16(b, 0)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = appendOption(b, 4, []byte("stenod"))
	b = le32(b, 0) // opt_endofopt
	b = finishBlock(b)
	p.buf = b
	if _, err := p.w.Write(b); err != nil {
		return nil, fmt.Errorf("write pcapng section header: %w", err)
	}
	return p, nil
}

// WritePacket implements PacketWriter.
func (p *PcapngWriter) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	id, ok := p.ifaces[iface]
	if !ok {
		id = uint32(len(p.ifaces))
		p.ifaces[iface] = id
		b := p.buf[:0]
		b = le32(b, ngBlockIDB)
		b = le32(b, 0)
		b = le16(b, LinkTypeEthernet)
		b = le16(b, 0)
		b = le32(b, uint32(p.snapLen))
		if iface != "" {
			b = appendOption(b, 2, []byte(iface))
		}
		b = appendOption(b, 9, []byte{9}) // nanoseconds
		b = le32(b, 0)
		b = finishBlock(b)
		p.buf = b
		if _, err := p.w.Write(b); err != nil {
			return err
		}
	}
	// EPB header: type, length, interface, ts high, ts low, caplen, origlen.
	total := 32 + (len(data)+3)&^3
	var h [28]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], ngBlockEPB)
	le.PutUint32(h[4:], uint32(total))
	le.PutUint32(h[8:], id)
	le.PutUint32(h[12:], uint32(uint64(ts)>>32))
	le.PutUint32(h[16:], uint32(uint64(ts)))
	le.PutUint32(h[20:], uint32(len(data)))
	le.PutUint32(h[24:], uint32(origLen))
	if _, err := p.w.Write(h[:]); err != nil {
		return err
	}
	if _, err := p.w.Write(data); err != nil {
		return err
	}
	var tail [8]byte
	pad := (4 - len(data)%4) % 4
	le.PutUint32(tail[pad:], uint32(total))
	_, err := p.w.Write(tail[:pad+4])
	return err
}

// Flush implements PacketWriter.
func (p *PcapngWriter) Flush() error { return p.w.Flush() }

func le16(b []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(b, v) }
func le32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

func appendOption(b []byte, code uint16, v []byte) []byte {
	b = le16(b, code)
	b = le16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// finishBlock appends the trailing length and patches the leading one.
func finishBlock(b []byte) []byte {
	total := uint32(len(b) + 4)
	binary.LittleEndian.PutUint32(b[4:], total)
	return le32(b, total)
}
