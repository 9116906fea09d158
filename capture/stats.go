//go:build linux

package capture

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stenod/stenod/afpacket"
	"github.com/stenod/stenod/xdp"
)

// Stats is every capture counter, per interface and per RX queue, ready to
// be served as JSON. Counters count since Start.
type Stats struct {
	// Method is the capture method of every interface (MethodXDP or
	// MethodAFPacket), or MethodAuto when auto chose differently for
	// different interfaces.
	Method     string           `json:"method"`
	Interfaces []InterfaceStats `json:"interfaces"`
}

// Dropped is what the kernel dropped of the queue's packets before capture
// took them: AF_XDP rx_dropped and rx_ring_full, AF_PACKET ring drops.
// stenod status and the fleet's statistics count drops this way.
func (q *QueueStats) Dropped() uint64 {
	var n uint64
	if q.Socket != nil {
		n += q.Socket.RxDropped + q.Socket.RxRingFull
	}
	if q.Ring != nil {
		n += q.Ring.Drops
	}
	return n
}

// InterfaceStats are the counters of one interface.
type InterfaceStats struct {
	Name string `json:"name"`
	// Method is how this interface is captured, MethodXDP or
	// MethodAFPacket; MethodReason says why (auto's probe, or the
	// configuration).
	Method       string `json:"method"`
	MethodReason string `json:"method_reason"`
	// Attach is how the XDP program is attached: "native" or "generic";
	// empty when AF_PACKET captures without it.
	Attach string `json:"attach"`
	// Observe: the XDP program runs in observe mode (Config.Observe, or
	// beside AF_PACKET capture).
	Observe bool `json:"observe"`
	// Program holds the XDP program's counters, nil when they could not
	// be read (ProgramError says why). Program.RingBufFull counts the
	// new-flow records lost to a full ring buffer.
	Program      *xdp.ProgramStats `json:"program,omitempty"`
	ProgramError string            `json:"program_error,omitempty"`
	// RingBufRecords counts new-flow records read; FlowIDs is how many
	// flow ids the flow id table holds now, FlowIDEvictions how many it
	// forgot for a newer flow that maps to the same slot (a cut packet of
	// theirs is keyed by parsing what was kept, counted in KeysParsed).
	RingBufRecords  uint64 `json:"ringbuf_records"`
	FlowIDs         int64  `json:"flow_ids"`
	FlowIDEvictions uint64 `json:"flow_id_evictions"`
	// CutPackets and CutBytes (wire lengths) were not stored: past their
	// connection's cutoff (Config.Cutoff), on either capture path.
	CutPackets uint64       `json:"cut_packets"`
	CutBytes   uint64       `json:"cut_bytes"`
	Queues     []QueueStats `json:"queues"`
}

