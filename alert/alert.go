// Package alert turns one event of an IDS or flow monitor — a Suricata
// eve.json record (an alert, usually) or a Zeek log line in JSON (conn.log,
// usually) — into the query for that connection's packets: by its Community
// ID when the event carries one, else by its 5-tuple, in a time window around
// the event clipped to the connection's life as far as the event tells it.
package alert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/stenod/stenod/flow"
)

// DefaultWindow is how far before and after the event's time the packets
// are looked for, unless the event bounds the connection more tightly.
const DefaultWindow = 5 * time.Minute

// MaxEventBytes bounds one event: Suricata alert records with payload and
// metadata reach tens of KiB.
const MaxEventBytes = 1 << 20

// Source says which monitor wrote an event.
type Source string

const (
	Suricata Source = "suricata"
	Zeek     Source = "zeek"
)

// Event is what a pivot needs of an event.
type Event struct {
	Source Source
	// Time is the event's time: Suricata's timestamp (when the alert
	// fired), Zeek's ts (when the connection started).
	Time time.Time
	// Start and End bound the connection, when the event says so (zero:
	// unknown): Suricata's flow.start and flow.end, Zeek's ts and ts +
	// duration.
	Start, End time.Time
	// CommunityID is the event's community_id, "" when it has none.
	CommunityID string
	// The 5-tuple; for ICMP, Suricata and Zeek put the type and code in
	// the ports, which the query language has no primitive for.
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	// Name names the event for a download's file name: the signature id
	// of a Suricata alert, the uid of a Zeek connection.
	Name string
}

// Parse reads one JSON event. It tells Suricata from Zeek by their fields:
// src_ip and dest_ip, or id.orig_h and id.resp_h.
func Parse(line []byte) (*Event, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, errors.New("alert: empty: want one Suricata eve.json or Zeek JSON log line")
	}
	if len(line) > MaxEventBytes {
		return nil, fmt.Errorf("alert: %d bytes: more than the %d of one event", len(line), MaxEventBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("alert: not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("alert: more than one JSON value: give one event")
	}
	switch {
	case m["src_ip"] != nil || m["dest_ip"] != nil:
		return parseSuricata(m)
	case m["id.orig_h"] != nil || m["id.resp_h"] != nil:
		return parseZeek(m)
	}
	return nil, errors.New("alert: neither a Suricata eve.json record (src_ip, dest_ip) nor a Zeek log line (id.orig_h, id.resp_h)")
}

func parseSuricata(m map[string]any) (*Event, error) {
	e := &Event{Source: Suricata}
	f := fields{m: m, what: "eve.json"}
	e.Time = f.time("timestamp", true)
	e.Src = f.addr("src_ip")
	e.Dst = f.addr("dest_ip")
	e.Proto = f.proto("proto")
	if hasPorts(e.Proto) {
		e.SrcPort = f.port("src_port")
		e.DstPort = f.port("dest_port")
	}
	e.CommunityID = f.communityID()
	if fl, ok := m["flow"].(map[string]any); ok {
		ff := fields{m: fl, what: "eve.json flow"}
		e.Start = ff.time("start", false)
		e.End = ff.time("end", false)
		if ff.err != nil && f.err == nil {
			f.err = ff.err
		}
	}
	if a, ok := m["alert"].(map[string]any); ok {
		if sid, ok := a["signature_id"].(json.Number); ok {
			e.Name = "sid" + sid.String()
		}
	}
	return e, f.err
}

func parseZeek(m map[string]any) (*Event, error) {
	e := &Event{Source: Zeek}
	f := fields{m: m, what: "Zeek log"}
	e.Time = f.time("ts", true)
	e.Start = e.Time
	e.Src = f.addr("id.orig_h")
	e.Dst = f.addr("id.resp_h")
	e.Proto = f.proto("proto")
	if e.Proto == flow.ProtoICMP && e.Src.Is6() {
		// Zeek calls ICMPv6 "icmp" too.
		e.Proto = flow.ProtoICMPv6
	}
	if hasPorts(e.Proto) {
		e.SrcPort = f.port("id.orig_p")
		e.DstPort = f.port("id.resp_p")
	}
	e.CommunityID = f.communityID()
	if d, ok := m["duration"]; ok && f.err == nil {
		secs, err := number(d)
		if err != nil || secs < 0 || secs > 1e9 {
			f.fail("duration %v: want seconds", d)
		} else {
			e.End = e.Time.Add(time.Duration(secs * float64(time.Second)))
		}
	}
	if uid, ok := m["uid"].(string); ok {
		e.Name = uid
	}
	return e, f.err
}

// hasPorts: the protocols whose ports (or ICMP type and code) the monitors
// log and the flow key keeps.
func hasPorts(p uint8) bool {
	switch p {
	case flow.ProtoTCP, flow.ProtoUDP, flow.ProtoSCTP, flow.ProtoICMP, flow.ProtoICMPv6:
		return true
	}
	return false
}

// fields reads an event's fields, keeping the first error.
type fields struct {
	m    map[string]any
	what string
	err  error
}

func (f *fields) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("alert: %s: %s", f.what, fmt.Sprintf(format, args...))
	}
}

// Suricata writes "2024-03-01T11:59:15.346584+0000", with no colon in the
// offset; Zeek, asked for ISO 8601, RFC 3339.
var timeLayouts = []string{"2006-01-02T15:04:05.999999999-0700", time.RFC3339Nano}

