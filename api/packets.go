package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/stenod/stenod/engine"
	"github.com/stenod/stenod/query"
)

// PacketInfo is one packet of a /v1/packets answer.
type PacketInfo struct {
	// N is the packet's place in the whole answer, from 0: the offset that
	// asks for it alone.
	N      int    `json:"n"`
	TimeNS int64  `json:"ts_ns"`
	Time   string `json:"time"` // RFC 3339, nanoseconds, UTC
	CapLen int    `json:"caplen"`
	Len    int    `json:"len"` // on the wire
	Iface  string `json:"iface,omitempty"`
	// Summary is one line about the packet, in the spirit of tcpdump's.
	Summary string `json:"summary"`
	// Data is the captured bytes (base64 in JSON), with data=1 only.
	Data []byte `json:"data,omitempty"`
}

// Packets is the /v1/packets answer: a page of the packets a query
// returns, in the order of its pcap answer.
type Packets struct {
	Query   string       `json:"query"`
	Offset  int          `json:"offset"`
	Limit   int          `json:"limit"`
	Packets []PacketInfo `json:"packets"`
	// More: the query returns packets after this page.
	More bool `json:"more"`
}

// pageWriter keeps the packets of one page of an answer.
type pageWriter struct {
	offset, n int
	data      bool
	out       []PacketInfo
}

func (p *pageWriter) WritePacket(ts int64, origLen int, data []byte, iface string) error {
	i := p.n
	p.n++
	if i < p.offset {
		return nil
	}
	pi := PacketInfo{N: i, TimeNS: ts, Time: formatNS(ts), CapLen: len(data), Len: origLen, Iface: iface, Summary: summarize(data)}
	if p.data {
		// data is the engine's buffer, valid during the call only.
		pi.Data = append([]byte(nil), data...)
	}
	p.out = append(p.out, pi)
	return nil
}

func (p *pageWriter) Flush() error { return nil }

func (s *Server) handlePackets(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	pw := &pageWriter{data: v.Get("data") == "1" || v.Get("data") == "true"}
	limit, most := DefaultPackets, MaxPackets
	if pw.data {
		most = MaxPacketsData
		limit = min(limit, most)
	}
	var err error
	if limit, err = intParam(v, "limit", limit, 1, most, fmt.Sprintf(" (%d with data, %d without)", MaxPacketsData, MaxPackets)); err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	if pw.offset, err = intParam(v, "offset", 0, 0, MaxPacketOffset, " (narrow the query to see further)"); err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	var res engine.Result
	q, ok := s.indexQuery(w, r, "packet list", func(ctx context.Context, q *query.Query) (err error) {
		// Every packet before the page is read too: the answer's order is
		// the merge of all files by time, known only by reading them.
		res, err = engine.Run(ctx, s.sp, q, pw, engine.Options{LimitPackets: int64(pw.offset + limit)})
		return err
	})
	if !ok {
		return
	}
	out := Packets{Query: q.String(), Offset: pw.offset, Limit: limit, Packets: pw.out, More: res.Limited}
	if out.Packets == nil {
		out.Packets = []PacketInfo{}
	}
	s.metrics.queries.WithLabelValues(outcomeComplete).Inc()
	s.writeJSON(w, &out)
}