// QueueStats are the counters of one RX queue (AF_XDP) or ring (AF_PACKET)
// and its spool stream.
type QueueStats struct {
	Queue  int    `json:"queue"`
	Stream string `json:"stream"`
	CPU    int    `json:"cpu"` // the receive loop's CPU, -1 when not pinned
	// ZeroCopy and MultiBuffer say how the AF_XDP socket is bound.
	ZeroCopy    bool `json:"zero_copy"`
	MultiBuffer bool `json:"multi_buffer"`
	// Packets and Bytes (wire lengths) received from the kernel.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Stored counts packets appended to the spool; SpoolWriteErrors the
	// failed appends and flushes, and SpoolWriteLost the packets they lost
	// (appended packets not yet flushed included, so Stored-SpoolWriteLost
	// is what the spool holds).
	Stored           uint64 `json:"stored"`
	SpoolWriteErrors uint64 `json:"spool_write_errors"`
	SpoolWriteLost   uint64 `json:"spool_write_lost"`
	// Truncated counts packets longer than the snap length, stored cut.
	Truncated uint64 `json:"truncated"`
	// MetaMissing counts packets without XDP metadata (stamped on
	// receipt, keyed by the Go parser).
	MetaMissing uint64 `json:"meta_missing"`
	// WriterStalls counts times the loop that takes packets from the
	// kernel waited for the disk, while packets queued in the kernel's
	// memory. AF_XDP: the receive loop found every batch buffer in the
	// writer's hands (packets waited in the UMEM). AF_PACKET: the reader,
	// which writes itself, waited spool.StallMin (1 ms) or longer for a
	// write (packets waited in the ring's blocks). Drops only follow when
	// that memory is full as well, and the kernel counts them in Socket or
	// Ring.
	WriterStalls uint64 `json:"writer_stalls"`
	// WriterStallSeconds is how long those waits took in all,
	// WriterStallMaxSeconds the longest: at the packet rate, how much of
	// the UMEM (or the ring) one stall takes; UMEMFrames (or
	// AFPacketBlocks) must hold more.
	WriterStallSeconds    float64 `json:"writer_stall_seconds"`
	WriterStallMaxSeconds float64 `json:"writer_stall_max_seconds"`
	// Every packet is keyed by flow.Parse except where the AF_XDP path's
	// flow id gives the key for less: KeysFromFlowID counts those (a
	// packet with the previous packet's flow id, or a cut packet whose id
	// is in the flow id table), KeysParsed the others (on AF_PACKET, every
	// packet).
	KeysFromFlowID uint64 `json:"keys_from_flow_id"`
	KeysParsed     uint64 `json:"keys_parsed"`
	// Socket holds the kernel's AF_XDP counters (XDP_STATISTICS): drops
	// for a full RX ring, an empty fill ring, and others.
	Socket      *xdp.SocketStats `json:"socket,omitempty"`
	SocketError string           `json:"socket_error,omitempty"`
	// Ring holds the AF_PACKET ring's counters: PACKET_STATISTICS
	// (Packets offered, Drops for a full ring, QueueFreezes) and the
	// reader's Delivered and Malformed.
	Ring      *afpacket.Stats `json:"ring,omitempty"`
	RingError string          `json:"ring_error,omitempty"`
	// ReceiveError is why the receive loop stopped early, if it did; for
	// AF_PACKET the latest error of a reader that retries (an interface
	// that went down).
	ReceiveError string `json:"receive_error,omitempty"`
}

// Stats reads every counter. It may be called from any goroutine while the
// capture runs; counters are read one at a time, not as one snapshot.
func (c *Capture) Stats() Stats {
	st := Stats{Method: c.method}
	// Held throughout, so Close cannot close what is being read.
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ifc := range c.ifaces {
		is := InterfaceStats{Name: ifc.name, Method: ifc.method, MethodReason: ifc.reason, Observe: c.cfg.Observe}
		if !c.closed {
			ifc.att.stats(&is)
		}
		for _, q := range ifc.queues {
			stalls := q.stalls()
			qs := QueueStats{
				Queue:                 q.index,
				Stream:                q.stream,
				CPU:                   q.cpu,
				Packets:               q.packets.Load(),
				Bytes:                 q.bytes.Load(),
				Stored:                q.stored.Load(),
				SpoolWriteErrors:      q.writeErrors.Load(),
				SpoolWriteLost:        q.writeLost.Load(),
				Truncated:             q.truncated.Load(),
				WriterStalls:          stalls.Count,
				WriterStallSeconds:    stalls.Total.Seconds(),
				WriterStallMaxSeconds: stalls.Max.Seconds(),
				KeysFromFlowID:        q.keysFromID.Load(),
				KeysParsed:            q.keysParsed.Load(),
			}
			if e := q.receiveErr.Load(); e != nil {
				qs.ReceiveError = *e
			}
			if !c.closed {
				q.src.stats(&qs)
			}
			is.Queues = append(is.Queues, qs)
		}
		st.Interfaces = append(st.Interfaces, is)
	}
	return st
}

