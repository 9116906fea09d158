//go:build linux

package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/stenod/stenod/xdp"
)

// xdpIface is the XDP machinery of one interface: the program with its pins
// and link, one AF_XDP socket per RX queue in its XSKMAP, and the flow id
// table, which the writers fill from the program's new_flows ring buffer.
type xdpIface struct {
	name     string
	prog     *xdp.Program
	socks    []*xdp.Socket
	ids      *flowIDs // fed from the program's new_flows ring buffer
	observe  bool
	cutoff   bool // the program decides the cutoff
	detached bool
}

// openXDP loads and attaches the program on iface and, unless observing,
// binds one socket per RX queue. On error everything it created is undone,
// pins included.
func openXDP(iface string, cfg *Config, snapLen int, clock *xdp.Clock, log *slog.Logger) (_ *xdpIface, err error) {
	mode, err := attachMode(cfg.XDPMode)
	if err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	nq := 0
	if !cfg.Observe {
		if nq, err = xdp.RxQueueCount(iface); err != nil {
			return nil, fmt.Errorf("capture on %s: %w", iface, err)
		}
		if nq > xdp.DefaultMaxQueues {
			return nil, fmt.Errorf("capture on %s: %d RX queues, at most %d", iface, nq, xdp.DefaultMaxQueues)
		}
	}
	pc := xdp.ProgramConfig{SnapLen: uint32(snapLen), Observe: cfg.Observe, DropRules: cfg.DropRules}
	if !cfg.Observe {
		// In observe mode nothing is stored: nothing to cut.
		pc.Cutoff = cfg.Cutoff
	}
	prog, err := xdp.LoadProgram(xdp.ProgramOptions{
		Interface: iface,
		PinRoot:   cfg.PinRoot,
		Mode:      mode,
		Config:    pc,
		Clock:     clock,
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", iface, err)
	}
	x := &xdpIface{name: iface, prog: prog, observe: cfg.Observe, cutoff: pc.Cutoff.Enabled(), ids: newFlowIDs(maxFlowIDs)}
	defer func() {
		if err != nil {
			err = errors.Join(err, x.detach(), x.close(), x.remove())
		}
	}()
	log.Info("xdp program attached", "iface", iface, "mode", prog.AttachMode(), "pins", prog.PinDir(), "observe", cfg.Observe,
		"cutoff", pc.Cutoff.Enabled())
	if cfg.Observe {
		return x, nil
	}

	opts := xdp.DefaultSocketOptions()
	opts.NumFrames = cfg.UMEMFrames
	opts.FillRingSize = pow2(cfg.UMEMFrames)
	opts.RxRingSize = pow2(cfg.UMEMFrames)
	for q := range nq {
		s, err := xdp.NewSocket(ifc.Index, q, opts)
		if err != nil {
			return nil, fmt.Errorf("capture on %s queue %d: %w", iface, q, err)
		}
		x.socks = append(x.socks, s)
		if r := s.FallbackReason(); r != nil {
			log.Info("af_xdp socket fell back", "iface", iface, "queue", q, "zero_copy", s.ZeroCopy(), "multi_buffer", s.MultiBuffer(), "reason", r)
		}
		if err := prog.XSKMap().Put(uint32(q), uint32(s.FD())); err != nil {
			return nil, fmt.Errorf("capture on %s queue %d: insert socket into xsks: %w", iface, q, err)
		}
	}
	rb, err := ringbuf.NewReader(prog.NewFlows())
	if err != nil {
		return nil, fmt.Errorf("capture on %s: new flows reader: %w", iface, err)
	}
	x.ids.ring, x.ids.iface, x.ids.log = newNewFlowsRing(rb), iface, log
	return x, nil
}

// sources returns one source per socket.
func (x *xdpIface) sources(snapLen int, clock *xdp.Clock) []source {
	out := make([]source, len(x.socks))
	for i, s := range x.socks {
		out[i] = newXSKSource(s, snapLen, clock)
	}
	return out
}

func (x *xdpIface) flowIDs() *flowIDs { return x.ids }

func (x *xdpIface) program() *xdp.Program {
	if x.observe || !x.cutoff {
		return nil
	}
	return x.prog
}

// detach detaches and closes the program, so no packet reaches the
// sockets any more; what is in their rings can still be drained, and the
// new_flows ring buffer, which the kernel keeps while a reader maps it,
// still keys them.
func (x *xdpIface) detach() error {
	var errs []error
	if x.prog != nil && !x.detached {
		errs = append(errs, x.prog.Close())
		x.detached = true
	}
	return errors.Join(errs...)
}

// close closes the sockets and the new_flows reader; the loops have
// stopped.
func (x *xdpIface) close() error {
	var errs []error
	if x.ids.ring != nil {
		errs = append(errs, x.ids.ring.close())
	}
	for _, s := range x.socks {
		errs = append(errs, s.Close())
	}
	x.socks = nil
	return errors.Join(errs...)
}

// remove deletes the pins; call after detach.
func (x *xdpIface) remove() error {
	if x.prog == nil {
		return nil
	}
	return x.prog.Remove()
}

func (x *xdpIface) stats(s *InterfaceStats) {
	s.Attach = x.prog.AttachMode().String()
	ps, err := x.prog.Stats()
	if err != nil {
		s.ProgramError = err.Error()
	} else {
		s.Program = &ps
		s.CutPackets, s.CutBytes = ps.CutPackets, ps.CutBytes
	}
	s.FlowIDs = x.ids.size.Load()
	s.FlowIDEvictions = x.ids.evictions.Load()
	s.RingBufRecords = x.ids.records.Load()
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// xskSource reads one AF_XDP socket.
type xskSource struct {
	sock      *xdp.Socket
	descs     []xdp.Desc
	frameData int // most packet bytes one descriptor carries
	snapLen   int
	clock     *xdp.Clock

	metaMissing atomic.Uint64 // packets without metadata, stamped here
}

// xskDescsPerRead is the receive batch: large enough to amortise the ring
// accesses, and at least xdp.SocketMaxFragments so one multi-buffer packet
// always fits.
const xskDescsPerRead = 64

func newXSKSource(s *xdp.Socket, snapLen int, clock *xdp.Clock) *xskSource {
	return &xskSource{
		sock:      s,
		descs:     make([]xdp.Desc, xskDescsPerRead),
		frameData: s.UMEM().FrameSize() - 256, // XDP_PACKET_HEADROOM
		snapLen:   snapLen,
		clock:     clock,
	}
}

func (s *xskSource) reserve() (int, int) {
	return xskDescsPerRead * min(s.frameData, s.snapLen), xskDescsPerRead
}

// prefetchAhead is how many frames ahead of the one it copies the receive
// loop has the CPU load (xdp.Socket.Prefetch), in steps of as many. In copy
// mode each frame was written by the CPU that ran the XDP program, in a 4
// KiB chunk of its own where no hardware prefetcher looks, so its metadata
// and its bytes were two cache misses the loop waited for one after the
// other. Measured on veth, one flow: 2 to 4 ahead cut the CPU per packet by
// about 13%, 8 by 9%, 16 not at all, and the whole batch at once not
// measurably: prefetches too far ahead queue behind each other.
const prefetchAhead = 4

func (s *xskSource) read(b *batch, wait time.Duration) (int, error) {
	n, err := s.sock.Receive(s.descs)
	if err == nil && n == 0 && wait > 0 {
		var ready bool
		if ready, err = s.sock.Poll(wait); err == nil && ready {
			n, err = s.sock.Receive(s.descs)
		}
	}
	if err != nil || n == 0 {
		return 0, err
	}
	taiOffset := int64(s.clock.Offset())
	added := 0
	prefetched := 0 // s.descs[:prefetched] are being loaded
	for i := 0; i < n; {
		if prefetched < min(n, i+prefetchAhead) {
			next := min(n, i+2*prefetchAhead)
			s.sock.Prefetch(s.descs[prefetched:next])
			prefetched = next
		}
		pkt := xdp.SocketPacket(s.descs[i:n])
		i += len(pkt)
		meta := s.sock.Meta(pkt[0])
		m, _ := xdp.ParseMeta(meta)
		// A driver that cannot write metadata leaves the frame's old
		// bytes there; zeroed, they read as "no metadata" next time
		// instead of as a stale flow id and timestamp.
		clear(meta)
		ts := int64(m.TAINS) - taiOffset // as Clock.Time, without building a time.Time
		if m.TAINS == 0 {
			ts = time.Now().UnixNano()
			s.metaMissing.Add(1)
		}
		orig := xdp.SocketPacketLen(pkt)
		if len(pkt) == 1 {
			f := s.sock.Frame(pkt[0])
			b.add(ts, m.FlowID, orig, f[:min(len(f), s.snapLen)])
		} else {
			b.addFrags(ts, m.FlowID, orig, s.snapLen, s.sock, pkt)
		}
		added++
	}
	if err := s.sock.Release(s.descs[:n]); err != nil {
		return added, fmt.Errorf("release frames: %w", err)
	}
	return added, nil
}

func (s *xskSource) stats(q *QueueStats) {
	q.ZeroCopy = s.sock.ZeroCopy()
	q.MultiBuffer = s.sock.MultiBuffer()
	q.MetaMissing = s.metaMissing.Load()
	st, err := s.sock.Stats()
	if err != nil {
		q.SocketError = err.Error()
		return
	}
	q.Socket = &st
}

func (s *xskSource) close() error { return nil } // the xdpIface closes its sockets

// addFrags appends a multi-buffer packet, its descriptors' bytes up to
// snapLen.
func (b *batch) addFrags(ts int64, flowID uint64, origLen, snapLen int, s *xdp.Socket, pkt []xdp.Desc) {
	off := len(b.data)
	for _, d := range pkt {
		f := s.Frame(d)
		f = f[:min(len(f), snapLen-(len(b.data)-off))]
		b.data = append(b.data, f...)
		if len(b.data)-off == snapLen {
			break
		}
	}
	b.pkts = append(b.pkts, packet{ts: ts, flowID: flowID, off: uint32(off), capLen: uint32(len(b.data) - off), origLen: uint32(origLen)})
}
