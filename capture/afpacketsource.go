//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/stenod/stenod/afpacket"
	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// chooseMethod decides how iface is captured and says why. Auto takes
// AF_XDP only where the driver binds AF_XDP sockets in zero-copy mode with
// multi-buffer, as the XDP path will bind them: everywhere else (veth,
// virtio before zero-copy support, generic XDP) AF_XDP copies every packet
// in the kernel's copy path, and AF_PACKET with TPACKET_V3 is faster.
func chooseMethod(iface string, cfg *Config) (method, reason string) {
	switch {
	case cfg.Observe:
		return MethodXDP, "observe mode: the XDP program only, nothing stored"
	case cfg.Method == MethodXDP:
		return MethodXDP, "set in the configuration"
	case cfg.Method == MethodAFPacket:
		return MethodAFPacket, "set in the configuration"
	case cfg.XDPMode == XDPModeGeneric:
		return MethodAFPacket, "xdp mode is generic: AF_XDP would copy every packet, AF_PACKET is faster"
	}
	if err := probeZeroCopy(iface); err != nil {
		why := strings.ReplaceAll(err.Error(), "\n", "; ")
		return MethodAFPacket, "no AF_XDP zero-copy, AF_PACKET is faster than copy mode: " + why
	}
	return MethodXDP, "the driver binds AF_XDP sockets in zero-copy mode"
}

// probeZeroCopy binds a small AF_XDP socket to RX queue 0 in zero-copy mode
// with multi-buffer, the first thing the XDP path's sockets try, and closes
// it again. nil means zero-copy works. It is the kernel's own answer, not a
// list of drivers; on a NIC that supports it the bind briefly reconfigures
// queue 0, as the capture's own bind does right after.
func probeZeroCopy(iface string) error {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	opts := xdp.DefaultSocketOptions()
	opts.NumFrames = 64
	opts.FillRingSize = 64
	opts.RxRingSize = 64
	opts.Mode = xdp.SocketModeZeroCopy
	opts.MultiBuffer = true
	s, err := xdp.NewSocket(ifc.Index, 0, opts)
	if err != nil {
		return err
	}
	zc, mb := s.ZeroCopy(), s.MultiBuffer()
	if err := s.Close(); err != nil {
		return fmt.Errorf("close probe socket: %w", err)
	}
	switch {
	case !zc:
		return errors.New("the kernel bound the probe socket in copy mode")
	case !mb:
		return errors.New("zero-copy without multi-buffer: jumbo frames would need copy mode")
	}
	return nil
}

// driverName names the interface's driver for the log, or "none" for a
// virtual interface without a device.
func driverName(iface string) string {
	p, err := os.Readlink(filepath.Join("/sys/class/net", iface, "device", "driver"))
	if err != nil {
		return "none"
	}
	return filepath.Base(p)
}

// AF_PACKET reader timing.
const (
	// afpPollInterval is how long Next waits for a block before it looks
	// at the ring again; the kernel's wake-up with each block and the end
	// of the context (stopping) come sooner. Each wake-up costs a capture
	// thread several switches (docs/benchmarks.md, "Wake-ups").
	afpPollInterval = time.Second
	// afpMaxBlockTimeout bounds the block timeout: a quiet link's packets
	// reach the reader within one to two block timeouts.
	afpMaxBlockTimeout = 50 * time.Millisecond
)

// testHookRingBlock, when set (by tests, before Start), is called by every
// AF_PACKET reader before it waits for a block.
var testHookRingBlock func(stream string)

// afpIface is the AF_PACKET machinery of one interface: a fanout group of
// TPACKET_V3 rings and, optionally, the XDP program in observe mode with a
// reader that empties its new_flows ring buffer.
type afpIface struct {
	name         string
	rings        []*afpacket.Ring
	blocks       int
	blockTimeout time.Duration
	prog         *xdp.Program // the XDP program (observe), or with NoXDP only the cutoff's maps
	observe      bool         // prog's XDP program is attached in observe mode
	cutoff       bool         // prog's socket filter runs on the rings
	log          *slog.Logger
	newFlows     *newFlowsRing // the observer's new_flows, drained by the readers; nil without
	records      atomic.Uint64 // records drained from it
	detached     bool
}