func (f *fields) time(name string, required bool) time.Time {
	v, ok := f.m[name]
	if !ok || v == nil {
		if required {
			f.fail("no %s", name)
		}
		return time.Time{}
	}
	switch v := v.(type) {
	case string:
		for _, l := range timeLayouts {
			if t, err := time.Parse(l, v); err == nil {
				return t
			}
		}
	case json.Number:
		// Zeek's default: seconds since the epoch, microseconds after the
		// point. Parsed as decimal digits, not as a float, so that no
		// microsecond is lost.
		if t, ok := epoch(v.String()); ok {
			return t
		}
	}
	f.fail("%s %v: want a time such as 2024-03-01T11:59:15.346584+0000 or 1709294355.346584", name, v)
	return time.Time{}
}

func epoch(s string) (time.Time, bool) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/int64(time.Second)-1 || len(frac) > 9 {
		return time.Time{}, false
	}
	var ns int64
	if frac != "" {
		f, err := strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		ns = int64(f)
	}
	return time.Unix(n, ns).UTC(), true
}

func (f *fields) addr(name string) netip.Addr {
	s, ok := f.m[name].(string)
	if !ok {
		f.fail("no %s", name)
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		f.fail("%s %q: want an IPv4 or IPv6 address", name, s)
		return netip.Addr{}
	}
	return a.Unmap()
}

func (f *fields) port(name string) uint16 {
	v, ok := f.m[name]
	if !ok {
		f.fail("no %s", name)
		return 0
	}
	n, err := number(v)
	if err != nil || n < 0 || n > 65535 || n != math.Trunc(n) {
		f.fail("%s %v: want a port, 0 to 65535", name, v)
		return 0
	}
	return uint16(n)
}

// Protocol names as Suricata (from /etc/protocols, upper case) and Zeek
// (transport_proto: tcp, udp, icmp, unknown_transport) write them.
var protoNames = map[string]uint8{
	"tcp": flow.ProtoTCP, "udp": flow.ProtoUDP, "sctp": flow.ProtoSCTP,
	"icmp": flow.ProtoICMP, "ipv6-icmp": flow.ProtoICMPv6, "icmpv6": flow.ProtoICMPv6,
	"gre": 47, "esp": 50, "ah": 51, "ipip": 4, "ipv6": 41, "ospf": 89, "pim": 103, "vrrp": 112,
}

func (f *fields) proto(name string) uint8 {
	v, ok := f.m[name]
	if !ok {
		f.fail("no %s", name)
		return 0
	}
	s := fmt.Sprint(v)
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p
	}
	if n, err := strconv.ParseUint(s, 10, 8); err == nil {
		return uint8(n)
	}
	f.fail("%s %q: want a protocol name (TCP, UDP, ICMP, IPv6-ICMP, ...) or number", name, s)
	return 0
}

func (f *fields) communityID() string {
	v, ok := f.m["community_id"]
	if !ok || v == nil || v == "" {
		return ""
	}
	s, _ := v.(string)
	if _, err := flow.ParseCommunityID(s); err != nil {
		f.fail("community_id %v: %v", v, strings.TrimPrefix(err.Error(), "community id: "))
		return ""
	}
	return s
}

func number(v any) (float64, error) {
	switch v := v.(type) {
	case json.Number:
		return v.Float64()
	case string:
		return strconv.ParseFloat(v, 64)
	}
	return 0, fmt.Errorf("%v is not a number", v)
}

// Query returns the query for the event's connection: its Community ID, or
// both directions of its 5-tuple, from window before the event's time to
// window after it, within the connection's start and end when the event
// gives them.
func (e *Event) Query(window time.Duration) string {
	lo, hi := e.Time.Add(-window), e.Time.Add(window)
	if !e.Start.IsZero() && e.Start.After(lo) {
		lo = e.Start
	}
	// The monitors write microseconds, cutting what the capture stamped
	// in nanoseconds: the connection's last packet is up to 1 µs after End.
	if !e.End.IsZero() {
		if end := e.End.Add(time.Microsecond); end.Before(hi) {
			hi = end
		}
	}
	if hi.Before(lo) {
		// An end before the window (an event logged long after its
		// connection): the window wins.
		lo, hi = e.Time.Add(-window), e.Time.Add(window)
	}
	var b strings.Builder
	if e.CommunityID != "" {
		b.WriteString("community-id " + e.CommunityID)
	} else {
		b.WriteString(e.tuple())
	}
	fmt.Fprintf(&b, " and after %s and before %s", lo.UTC().Format(time.RFC3339Nano), hi.UTC().Format(time.RFC3339Nano))
	return b.String()
}

// tuple matches both directions of the connection and nothing else.
func (e *Event) tuple() string {
	proto := "ip proto " + strconv.Itoa(int(e.Proto))
	switch e.Proto {
	case flow.ProtoTCP, flow.ProtoUDP, flow.ProtoSCTP:
		side := func(a netip.Addr, ap uint16, b netip.Addr, bp uint16) string {
			return fmt.Sprintf("(src host %s and src port %d and dst host %s and dst port %d)", a, ap, b, bp)
		}
		return fmt.Sprintf("%s and (%s or %s)", proto,
			side(e.Src, e.SrcPort, e.Dst, e.DstPort), side(e.Dst, e.DstPort, e.Src, e.SrcPort))
	}
	// ICMP and the rest: the hosts and protocol.
	return fmt.Sprintf("%s and host %s and host %s", proto, e.Src, e.Dst)
}
