package ipfix

import (
	"encoding/binary"
	"errors"
	"slices"

	"github.com/stenod/stenod/flow"
)

// Message and set layout (RFC 7011 §3): a 16-byte message header, then
// sets, each a 4-byte set header and records. Numbers are big endian.
//
//	message header: version (10) u16 | length u16 | export time u32 (unix s)
//	                | sequence number u32 | observation domain id u32
//	set header:     set id u16 (2: templates, >=256: data) | length u16
//	template:       template id u16 | field count u16 | fields
//	field spec:     element id u16 (top bit: enterprise) | length u16
//	                [| enterprise number u32]
const (
	Version         = 10
	headerLen       = 16
	setHeaderLen    = 4
	templateSetID   = 2
	enterpriseBit   = 0x8000
	varLen          = 0xffff // field length of a variable-length field
	maxMessageBytes = 0xffff
)

// Template ids: one template per shape of record. ICMP flows have a
// template of their own, with icmpTypeCode and no ports: with both in one
// template, nfdump 1.7 takes the (zero) ICMP field as the destination port
// of every protocol but TCP and UDP, and SCTP lost its port.
const (
	TemplateIPv4     = 256 // IPv4, ports (0 for protocols without)
	TemplateIPv6     = 257
	TemplateIPv4ICMP = 258 // IPv4 ICMP: type and code instead of ports
	TemplateIPv6ICMP = 259
)

// templateIDs lists the templates in the order the template set gives
// them.
var templateIDs = [...]uint16{TemplateIPv4, TemplateIPv6, TemplateIPv4ICMP, TemplateIPv6ICMP}

// Enterprise-specific information elements, under Config.EnterpriseNumber
// (docs/fleet.md).
const (
	// ElementCommunityID is the flow's Community ID v1 ("1:" and base64),
	// a string, empty when the flow has none (docs/flow-key.md).
	ElementCommunityID = 1
	// ElementSensorURL is the base URL of the sensor's API, a string: a
	// collector's user pivots to the packets at
	// URL/v1/pcap?q=community-id+<id> (docs/api.md).
	ElementSensorURL = 2
	// ElementCutPacketDeltaCount and ElementCutOctetDeltaCount: of the
	// record's packetDeltaCount and octetDeltaCount, those the
	// per-connection cutoff did not store (unsigned64 each): the record
	// counts the traffic, these say how much of it the sensor lacks.
	ElementCutPacketDeltaCount = 3
	ElementCutOctetDeltaCount  = 4
)

// DefaultEnterpriseNumber is the Private Enterprise Number of the
// enterprise-specific fields unless configured: 32473, which IANA reserves
// for documentation and examples (RFC 5612). stenod has no number of its
// own; an operator with one sets ipfix.enterprise_number.
const DefaultEnterpriseNumber = 32473

// Flow end reasons (IANA flowEndReason).
const (
	EndIdle   = 1 // idle timeout
	EndActive = 2 // active timeout
	EndForced = 4 // the exporter stopped
)

// IANA information element ids used in the templates.
const (
	ieOctetDeltaCount          = 1
	iePacketDeltaCount         = 2
	ieProtocolIdentifier       = 4
	ieTCPControlBits           = 6
	ieSourceTransportPort      = 7
	ieSourceIPv4Address        = 8
	ieIngressInterface         = 10
	ieDestinationTransportPort = 11
	ieDestinationIPv4Address   = 12
	ieSourceIPv6Address        = 27
	ieDestinationIPv6Address   = 28
	ieICMPTypeCodeIPv4         = 32
	ieVlanID                   = 58
	ieMPLSTopLabelStackSection = 70
	ieFlowEndReason            = 136
	ieICMPTypeCodeIPv6         = 139
	ieFlowStartMilliseconds    = 152
	ieFlowEndMilliseconds      = 153
	ieFlowStartNanoseconds     = 156
	ieFlowEndNanoseconds       = 157
	ieDot1qCustomerVlanID      = 245
)

type fieldSpec struct {
	id, length uint16
	pen        bool // enterprise-specific: the number follows
}