// openAFPacket opens the rings of iface in one PACKET_FANOUT_HASH group
// (no group with one ring) and, with Config.XDPObserve or drop rules, loads
// the XDP program in observe mode first, so that drop rules act before the
// rings see a packet. With the cutoff, the program is loaded (and pinned)
// without XDP if nothing else needs it, and its socket filter is attached
// to every ring in place of the classic snap length filter: it cuts, the
// XDP program in observe mode does not. On error everything it created is
// undone, pins included.
func openAFPacket(iface string, cfg *Config, snapLen int, clock *xdp.Clock, log *slog.Logger) (_ *afpIface, err error) {
	if _, err := net.InterfaceByName(iface); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	a := &afpIface{name: iface, blocks: cfg.AFPacketBlocks, log: log}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.detach(), a.close(), a.remove())
		}
	}()
	if cfg.XDPObserve || len(cfg.DropRules) > 0 {
		if err := a.loadObserver(cfg, snapLen, clock, log); err != nil {
			return nil, err
		}
	} else if cfg.Cutoff.Enabled() {
		prog, err := xdp.LoadProgram(xdp.ProgramOptions{
			Interface: iface,
			PinRoot:   cfg.PinRoot,
			NoXDP:     true,
			Config:    xdp.ProgramConfig{SnapLen: uint32(snapLen), Cutoff: cfg.Cutoff},
			Clock:     clock,
			Logger:    log,
		})
		if err != nil {
			return nil, fmt.Errorf("capture on %s: %w", iface, err)
		}
		a.prog = prog
		log.Info("cutoff maps loaded for the af_packet socket filter", "iface", iface, "pins", prog.PinDir())
	}
	a.cutoff = cfg.Cutoff.Enabled()

	n := ringCount(iface, cfg)
	opts := afpacket.DefaultOptions()
	opts.BlockSize = cfg.AFPacketBlockSize
	opts.BlockCount = cfg.AFPacketBlocks
	opts.BlockTimeout = max(time.Millisecond, min(afpMaxBlockTimeout, cfg.FlushInterval/2))
	opts.SnapLen = snapLen
	opts.PollInterval = afpPollInterval
	if a.cutoff {
		// The kernel holds the program while a ring holds it.
		opts.BPFFilterFD = a.prog.SocketFilter().FD()
	}
	a.blockTimeout = opts.BlockTimeout
	if n > 1 {
		opts.Fanout = afpacket.FanoutHash
	}
	if err := a.openRings(iface, n, opts); err != nil {
		return nil, err
	}
	log.Info("af_packet rings open", "iface", iface, "rings", n, "fanout", n > 1, "fanout_group", a.rings[0].FanoutGroup(),
		"block_size", opts.BlockSize, "blocks", opts.BlockCount, "block_timeout", opts.BlockTimeout, "snaplen", snapLen,
		"cutoff", a.cutoff)
	return a, nil
}

// openRings opens n rings. The first starts a fanout group under an id
// the kernel picks, unused in the network namespace; the others join it.
// (A fixed id could clash with another capture's group, on this interface
// or another one.)
func (a *afpIface) openRings(iface string, n int, opts afpacket.Options) error {
	opts.FanoutPick = true
	for i := range n {
		r, err := afpacket.Open(iface, opts)
		if err != nil {
			return fmt.Errorf("capture on %s ring %d: %w", iface, i, err)
		}
		a.rings = append(a.rings, r)
		opts.FanoutPick, opts.FanoutGroup = false, r.FanoutGroup()
	}
	return nil
}

