package ipfix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/spool"
)

// scanChunk is how many flows one CopyFlows copies under the index's read
// lock: about 100 KiB, a few microseconds of the writer's time.
const scanChunk = 1024

// freshness is how long after its timestamp a packet may reach the live
// index (capture's flush interval, at most a second). A record that
// continues a flow already counted starts no earlier than the scan before
// the one that found its packets, less this.
const freshness = time.Second

// LiveIndex is a live index and the interface its packets come from.
type LiveIndex struct {
	Iface string
	Index *index.Builder
}

// SpoolIndexes returns the live indexes of the spool's active files: the
// Indexes of Options for a running sensor.
func SpoolIndexes(sp *spool.Spool) func([]LiveIndex) []LiveIndex {
	return func(dst []LiveIndex) []LiveIndex {
		for _, f := range sp.Files() {
			if b := f.Live(); b != nil {
				dst = append(dst, LiveIndex{Iface: f.Interface(), Index: b})
			}
		}
		return dst
	}
}

// Options are what New needs besides the configuration.
type Options struct {
	// Indexes appends the live indexes to read to dst (SpoolIndexes).
	Indexes func(dst []LiveIndex) []LiveIndex
	// CommunityIDSeed is the seed of the exported Community IDs
	// (api.community_id_seed).
	CommunityIDSeed uint16
	Logger          *slog.Logger
	// Now is the clock (time.Now when nil); tests set it.
	Now func() time.Time
	// IfIndex gives an interface's index for ingressInterface
	// (net.InterfaceByName's when nil).
	IfIndex func(name string) uint32
}

// Exporter exports the flows of the live indexes to collectors.
type Exporter struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	senders []*sender

	// The scan's state, used by Run's goroutine only.
	indexes map[*index.Builder]*indexState
	// ids maps a flow to its state in flows; a forgotten flow's slot
	// goes to free. A slice rather than a map of pointers: no allocation
	// per flow, and expire walks memory in order (measured: map
	// operations were a quarter of BenchmarkExport).
	ids      map[stateKey]int32
	flows    []flowState
	free     []int32
	ifindex  map[string]uint32
	cur      []LiveIndex
	chunk    []index.LiveFlow
	prevScan int64 // unix ns of the scan before, 0 before the first
	emitted  uint64
}

// indexState is what the exporter has counted of one live index: per flow
// number, the packets and bytes already handed to a record.
type indexState struct {
	ingress uint32
	seen    []seenFlow
	// seenCut is seen for the index's records of flows that had only cut
	// packets in the file (index.Builder.CopyCutOnly).
	seenCut []seenFlow
	live    bool // listed by the latest Indexes call
}

type seenFlow struct {
	packets, bytes       uint64
	cutPackets, cutBytes uint64
	last                 int64
	// slot+1 is where the flow's record was gathered at the last scan
	// that found something new (0: none yet): a hint that spares the
	// look-up in ids for a flow active scan after scan (measured: the
	// look-ups of 65,536 active flows every second were most of the
	// export's cost at the default timeouts).
	slot int32
}

// stateKey identifies a flow for export: its key and where it was seen.
// A flow that continues into the next spool file (rotation) keeps its key
// and so its record.
type stateKey struct {
	key     flow.Key
	ingress uint32
}

// flowState is a flow's record being gathered (rec.Packets and
// rec.CutPackets 0: nothing since the last export) and when its last packet came; lastPacket 0: the
// slot is free.
type flowState struct {
	rec        Record
	lastPacket int64
}

// New returns an exporter to cfg.Collectors; nil and no error when there
// is none. Nothing is sent before Run.
func New(cfg Config, opts Options) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ipfix: %w", err)
	}
	if len(cfg.Collectors) == 0 {
		return nil, nil
	}
	if opts.Indexes == nil {
		return nil, errors.New("ipfix: no live indexes to export")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IfIndex == nil {
		opts.IfIndex = func(name string) uint32 {
			if ifc, err := net.InterfaceByName(name); err == nil {
				return uint32(ifc.Index)
			}
			return 0
		}
	}
	x := &Exporter{cfg: cfg, opts: opts, log: opts.Logger,
		indexes: map[*index.Builder]*indexState{}, ids: map[stateKey]int32{}, ifindex: map[string]uint32{},
		chunk: make([]index.LiveFlow, 0, scanChunk)}
	for _, c := range cfg.Collectors {
		s, err := newSender(c, &cfg, opts.CommunityIDSeed, cfg.BaseURL, opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("ipfix: %w", err)
		}
		x.senders = append(x.senders, s)
	}
	return x, nil
}