// Totals sums the per-queue counters of s.
func (s *Stats) Totals() (packets, bytes, stored uint64) {
	for _, i := range s.Interfaces {
		for _, q := range i.Queues {
			packets += q.Packets
			bytes += q.Bytes
			stored += q.Stored - min(q.Stored, q.SpoolWriteLost)
		}
	}
	return packets, bytes, stored
}

// Collectors returns Prometheus collectors for the figures of Stats. They
// read the counters when scraped; register them with the caller's registry.
func (c *Capture) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&collector{c: c}}
}

type queueMetric struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(*QueueStats) (float64, bool)
}

type ifaceMetric struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(*InterfaceStats) (float64, bool)
}

type collector struct {
	c *Capture
}

func qcounter(name, help string, f func(*QueueStats) uint64) queueMetric {
	return queueMetric{
		desc: prometheus.NewDesc("stenod_capture_"+name+"_total", help, []string{"iface", "queue"}, nil),
		kind: prometheus.CounterValue,
		get:  func(q *QueueStats) (float64, bool) { return float64(f(q)), true },
	}
}

func sockcounter(name, help string, f func(*xdp.SocketStats) uint64) queueMetric {
	return queueMetric{
		desc: prometheus.NewDesc("stenod_xsk_"+name+"_total", help, []string{"iface", "queue"}, nil),
		kind: prometheus.CounterValue,
		get: func(q *QueueStats) (float64, bool) {
			if q.Socket == nil {
				return 0, false
			}
			return float64(f(q.Socket)), true
		},
	}
}

func ringcounter(name, help string, f func(*afpacket.Stats) uint64) queueMetric {
	return queueMetric{
		desc: prometheus.NewDesc("stenod_afpacket_"+name+"_total", help, []string{"iface", "queue"}, nil),
		kind: prometheus.CounterValue,
		get: func(q *QueueStats) (float64, bool) {
			if q.Ring == nil {
				return 0, false
			}
			return float64(f(q.Ring)), true
		},
	}
}

func progcounter(name, help string, f func(*xdp.ProgramStats) uint64) ifaceMetric {
	return ifaceMetric{
		desc: prometheus.NewDesc("stenod_xdp_"+name+"_total", help, []string{"iface"}, nil),
		kind: prometheus.CounterValue,
		get: func(i *InterfaceStats) (float64, bool) {
			if i.Program == nil {
				return 0, false
			}
			return float64(f(i.Program)), true
		},
	}
}