// loadObserver attaches the XDP program in observe mode and opens its
// new_flows ring buffer, which the readers drain after each block:
// AF_PACKET packets carry no flow ids, so the records are only counted,
// and reading them keeps the ring from filling up and counting them as
// lost.
func (a *afpIface) loadObserver(cfg *Config, snapLen int, clock *xdp.Clock, log *slog.Logger) error {
	mode, err := attachMode(cfg.XDPMode)
	if err != nil {
		return err
	}
	prog, err := xdp.LoadProgram(xdp.ProgramOptions{
		Interface: a.name,
		PinRoot:   cfg.PinRoot,
		Mode:      mode,
		Config:    xdp.ProgramConfig{SnapLen: uint32(snapLen), Observe: true, DropRules: cfg.DropRules, Cutoff: cfg.Cutoff},
		Clock:     clock,
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("capture on %s: %w", a.name, err)
	}
	a.prog, a.observe = prog, true
	log.Info("xdp program attached in observe mode beside af_packet", "iface", a.name, "mode", prog.AttachMode(),
		"pins", prog.PinDir(), "drop_rules", len(cfg.DropRules))
	rb, err := ringbuf.NewReader(prog.NewFlows())
	if err != nil {
		return fmt.Errorf("capture on %s: new flows reader: %w", a.name, err)
	}
	a.newFlows = newNewFlowsRing(rb)
	return nil
}

// ringCount is Config.AFPacketRings or, when 0, one ring per RX queue, at
// most half the CPUs (or the configured CPUs), at least one. The kernel's
// share of each packet (receive path, copy into the ring) costs more than
// the reader's (parse, append), so readers get at most half the CPUs.
func ringCount(iface string, cfg *Config) int {
	if cfg.AFPacketRings > 0 {
		return cfg.AFPacketRings
	}
	n, err := xdp.RxQueueCount(iface)
	if err != nil || n < 1 {
		n = 1
	}
	n = min(n, max(1, runtime.NumCPU()/2))
	if len(cfg.CPUs) > 0 {
		n = min(n, len(cfg.CPUs))
	}
	return n
}

func (a *afpIface) sources(_ int, _ *xdp.Clock) []source {
	out := make([]source, len(a.rings))
	for i, r := range a.rings {
		out[i] = newAFPSource(r, a)
	}
	return out
}

func (a *afpIface) flowIDs() *flowIDs { return nil }

// drainNewFlows counts and discards what the observer's new_flows ring
// buffer holds.
func (a *afpIface) drainNewFlows() {
	if a.newFlows == nil {
		return
	}
	n, err := a.newFlows.drain(func([]byte) {})
	a.records.Add(uint64(n))
	if err != nil {
		a.log.Error("new flows ring buffer failed; its records are no longer counted", "iface", a.name, "err", err)
	}
}

func (a *afpIface) program() *xdp.Program {
	if !a.cutoff {
		return nil
	}
	return a.prog
}

func (a *afpIface) stats(s *InterfaceStats) {
	if a.prog == nil {
		return
	}
	ps, err := a.prog.Stats()
	if err == nil {
		s.CutPackets, s.CutBytes = ps.CutPackets, ps.CutBytes
	}
	if !a.observe {
		if err != nil {
			s.ProgramError = err.Error()
		}
		return
	}
	s.Observe = true
	s.Attach = a.prog.AttachMode().String()
	if err != nil {
		s.ProgramError = err.Error()
	} else {
		s.Program = &ps
	}
	s.RingBufRecords = a.records.Load()
}

// detach detaches the XDP program, if there is one. The rings go on
// receiving until they are closed: an AF_PACKET socket in a fanout group
// cannot be unbound.
func (a *afpIface) detach() error {
	var errs []error
	if a.prog != nil && !a.detached {
		errs = append(errs, a.prog.Close())
		a.detached = true
	}
	return errors.Join(errs...)
}

// close closes the rings and the new_flows reader; the ring readers have
// stopped.
func (a *afpIface) close() error {
	var errs []error
	if a.newFlows != nil {
		errs = append(errs, a.newFlows.close())
	}
	for _, r := range a.rings {
		errs = append(errs, r.Close())
	}
	a.rings = nil
	return errors.Join(errs...)
}

// remove deletes the XDP program's pins; call after detach.
func (a *afpIface) remove() error {
	if a.prog == nil {
		return nil
	}
	return a.prog.Remove()
}

// afpSource is one AF_PACKET ring and its reader. The reader stores every
// packet straight from the ring block into the spool writer's buffer (one
// copy, as for AF_XDP) while the kernel fills the ring's other blocks: the
// blocks are the buffer that rides out a slow disk, so there is no batch
// hand-over and no writer goroutine.
type afpSource struct {
	ring         *afpacket.Ring
	blocks       int
	blockTimeout time.Duration
	fn           func(*afpacket.Packet) error // s.packet, bound once: no allocation per block

	observer *afpIface // drains its new_flows ring buffer, if it has one

	// Set by run, used by packet.
	w   *spool.Writer
	q   *queue
	key flow.Key

	// Tallies of the current Next call, added to the queue's counters
	// after it.
	n, bytes, truncated, stored uint64
}

// newAFPSource returns the reader of ring r of interface a.
func newAFPSource(r *afpacket.Ring, a *afpIface) *afpSource {
	s := &afpSource{ring: r, blocks: a.blocks, blockTimeout: a.blockTimeout, observer: a}
	s.fn = s.packet
	return s
}

// packet keys one packet with the Go parser and appends it. It allocates
// nothing.
func (s *afpSource) packet(p *afpacket.Packet) error {
	s.n++
	s.bytes += uint64(p.OrigLen)
	if len(p.Data) < p.OrigLen {
		s.truncated++
	}
	flow.Parse(p.Data, &s.key)
	if err := s.w.Append(p.Timestamp, p.OrigLen, p.Data, &s.key); err != nil {
		s.q.writeFailed(err)
		return nil
	}
	s.stored++
	return nil
}

// publish adds the tallies to the queue's counters and reports whether
// there were packets.
func (s *afpSource) publish(q *queue) bool {
	if s.n == 0 {
		return false
	}
	q.packets.Add(s.n)
	q.bytes.Add(s.bytes)
	q.stored.Add(s.stored)
	q.keysParsed.Add(s.n)
	if s.truncated > 0 {
		q.truncated.Add(s.truncated)
	}
	had := s.n > 0
	s.n, s.bytes, s.truncated, s.stored = 0, 0, 0, 0
	return had
}

// run is the reader: one block at a time, every packet appended to the
// spool writer; flush when the ring is idle and at least every
// FlushInterval; on stop, store what the ring holds and close the writer.
func (s *afpSource) run(q *queue, stop <-chan struct{}) error {
	if q.cpu >= 0 {
		if err := xdp.PinToCPU(q.cpu); err != nil {
			q.log.Warn("af_packet reader runs unpinned", "stream", q.stream, "err", err)
		}
	}
	s.w, s.q = q.w, q
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	errs := errLog{log: q.log, msg: "af_packet reader error, retrying", every: 10 * time.Second}
	lastFlush := time.Now()
	dirty := false
	for {
		if h := testHookRingBlock; h != nil {
			h(q.stream)
		}
		if dirty && !s.ring.Ready() {
			// No block waiting: what was appended goes to disk and
			// to queries now, not after the next block. (Waiting a
			// millisecond for one first, as the reader did, caught
			// none at these block sizes and cost a wake-up a block.)
			q.flush()
			lastFlush, dirty = time.Now(), false
		}
		err := s.ring.Next(ctx, s.fn)
		if s.publish(q) {
			dirty = true
			s.observer.drainNewFlows()
		}
		switch {
		case err == nil:
		case ctx.Err() != nil || errors.Is(err, afpacket.ErrClosed):
			s.drain(q)
			q.flush()
			return q.w.Close()
		default:
			// The interface went down (ENETDOWN) or another socket
			// error: store what we have, wait, and try again.
			msg := err.Error()
			q.receiveErr.Store(&msg)
			errs.report(q.stream, err)
			q.flush()
			lastFlush, dirty = time.Now(), false
			select {
			case <-stop:
			case <-time.After(q.pollTimeout):
			}
			continue
		}
		if dirty && time.Since(lastFlush) >= q.flushInterval {
			q.flush()
			lastFlush, dirty = time.Now(), false
		}
	}
}

// drain stores what the ring holds at stop: the blocks ready now, and the
// one being filled, which the kernel hands over within a block timeout.
// Blocks filled after that hold packets that came after the stop: under
// steady traffic, reading on until the ring was empty took up to a ring's
// worth of block timeouts (3.2 s with the defaults). It reads at most one
// ring's worth of blocks, so that it ends under endless traffic too.
func (s *afpSource) drain(q *queue) {
	waited := false
	for range s.blocks {
		if !s.ring.Ready() {
			if waited {
				return
			}
			waited = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.blockTimeout+afpPollInterval)
		err := s.ring.Next(ctx, s.fn)
		cancel()
		s.publish(q)
		if err != nil {
			return
		}
	}
}

func (s *afpSource) stats(q *QueueStats) {
	st, err := s.ring.Stats()
	if err != nil {
		q.RingError = err.Error()
	}
	q.Ring = &st
}

func (s *afpSource) close() error { return nil } // the afpIface closes its rings