// Run scans every Config.ScanInterval and sends until ctx is done; then it
// exports every flow still open (flowEndReason 4, forced end), lets the
// senders write their queues for up to a few seconds, and returns.
func (x *Exporter) Run(ctx context.Context) error {
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := x.startSenders(sctx)
	x.log.Info("ipfix export running", "collectors", x.cfg.Collectors, "active_timeout", x.cfg.ActiveTimeout,
		"idle_timeout", x.cfg.IdleTimeout, "observation_domain", x.cfg.SensorID, "base_url", x.cfg.BaseURL)
	t := time.NewTicker(x.cfg.ScanInterval())
	defer t.Stop()
	for {
		select {
		case <-t.C:
			x.Scan()
			continue
		case <-ctx.Done():
		}
		break
	}
	x.Scan()
	x.Flush(EndForced)
	for _, s := range x.senders {
		close(s.queue)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainTimeout):
		cancel()
		<-done
	}
	return nil
}

// startSenders starts a goroutine per collector; they stop when their
// queue is closed and written, or when ctx is done.
func (x *Exporter) startSenders(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, s := range x.senders {
		wg.Go(func() { s.run(ctx, x.opts.Now) })
	}
	return &wg
}

// Counters returns each collector's counters, in the configured order.
func (x *Exporter) Counters() []Counters {
	out := make([]Counters, len(x.senders))
	for i, s := range x.senders {
		out[i] = s.counters()
	}
	return out
}

// Scan reads the live indexes once, adds what is new to the flows' records
// and exports the records whose flows timed out. Run calls it; so can a
// test or benchmark that does not call Run.
func (x *Exporter) Scan() {
	now := x.opts.Now().UnixNano()
	for _, st := range x.indexes {
		st.live = false
	}
	x.cur = x.opts.Indexes(x.cur[:0])
	for _, li := range x.cur {
		st := x.indexes[li.Index]
		if st == nil {
			st = &indexState{ingress: x.ingress(li.Iface)}
			x.indexes[li.Index] = st
		}
		st.live = true
		x.scanIndex(li.Index, st)
	}
	for b, st := range x.indexes {
		if !st.live {
			// Sealed since the last scan: its last packets, then
			// forget it. Its Builder no longer changes.
			x.scanIndex(b, st)
			delete(x.indexes, b)
		}
	}
	clear(x.cur) // let sealed Builders go
	x.expire(now)
	x.prevScan = now
}

func (x *Exporter) ingress(name string) uint32 {
	if name == "" {
		return 0
	}
	i, ok := x.ifindex[name]
	if !ok {
		i = x.opts.IfIndex(name)
		x.ifindex[name] = i
	}
	return i
}

// scanIndex adds the packets b has beyond what st counted, stored and cut.
func (x *Exporter) scanIndex(b *index.Builder, st *indexState) {
	x.scanFlows(b.CopyFlows, &st.seen, st.ingress)
	x.scanFlows(b.CopyCutOnly, &st.seenCut, st.ingress)
}

// scanFlows adds what the flows copyFlows lists have beyond seen.
func (x *Exporter) scanFlows(copyFlows func([]index.LiveFlow, int) []index.LiveFlow, seen *[]seenFlow, ingress uint32) {
	for from := 0; ; {
		chunk := copyFlows(x.chunk[:0], from)
		if len(chunk) == 0 {
			return
		}
		for i := range chunk {
			f := &chunk[i]
			id := from + i
			if id >= len(*seen) {
				*seen = append(*seen, seenFlow{})
			}
			s := &(*seen)[id]
			if f.Packets == s.packets && f.CutPackets == s.cutPackets || !Exportable(&f.Key) {
				continue
			}
			d := delta{packets: f.Packets - s.packets, bytes: f.Bytes - s.bytes,
				cutPackets: f.CutPackets - s.cutPackets, cutBytes: f.CutBytes - s.cutBytes, tcpFlags: f.TCPFlags}
			// The index keeps no time per packet, only the flow's
			// first and last: the new packets' first time is exact
			// when they are the flow's first in the file or a single
			// packet, else bounded below (freshness). Cut packets
			// come with the time of the latest.
			d.start = f.First
			switch {
			case s.packets == 0 && s.cutPackets == 0:
			case d.packets+d.cutPackets == 1 || d.packets == 0:
				d.start = f.Last
			default:
				d.start = s.last + 1
				if lo := x.prevScan - int64(freshness); lo > d.start {
					d.start = lo
				}
				d.start = min(d.start, f.Last)
			}
			d.end = f.Last
			slot := x.add(stateKey{key: f.Key, ingress: ingress}, s.slot-1, &d)
			*s = seenFlow{packets: f.Packets, bytes: f.Bytes, cutPackets: f.CutPackets, cutBytes: f.CutBytes, last: f.Last, slot: slot + 1}
		}
		x.chunk = chunk
		from += len(chunk)
	}
}