// summarize describes a frame in one line: its endpoints, protocol and the
// fields an analyst scans a packet list for (TCP flags and sequence
// numbers, ICMP types, DNS questions, ARP's who-has). It decodes only the
// frame given (no reassembly) and never fails: what does not decode is
// named by its link or network type.
func summarize(data []byte) string {
	p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var b strings.Builder
	var src, dst string
	if nl := p.NetworkLayer(); nl != nil {
		f := nl.NetworkFlow()
		src, dst = f.Src().String(), f.Dst().String()
	}
	ep := func(addr string, port uint16) string { return net.JoinHostPort(addr, strconv.Itoa(int(port))) }
	switch {
	case p.Layer(layers.LayerTypeTCP) != nil:
		t := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		fmt.Fprintf(&b, "%s > %s TCP [%s] seq %d", ep(src, uint16(t.SrcPort)), ep(dst, uint16(t.DstPort)), tcpFlags(t), t.Seq)
		if t.ACK {
			fmt.Fprintf(&b, " ack %d", t.Ack)
		}
		fmt.Fprintf(&b, " win %d len %d", t.Window, len(t.Payload))
	case p.Layer(layers.LayerTypeUDP) != nil:
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		fmt.Fprintf(&b, "%s > %s UDP len %d", ep(src, uint16(u.SrcPort)), ep(dst, uint16(u.DstPort)), len(u.Payload))
		if d, ok := p.Layer(layers.LayerTypeDNS).(*layers.DNS); ok {
			b.WriteString(dnsSummary(d))
		}
	case p.Layer(layers.LayerTypeICMPv4) != nil:
		ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		fmt.Fprintf(&b, "%s > %s ICMP %s", src, dst, ic.TypeCode.String())
		if t := ic.TypeCode.Type(); t == layers.ICMPv4TypeEchoRequest || t == layers.ICMPv4TypeEchoReply {
			fmt.Fprintf(&b, " id %d seq %d", ic.Id, ic.Seq)
		}
	case p.Layer(layers.LayerTypeICMPv6) != nil:
		ic := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		fmt.Fprintf(&b, "%s > %s ICMPv6 %s", src, dst, ic.TypeCode.String())
	case p.Layer(layers.LayerTypeARP) != nil:
		a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		if a.Operation == layers.ARPRequest {
			fmt.Fprintf(&b, "ARP who-has %v tell %v", net.IP(a.DstProtAddress), net.IP(a.SourceProtAddress))
		} else {
			fmt.Fprintf(&b, "ARP reply %v is-at %v", net.IP(a.SourceProtAddress), net.HardwareAddr(a.SourceHwAddress))
		}
	case src != "":
		fmt.Fprintf(&b, "%s > %s", src, dst)
		if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			fmt.Fprintf(&b, " %s", ip.Protocol)
			if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
				fmt.Fprintf(&b, " fragment offset %d", int(ip.FragOffset)*8)
			}
		} else if p.Layer(layers.LayerTypeIPv6Fragment) != nil {
			b.WriteString(" IPv6 fragment")
		}
	default:
		if eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); ok {
			fmt.Fprintf(&b, "%v > %v ethertype %s (0x%04x)", eth.SrcMAC, eth.DstMAC, eth.EthernetType, uint16(eth.EthernetType))
		} else {
			b.WriteString("not an Ethernet frame")
		}
	}
	if p.Layer(layers.LayerTypeDot1Q) != nil {
		var tags []string
		for _, l := range p.Layers() {
			if d, ok := l.(*layers.Dot1Q); ok {
				tags = append(tags, strconv.Itoa(int(d.VLANIdentifier)))
			}
		}
		b.WriteString(" vlan " + strings.Join(tags, ","))
	}
	return b.String()
}

// tcpFlags writes TCP flags as tcpdump does: S, F, R, P, U, E, W and "." for
// ACK.
func tcpFlags(t *layers.TCP) string {
	var f []byte
	for _, x := range []struct {
		on bool
		c  byte
	}{{t.SYN, 'S'}, {t.FIN, 'F'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.URG, 'U'}, {t.ECE, 'E'}, {t.CWR, 'W'}, {t.ACK, '.'}} {
		if x.on {
			f = append(f, x.c)
		}
	}
	if len(f) == 0 {
		return "none"
	}
	return string(f)
}

// dnsSummary is " DNS query A example.org" or " DNS response A example.org
// NOERROR 2 answers".
func dnsSummary(d *layers.DNS) string {
	var b strings.Builder
	if d.QR {
		b.WriteString(" DNS response")
	} else {
		b.WriteString(" DNS query")
	}
	for _, q := range d.Questions {
		fmt.Fprintf(&b, " %s %s", q.Type, q.Name)
	}
	if d.QR {
		fmt.Fprintf(&b, " %s %d answers", d.ResponseCode, len(d.Answers))
	}
	return b.String()
}
