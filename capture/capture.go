//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/stenod/stenod/spool"
	"github.com/stenod/stenod/xdp"
)

// ErrMethodUnavailable: the capture method is not built into this version.
// Kept for callers that test for it; Start no longer returns it.
var ErrMethodUnavailable = errors.New("capture method not available")

// ErrClosed: a method was called after Close.
var ErrClosed = errors.New("capture closed")

// attachment is the capture machinery of one interface for one method: for
// XDP the program, its pins and the AF_XDP sockets (xdpIface); for AF_PACKET
// its fanout group of rings and, optionally, the XDP program in observe
// mode (afpIface).
type attachment interface {
	// sources returns one source per stream, in queue order.
	sources(snapLen int, clock *xdp.Clock) []source
	// flowIDs returns the table of flow ids the sources' packets carry,
	// or nil when they carry none.
	flowIDs() *flowIDs
	// program returns the program whose maps hold the cutoff's
	// connections, or nil when the cutoff does not run.
	program() *xdp.Program
	stats(s *InterfaceStats)
	// detach stops the kernel from delivering packets; what the sources
	// hold already can still be read.
	detach() error
	// close releases the sources; the receive loops have stopped.
	close() error
	// remove deletes what outlives the process (pins); after detach.
	remove() error
}

// Capture is a running capture. Stats and Collectors may be used from any
// goroutine; Close stops it.
type Capture struct {
	cfg    Config
	method string
	log    *slog.Logger
	clock  *xdp.Clock
	ifaces []*ifaceCapture

	stop    chan struct{} // closed by Close: receive loops drain and end
	recvWG  sync.WaitGroup
	writeWG sync.WaitGroup
	started bool

	mu     sync.Mutex // guards closed against Stats reading closed sockets
	closed bool
}

type ifaceCapture struct {
	name   string
	method string // MethodXDP or MethodAFPacket
	reason string // why method
	att    attachment
	queues []*queue
	cut    *cutReporter // nil without the cutoff
}

// Start attaches to every configured interface and starts capturing into
// sp: with AF_XDP, per RX queue a receive loop pinned to a CPU and a writer
// appending to the spool stream "<iface>-q<queue>"; with AF_PACKET, per ring
// one reader pinned to a CPU appending to "<iface>-q<ring>". MethodAuto
// chooses per interface (chooseMethod) and logs the choice and why. ctx
// only bounds the start itself; the capture runs until Close. On error
// nothing is left running or pinned.
//
// Errors: a Config.Validate error (ErrInvalidConfig), an interface that
// does not exist (ErrNoInterface, checked before any capture method is
// tried), and the xdp, afpacket and spool errors of setting up, wrapped
// with the interface.
func Start(ctx context.Context, cfg Config, sp *spool.Spool, log *slog.Logger) (_ *Capture, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := CheckInterfaces(cfg.Interfaces); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	if cfg.PinRoot == "" {
		cfg.PinRoot = xdp.DefaultPinRoot
	}
	snapLen := sp.Config().SnapLen
	if cfg.SnapLen != 0 && cfg.SnapLen < snapLen {
		snapLen = cfg.SnapLen
	}
	clock, err := xdp.NewClock()
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	cpus := cfg.CPUs
	if len(cpus) == 0 {
		for i := range runtime.NumCPU() {
			cpus = append(cpus, i)
		}
	}

	c := &Capture{cfg: cfg, log: log, clock: clock, stop: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	n := 0
	for _, name := range cfg.Interfaces {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("capture: start: %w", err)
		}
		method, reason := chooseMethod(name, &cfg)
		log.Info("capture method", "iface", name, "method", method, "reason", reason, "driver", driverName(name))
		var x attachment
		var err error
		if method == MethodAFPacket {
			x, err = openAFPacket(name, &cfg, snapLen, clock, log)
		} else {
			x, err = openXDP(name, &cfg, snapLen, clock, log)
		}
		if err != nil {
			return nil, err
		}
		ic := &ifaceCapture{name: name, method: method, reason: reason, att: x}
		c.ifaces = append(c.ifaces, ic)
		if p := x.program(); p != nil {
			if ic.cut, err = startCutReporter(name, p, sp.LiveIndex, log); err != nil {
				return nil, err
			}
		}
		for i, src := range x.sources(snapLen, clock) {
			stream := fmt.Sprintf("%s-q%d", name, i)
			w, err := sp.NewWriter(stream, name)
			if err != nil {
				return nil, fmt.Errorf("capture on %s queue %d: %w", name, i, err)
			}
			cpu := cpus[n%len(cpus)]
			if method == MethodAFPacket && len(cfg.CPUs) == 0 {
				cpu = cpus[len(cpus)-1-n%len(cpus)]
			}
			ic.queues = append(ic.queues, newQueue(&queue{
				iface: name, index: i, stream: stream, cpu: cpu,
				src: src, ids: x.flowIDs(), w: w, log: log,
				flushInterval: cfg.FlushInterval, pollTimeout: pollTimeout,
				coalesce: rxCoalesce, ringSlots: pow2(cfg.UMEMFrames),
			}))
			n++
		}
	}
	c.method = c.ifaces[0].method
	for _, ic := range c.ifaces {
		if ic.method != c.method {
			c.method = MethodAuto
		}
	}

	// Nothing runs until everything is set up: packets that arrive
	// meanwhile wait in the UMEM or the ring.
	c.started = true
	for _, ic := range c.ifaces {
		for _, q := range ic.queues {
			if ss, ok := q.src.(storingSource); ok {
				c.writeWG.Add(1)
				go func() {
					defer c.writeWG.Done()
					q.closeErr = ss.run(q, c.stop)
				}()
				log.Info("capturing", "iface", q.iface, "ring", q.index, "stream", q.stream, "cpu", q.cpu)
				continue
			}
			c.recvWG.Add(1)
			go func() {
				defer c.recvWG.Done()
				q.receive(c.stop)
			}()
			c.writeWG.Add(1)
			go func() {
				defer c.writeWG.Done()
				q.closeErr = q.write()
			}()
			log.Info("capturing", "iface", q.iface, "queue", q.index, "stream", q.stream, "cpu", q.cpu)
		}
	}
	c.writeWG.Add(1)
	go func() {
		defer c.writeWG.Done()
		c.refreshClock()
	}()
	return c, nil
}