// delta is what a scan found new of a flow.
type delta struct {
	packets, bytes, cutPackets, cutBytes uint64
	tcpFlags                             uint8
	start, end                           int64
}

// add counts d into k's record, and returns the record's slot. hint is
// the slot k's record had at its flow's last scan, or -1.
func (x *Exporter) add(k stateKey, hint int32, d *delta) int32 {
	id, ok := hint, false
	if hint >= 0 && int(hint) < len(x.flows) {
		fs := &x.flows[hint]
		ok = fs.lastPacket != 0 && fs.rec.Ingress == k.ingress && fs.rec.Key == k.key
	}
	if !ok {
		id, ok = x.ids[k]
	}
	if !ok {
		if n := len(x.free); n > 0 {
			id, x.free = x.free[n-1], x.free[:n-1]
		} else {
			id = int32(len(x.flows))
			x.flows = append(x.flows, flowState{})
		}
		x.flows[id] = flowState{rec: Record{Key: k.key, Ingress: k.ingress}}
		x.ids[k] = id
	}
	fs := &x.flows[id]
	r := &fs.rec
	if r.Packets == 0 && r.CutPackets == 0 {
		r.Start, r.End, r.TCPFlags = d.start, d.end, 0
	} else {
		r.Start, r.End = min(r.Start, d.start), max(r.End, d.end)
	}
	r.Packets += d.packets
	r.Bytes += d.bytes
	r.CutPackets += d.cutPackets
	r.CutBytes += d.cutBytes
	r.TCPFlags |= d.tcpFlags
	fs.lastPacket = max(fs.lastPacket, d.end, 1)
	return id
}

// expire exports the records of flows idle for IdleTimeout (and forgets
// those flows) or open for ActiveTimeout.
func (x *Exporter) expire(now int64) {
	idle, active := int64(x.cfg.IdleTimeout), int64(x.cfg.ActiveTimeout)
	for i := range x.flows {
		fs := &x.flows[i]
		if fs.lastPacket == 0 {
			continue
		}
		isIdle := now-fs.lastPacket >= idle
		r := &fs.rec
		if r.Packets > 0 || r.CutPackets > 0 {
			switch {
			case isIdle:
				r.EndReason = EndIdle
				x.emit(r)
			case now-r.Start >= active:
				r.EndReason = EndActive
				x.emit(r)
			}
		}
		if isIdle {
			x.forget(int32(i))
		}
	}
}

// forget frees flow id's slot.
func (x *Exporter) forget(id int32) {
	fs := &x.flows[id]
	delete(x.ids, stateKey{key: fs.rec.Key, ingress: fs.rec.Ingress})
	fs.lastPacket = 0
	x.free = append(x.free, id)
}

// Flush exports every open record with reason and forgets the flows.
func (x *Exporter) Flush(reason uint8) {
	for i := range x.flows {
		fs := &x.flows[i]
		if fs.lastPacket == 0 {
			continue
		}
		if fs.rec.Packets > 0 || fs.rec.CutPackets > 0 {
			fs.rec.EndReason = reason
			x.emit(&fs.rec)
		}
		x.forget(int32(i))
	}
}

func (x *Exporter) emit(r *Record) {
	for _, s := range x.senders {
		s.offer(r)
	}
	r.Packets, r.Bytes, r.CutPackets, r.CutBytes, r.TCPFlags = 0, 0, 0, 0, 0
	x.emitted++
}