// The metric tables are built per collector, not held in package
// variables, so nothing is shared between captures.
func queueMetrics() []queueMetric {
	return []queueMetric{
		qcounter("packets", "Packets received from the kernel.", func(q *QueueStats) uint64 { return q.Packets }),
		qcounter("bytes", "Bytes (wire lengths) received from the kernel.", func(q *QueueStats) uint64 { return q.Bytes }),
		qcounter("stored_packets", "Packets appended to the spool.", func(q *QueueStats) uint64 { return q.Stored }),
		qcounter("spool_write_errors", "Failed spool appends and flushes.", func(q *QueueStats) uint64 { return q.SpoolWriteErrors }),
		qcounter("spool_write_lost_packets", "Packets lost to failed spool writes (disk full, I/O errors).", func(q *QueueStats) uint64 { return q.SpoolWriteLost }),
		qcounter("truncated_packets", "Packets longer than the snap length, stored cut.", func(q *QueueStats) uint64 { return q.Truncated }),
		qcounter("meta_missing_packets", "Packets without XDP metadata.", func(q *QueueStats) uint64 { return q.MetaMissing }),
		qcounter("writer_stalls", "Times the capture loop waited for the disk (AF_XDP: for a batch buffer; AF_PACKET: 1 ms or more for a write).", func(q *QueueStats) uint64 { return q.WriterStalls }),
		{
			desc: prometheus.NewDesc("stenod_capture_writer_stall_seconds_total", "Time the capture loop waited for the disk in its stalls, while packets queued in the UMEM or the ring.", []string{"iface", "queue"}, nil),
			kind: prometheus.CounterValue,
			get:  func(q *QueueStats) (float64, bool) { return q.WriterStallSeconds, true },
		},
		{
			desc: prometheus.NewDesc("stenod_capture_writer_stall_max_seconds", "The capture loop's longest wait for the disk: at the packet rate, what the UMEM or the ring must hold.", []string{"iface", "queue"}, nil),
			kind: prometheus.GaugeValue,
			get:  func(q *QueueStats) (float64, bool) { return q.WriterStallMaxSeconds, true },
		},
		qcounter("keys_from_flow_id", "Packets keyed through their XDP flow id (the previous packet's flow, or a cut packet's id in the flow id table) instead of by the Go parser.", func(q *QueueStats) uint64 { return q.KeysFromFlowID }),
		qcounter("keys_parsed", "Packets keyed by the Go parser (on AF_PACKET, every packet).", func(q *QueueStats) uint64 { return q.KeysParsed }),
		sockcounter("rx_dropped", "AF_XDP packets dropped for other reasons (XDP_STATISTICS rx_dropped).", func(s *xdp.SocketStats) uint64 { return s.RxDropped }),
		sockcounter("rx_invalid_descs", "AF_XDP invalid RX descriptors.", func(s *xdp.SocketStats) uint64 { return s.RxInvalidDescs }),
		sockcounter("rx_ring_full", "AF_XDP packets dropped because the RX ring was full.", func(s *xdp.SocketStats) uint64 { return s.RxRingFull }),
		sockcounter("rx_fill_ring_empty", "Times the kernel found the AF_XDP fill ring empty.", func(s *xdp.SocketStats) uint64 { return s.RxFillRingEmptyDescs }),
		ringcounter("packets", "Packets the kernel offered the AF_PACKET ring, dropped ones included (PACKET_STATISTICS tp_packets).", func(s *afpacket.Stats) uint64 { return s.Packets }),
		ringcounter("drops", "Packets dropped because every AF_PACKET ring block was full (PACKET_STATISTICS tp_drops).", func(s *afpacket.Stats) uint64 { return s.Drops }),
		ringcounter("queue_freezes", "Times the kernel found the AF_PACKET ring full (PACKET_STATISTICS tp_freeze_q_cnt).", func(s *afpacket.Stats) uint64 { return s.QueueFreezes }),
		ringcounter("malformed", "AF_PACKET ring packets skipped for headers outside their block.", func(s *afpacket.Stats) uint64 { return s.Malformed }),
	}
}