// template lists the fields of template id in record order. The times are sent twice:
// milliseconds for collectors that read no finer time, then nanoseconds;
// a decoder that reads both keeps the one it meets last (GoFlow2 does),
// so nanoseconds come second. 16 bytes a record buy that.
func template(id uint16) []fieldSpec {
	v6 := id == TemplateIPv6 || id == TemplateIPv6ICMP
	src, dst, addr, icmp := uint16(ieSourceIPv4Address), uint16(ieDestinationIPv4Address), uint16(4), uint16(ieICMPTypeCodeIPv4)
	if v6 {
		src, dst, addr, icmp = ieSourceIPv6Address, ieDestinationIPv6Address, 16, ieICMPTypeCodeIPv6
	}
	l4 := []fieldSpec{{ieSourceTransportPort, 2, false}, {ieDestinationTransportPort, 2, false}}
	if id == TemplateIPv4ICMP || id == TemplateIPv6ICMP {
		l4 = []fieldSpec{{icmp, 2, false}}
	}
	return slices.Concat([]fieldSpec{
		{ieFlowStartMilliseconds, 8, false},
		{ieFlowEndMilliseconds, 8, false},
		{ieFlowStartNanoseconds, 8, false},
		{ieFlowEndNanoseconds, 8, false},
		{iePacketDeltaCount, 8, false},
		{ieOctetDeltaCount, 8, false},
		{src, addr, false},
		{dst, addr, false},
	}, l4, []fieldSpec{
		{ieProtocolIdentifier, 1, false},
		{ieTCPControlBits, 2, false},
		{ieVlanID, 2, false},
		{ieDot1qCustomerVlanID, 2, false},
		{ieMPLSTopLabelStackSection, 3, false},
		{ieIngressInterface, 4, false},
		{ieFlowEndReason, 1, false},
		{ElementCutPacketDeltaCount, 8, true},
		{ElementCutOctetDeltaCount, 8, true},
		{ElementCommunityID, varLen, true},
		{ElementSensorURL, varLen, true},
	})
}

// templateOf returns the template of a record of key k (Exportable).
func templateOf(k *flow.Key) uint16 {
	v6 := k.Flags&flow.FlagIPv6 != 0
	switch {
	case k.Flags&flow.FlagICMP != 0 && v6:
		return TemplateIPv6ICMP
	case k.Flags&flow.FlagICMP != 0:
		return TemplateIPv4ICMP
	case v6:
		return TemplateIPv6
	}
	return TemplateIPv4
}

// Record is one flow record: the packets of one flow (key and ingress
// interface) between Start and End.
type Record struct {
	Key        flow.Key
	Start, End int64  // first and last packet, unix ns
	Packets    uint64 // stored
	Bytes      uint64 // stored, on the wire
	// CutPackets and CutBytes: those the per-connection cutoff did not
	// store. The record's packetDeltaCount and octetDeltaCount count both.
	CutPackets, CutBytes uint64
	TCPFlags             uint8
	Ingress              uint32 // interface index, 0 when unknown
	EndReason            uint8
}

// Exportable reports whether a flow of key k can be exported: IPv4 and
// IPv6 flows can; others (ARP, truncated frames) have no template.
func Exportable(k *flow.Key) bool { return k.Flags&(flow.FlagIPv4|flow.FlagIPv6) != 0 }

// ntpTime is t (unix ns) as IPFIX's dateTimeNanoseconds (RFC 7011 §6.1.10):
// seconds since 1900 in the upper 32 bits, the fraction of a second in
// units of 2^-32 s in the lower. The fraction is rounded up, so that a
// collector converting back and rounding down (as GoFlow2 and nfdump do)
// gets t to the nanosecond: a unit is 0.23 ns.
func ntpTime(t int64) uint64 {
	const unixToNTP = 2208988800
	sec := uint64(t/1e9) + unixToNTP
	frac := ((uint64(t%1e9) << 32) + 1e9 - 1) / 1e9
	return sec<<32 | frac
}

// Encoder builds IPFIX messages of one observation domain. The zero value
// is not useful: use NewEncoder.
type Encoder struct {
	domain uint32
	pen    uint32
	seed   uint16
	url    string
	buf    []byte
	set    int // offset of the open data set's header, -1 when none
	setID  uint16
	n      int // data records in the message
	max    int
}

// Errors of the encoder.
var (
	// ErrMessageFull: the record does not fit in the message; Finish it
	// and start another.
	ErrMessageFull = errors.New("ipfix: message full")
)

// NewEncoder returns an encoder for messages of at most maxBytes (a UDP
// message must fit in one datagram) from observation domain domain, whose
// enterprise fields go under pen, with Community IDs of seed and the
// sensor's base URL url.
func NewEncoder(domain, pen uint32, seed uint16, url string, maxBytes int) *Encoder {
	maxBytes = min(max(maxBytes, 512), maxMessageBytes)
	return &Encoder{domain: domain, pen: pen, seed: seed, url: url, buf: make([]byte, 0, maxBytes), max: maxBytes, set: -1}
}

// Begin starts a message stamped exportTime (unix s) whose first data
// record is the seq'th of the stream (RFC 7011: the sequence number counts
// the data records sent before this message).
func (e *Encoder) Begin(exportTime, seq uint32) {
	b := e.buf[:0]
	b = binary.BigEndian.AppendUint16(b, Version)
	b = binary.BigEndian.AppendUint16(b, 0) // length, set by Finish
	b = binary.BigEndian.AppendUint32(b, exportTime)
	b = binary.BigEndian.AppendUint32(b, seq)
	b = binary.BigEndian.AppendUint32(b, e.domain)
	e.buf, e.set, e.n = b, -1, 0
}