// pollTimeout bounds how long an idle receive loop sleeps in poll(2) before
// it looks at its stop channel.
const pollTimeout = 100 * time.Millisecond

// rxCoalesce is how long an AF_XDP receive loop that has taken packets
// lets more gather in the ring before it looks again, as TPACKET_V3 blocks
// do for AF_PACKET; a batch goes to the writer once it is this old (or
// full). Taking each packet as it arrived cost a wakeup of the loop (poll)
// and of the writer per handful of packets, several times the CPU per
// packet (docs/benchmarks.md, "Receive loop coalescing"). 25 ms is far
// below the flush interval's promise of a second; the sleep is cut short
// (queue.gatherTime) so that at any rate at most a quarter of the RX ring
// fills while the loop sleeps.
const rxCoalesce = 25 * time.Millisecond

// clockRefresh is how often the CLOCK_TAI offset is measured again; it only
// changes when the TAI offset is set or at a leap second.
const clockRefresh = 5 * time.Second

func (c *Capture) refreshClock() {
	t := time.NewTicker(clockRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.clock.Refresh(); err != nil {
				c.log.Warn("refresh TAI clock offset", "err", err)
			}
		}
	}
}

// Close stops the capture in the order that loses nothing already received:
// detach the XDP programs (no new packets), let the receive loops drain
// their rings, let the writers store, flush and Close their spool writers
// (which seals the indexes), then close the sockets and remove the pins.
// An AF_PACKET ring cannot be detached without closing it: its reader
// stores what the ring holds when Close is called (at most one ring's
// worth of blocks) and stops; what arrives after that is not captured.
// It joins every error. Call spool.Spool.Close afterwards to wait for the
// seals. Closing twice is a no-op.
func (c *Capture) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	// The reporters' last poll needs the programs: it hands on what was
	// cut until now.
	for _, ic := range c.ifaces {
		if ic.cut != nil {
			if err := ic.cut.stop(); err != nil {
				errs = append(errs, fmt.Errorf("capture on %s: stop cut reporter: %w", ic.name, err))
			}
		}
	}
	for _, ic := range c.ifaces {
		if err := ic.att.detach(); err != nil {
			errs = append(errs, fmt.Errorf("capture on %s: detach: %w", ic.name, err))
		}
	}
	close(c.stop)
	if c.started {
		c.recvWG.Wait()
		c.writeWG.Wait()
	}
	for _, ic := range c.ifaces {
		for _, q := range ic.queues {
			if !c.started {
				q.closeErr = q.w.Close()
			}
			if q.closeErr != nil {
				errs = append(errs, fmt.Errorf("capture on %s queue %d: close spool writer: %w", ic.name, q.index, q.closeErr))
			}
		}
		if err := ic.att.close(); err != nil {
			errs = append(errs, fmt.Errorf("capture on %s: %w", ic.name, err))
		}
		if err := ic.att.remove(); err != nil {
			errs = append(errs, fmt.Errorf("capture on %s: remove pins: %w", ic.name, err))
		}
	}
	return errors.Join(errs...)
}