func ifaceMetrics() []ifaceMetric {
	return []ifaceMetric{
		progcounter("packets", "Frames the XDP program ran on.", func(s *xdp.ProgramStats) uint64 { return s.Packets }),
		progcounter("bytes", "Bytes of the frames the XDP program ran on.", func(s *xdp.ProgramStats) uint64 { return s.Bytes }),
		progcounter("redirected", "Frames redirected to an AF_XDP socket.", func(s *xdp.ProgramStats) uint64 { return s.Redirected }),
		progcounter("redirect_failed", "Frames with no socket on their RX queue, passed to the stack.", func(s *xdp.ProgramStats) uint64 { return s.RedirectFailed }),
		progcounter("meta_failed", "Frames redirected without metadata.", func(s *xdp.ProgramStats) uint64 { return s.MetaFailed }),
		progcounter("ringbuf_lost", "New-flow records lost to a full ring buffer.", func(s *xdp.ProgramStats) uint64 { return s.RingBufFull }),
		progcounter("dropped_by_rule", "Frames dropped by a drop rule.", func(s *xdp.ProgramStats) uint64 { return s.DroppedByRule }),
		progcounter("over_snaplen", "Frames longer than the snap length.", func(s *xdp.ProgramStats) uint64 { return s.OverSnapLen }),
		progcounter("passed", "Frames passed to the stack in observe mode.", func(s *xdp.ProgramStats) uint64 { return s.Passed }),
		progcounter("new_flows", "Flows entered in the flows map.", func(s *xdp.ProgramStats) uint64 { return s.NewFlows }),
		progcounter("flow_insert_failed", "Frames whose new flow could not be entered (flow id 0).", func(s *xdp.ProgramStats) uint64 { return s.FlowInsertFailed }),
		progcounter("parse_not_ip", "Frames without an IPv4/IPv6 header.", func(s *xdp.ProgramStats) uint64 { return s.ParseNotIP }),
		progcounter("parse_ipv4", "IPv4 frames.", func(s *xdp.ProgramStats) uint64 { return s.ParseIPv4 }),
		progcounter("parse_ipv6", "IPv6 frames.", func(s *xdp.ProgramStats) uint64 { return s.ParseIPv6 }),
		progcounter("parse_fragment", "IP fragments.", func(s *xdp.ProgramStats) uint64 { return s.ParseFragment }),
		progcounter("parse_vlan", "Frames with at least one VLAN tag.", func(s *xdp.ProgramStats) uint64 { return s.ParseVLAN }),
		progcounter("parse_mpls", "Frames with an MPLS label stack.", func(s *xdp.ProgramStats) uint64 { return s.ParseMPLS }),
		{
			desc: prometheus.NewDesc("stenod_capture_ringbuf_records_total", "New-flow records read from the ring buffer.", []string{"iface"}, nil),
			kind: prometheus.CounterValue,
			get:  func(i *InterfaceStats) (float64, bool) { return float64(i.RingBufRecords), true },
		},
		{
			desc: prometheus.NewDesc("stenod_capture_flow_id_evictions_total", "Flow ids the flow id table forgot for a newer flow in the same slot.", []string{"iface"}, nil),
			kind: prometheus.CounterValue,
			get:  func(i *InterfaceStats) (float64, bool) { return float64(i.FlowIDEvictions), true },
		},
		{
			desc: prometheus.NewDesc("stenod_capture_cut_packets_total", "Packets not stored: past their connection's cutoff.", []string{"iface"}, nil),
			kind: prometheus.CounterValue,
			get:  func(i *InterfaceStats) (float64, bool) { return float64(i.CutPackets), true },
		},
		{
			desc: prometheus.NewDesc("stenod_capture_cut_bytes_total", "Bytes (wire lengths) of the packets not stored for the cutoff.", []string{"iface"}, nil),
			kind: prometheus.CounterValue,
			get:  func(i *InterfaceStats) (float64, bool) { return float64(i.CutBytes), true },
		},
		{
			desc: prometheus.NewDesc("stenod_capture_flow_ids", "Flow ids known now.", []string{"iface"}, nil),
			kind: prometheus.GaugeValue,
			get:  func(i *InterfaceStats) (float64, bool) { return float64(i.FlowIDs), true },
		},
	}
}

func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, q := range queueMetrics() {
		ch <- q.desc
	}
	for _, i := range ifaceMetrics() {
		ch <- i.desc
	}
}

func (m *collector) Collect(ch chan<- prometheus.Metric) {
	st := m.c.Stats()
	qms, ims := queueMetrics(), ifaceMetrics()
	for i := range st.Interfaces {
		is := &st.Interfaces[i]
		for _, im := range ims {
			if v, ok := im.get(is); ok {
				ch <- prometheus.MustNewConstMetric(im.desc, im.kind, v, is.Name)
			}
		}
		for j := range is.Queues {
			qs := &is.Queues[j]
			q := strconv.Itoa(qs.Queue)
			for _, qm := range qms {
				if v, ok := qm.get(qs); ok {
					ch <- prometheus.MustNewConstMetric(qm.desc, qm.kind, v, is.Name, q)
				}
			}
		}
	}
}