// Templates adds the template set with every template. Call it right
// after Begin.
func (e *Encoder) Templates() {
	e.closeSet()
	start := len(e.buf)
	b := binary.BigEndian.AppendUint16(e.buf, templateSetID)
	b = binary.BigEndian.AppendUint16(b, 0)
	for _, id := range templateIDs {
		fs := template(id)
		b = binary.BigEndian.AppendUint16(b, id)
		b = binary.BigEndian.AppendUint16(b, uint16(len(fs)))
		for _, f := range fs {
			if f.pen {
				b = binary.BigEndian.AppendUint16(b, f.id|enterpriseBit)
				b = binary.BigEndian.AppendUint16(b, f.length)
				b = binary.BigEndian.AppendUint32(b, e.pen)
				continue
			}
			b = binary.BigEndian.AppendUint16(b, f.id)
			b = binary.BigEndian.AppendUint16(b, f.length)
		}
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	e.buf = b
}

// Add appends r as a data record; ErrMessageFull when it does not fit
// (the message is unchanged then). r's key must be Exportable.
func (e *Encoder) Add(r *Record) error {
	id := templateOf(&r.Key)
	mark, set, setID := len(e.buf), e.set, e.setID
	if e.set < 0 || e.setID != id {
		e.closeSet()
		e.set, e.setID = len(e.buf), id
		e.buf = binary.BigEndian.AppendUint16(e.buf, id)
		e.buf = binary.BigEndian.AppendUint16(e.buf, 0)
	}
	e.buf = e.appendRecord(e.buf, r)
	if len(e.buf) > e.max {
		e.buf, e.set, e.setID = e.buf[:mark], set, setID
		return ErrMessageFull
	}
	e.n++
	return nil
}

// Records is how many data records the message holds.
func (e *Encoder) Records() int { return e.n }

// Len is the message's length so far.
func (e *Encoder) Len() int { return len(e.buf) }

// Finish closes the message and returns it; it is valid until the next
// Begin.
func (e *Encoder) Finish() []byte {
	e.closeSet()
	binary.BigEndian.PutUint16(e.buf[2:], uint16(len(e.buf)))
	return e.buf
}

func (e *Encoder) closeSet() {
	if e.set >= 0 {
		binary.BigEndian.PutUint16(e.buf[e.set+2:], uint16(len(e.buf)-e.set))
		e.set = -1
	}
}

// appendRecord appends r's fields in template order.
func (e *Encoder) appendRecord(b []byte, r *Record) []byte {
	k := &r.Key
	be := binary.BigEndian
	b = be.AppendUint64(b, uint64(r.Start/1e6))
	b = be.AppendUint64(b, uint64(r.End/1e6))
	b = be.AppendUint64(b, ntpTime(r.Start))
	b = be.AppendUint64(b, ntpTime(r.End))
	b = be.AppendUint64(b, r.Packets+r.CutPackets)
	b = be.AppendUint64(b, r.Bytes+r.CutBytes)
	if k.Flags&flow.FlagIPv6 != 0 {
		b = append(b, k.Src[:]...)
		b = append(b, k.Dst[:]...)
	} else {
		b = append(b, k.Src[:4]...)
		b = append(b, k.Dst[:4]...)
	}
	switch {
	case k.Flags&flow.FlagICMP != 0:
		b = be.AppendUint16(b, k.SrcPort<<8|k.DstPort) // type, code
	case k.Flags&flow.FlagPorts != 0:
		b = be.AppendUint16(b, k.SrcPort)
		b = be.AppendUint16(b, k.DstPort)
	default:
		b = be.AppendUint32(b, 0)
	}
	b = append(b, k.Proto)
	b = be.AppendUint16(b, uint16(r.TCPFlags))
	b = be.AppendUint16(b, k.VLAN[0])
	b = be.AppendUint16(b, k.VLAN[1])
	// mplsTopLabelStackSection: label (20 bits), traffic class (3),
	// bottom of stack (1). The key keeps the label alone.
	var mpls uint32
	if k.Flags&flow.FlagMPLS != 0 {
		mpls = k.MPLS << 4
	}
	b = append(b, byte(mpls>>16), byte(mpls>>8), byte(mpls))
	b = be.AppendUint32(b, r.Ingress)
	b = append(b, r.EndReason)
	b = be.AppendUint64(b, r.CutPackets)
	b = be.AppendUint64(b, r.CutBytes)
	// Community ID: "1:" and 28 base64 characters, or nothing.
	at := len(b)
	b = append(b, 0)
	b = flow.AppendCommunityID(b, k, e.seed)
	b[at] = byte(len(b) - at - 1)
	return appendString(b, e.url)
}

// appendString appends s as a variable-length field (RFC 7011 §7): one
// length byte, or 255 and two length bytes from 255 bytes on.
func appendString(b []byte, s string) []byte {
	if len(s) < 255 {
		b = append(b, byte(len(s)))
	} else {
		b = append(b, 255)
		b = binary.BigEndian.AppendUint16(b, uint16(min(len(s), 0xffff)))
		s = s[:min(len(s), 0xffff)]
	}
	return append(b, s...)
}
