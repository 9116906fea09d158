//go:build linux

package capture

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/index"
	"github.com/stenod/stenod/xdp"
)

// cutPollInterval is how often the cut reporter reads the cut counts of
// the connections it follows.
const cutPollInterval = time.Second

// liveIndexFunc returns the live index the cut counts of an interface go
// to, nil between files: (*spool.Spool).LiveIndex.
type liveIndexFunc func(iface string) *index.Builder

// cutReporter follows the connections the kernel's cutoff cut on one
// interface: it reads the cut_conns ring buffer (one record per connection
// at its first cut), and every cutPollInterval looks up each connection
// and hands the growth of its cut counts, per direction, to the spool. A
// connection gone from the kernel's table (LRU eviction) is dropped. It
// runs per connection per second, never per packet.
type cutReporter struct {
	iface string
	prog  *xdp.Program
	live  liveIndexFunc
	log   *slog.Logger
	rd    *ringbuf.Reader
	done  chan struct{}

	// Owned by run.
	conns map[flow.Key]*cutSeen
	lost  uint64 // ProgramStats.CutRingBufFull at the last poll
	errs  errLog
}

// cutSeen is what was handed on of one connection's cut counts, per
// direction.
type cutSeen struct{ packets, bytes [2]uint64 }

func startCutReporter(iface string, prog *xdp.Program, live liveIndexFunc, log *slog.Logger) (*cutReporter, error) {
	rd, err := ringbuf.NewReader(prog.CutConns())
	if err != nil {
		return nil, fmt.Errorf("capture on %s: cut connections reader: %w", iface, err)
	}
	r := &cutReporter{
		iface: iface, prog: prog, live: live, log: log, rd: rd, done: make(chan struct{}),
		conns: make(map[flow.Key]*cutSeen),
		errs:  errLog{log: log, msg: "cut reporter: read a connection", every: 10 * time.Second},
	}
	go r.run()
	return r, nil
}

// stop ends the reporter after a last poll: call it before the program is
// closed, so that what was cut until then reaches the spool.
func (r *cutReporter) stop() error {
	// The program wakes no reader (bpf/stenod.c): Flush makes run read
	// what the ring holds, poll once more and return.
	err := r.rd.Flush()
	<-r.done
	return errors.Join(err, r.rd.Close())
}

func (r *cutReporter) run() {
	defer close(r.done)
	var rec ringbuf.Record
	var cr xdp.CutConnRecord
	next := time.Now().Add(cutPollInterval)
	for {
		r.rd.SetDeadline(next)
		err := r.rd.ReadInto(&rec)
		switch {
		case err == nil:
			if err := cr.UnmarshalBinary(rec.RawSample); err != nil {
				r.errs.report(r.iface, err)
			} else if r.conns[cr.Key] == nil {
				r.conns[cr.Key] = new(cutSeen)
			}
			if time.Now().Before(next) {
				continue
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
			r.poll()
			return
		default:
			r.log.Error("cut reporter stopped", "iface", r.iface, "err", err)
			r.poll()
			return
		}
		r.poll()
		next = time.Now().Add(cutPollInterval)
	}
}

// poll hands on the growth of every followed connection's cut counts.
func (r *cutReporter) poll() {
	if s, err := r.prog.Stats(); err != nil {
		r.errs.report(r.iface, err)
	} else if s.CutRingBufFull > r.lost {
		// Records were lost: find their connections in the table.
		r.lost = s.CutRingBufFull
		r.rescan()
	}
	// Between files (none being written) the counts wait for the next
	// poll.
	b := r.live(r.iface)
	if b == nil {
		return
	}
	for k, seen := range r.conns {
		c, ok, err := r.prog.LookupConn(&k)
		if err != nil {
			r.errs.report(r.iface, err)
			continue
		}
		if !ok {
			delete(r.conns, k)
			continue
		}
		for d := range 2 {
			if c.CutPackets[d] < seen.packets[d] {
				// Evicted and entered again since the last poll.
				seen.packets[d], seen.bytes[d] = 0, 0
			}
			p, bytes := c.CutPackets[d]-seen.packets[d], c.CutBytes[d]-seen.bytes[d]
			if p == 0 {
				continue
			}
			dk := c.Key
			if d == 1 {
				dk = dk.Reversed()
			}
			b.AddCut(&dk, p, bytes, c.LastCut)
			seen.packets[d], seen.bytes[d] = c.CutPackets[d], c.CutBytes[d]
		}
	}
}

// rescan adds the table's cut connections the reporter does not follow.
func (r *cutReporter) rescan() {
	var k flow.Key
	var v xdp.ConnValue
	it := r.prog.Conns().Iterate()
	for it.Next(&k, &v) {
		if v.CutPackets[0]+v.CutPackets[1] > 0 && r.conns[k] == nil {
			r.conns[k] = new(cutSeen)
		}
	}
	if err := it.Err(); err != nil {
		r.errs.report(r.iface, fmt.Errorf("walk connections: %w", err))
	}
}

// InterfaceCutoff is the cutoff's count of what it did not store on one
// interface.
type InterfaceCutoff struct {
	Name string `json:"name"`
	xdp.CutoffStats
	// Error says why the counts could not be read.
	Error string `json:"error,omitempty"`
}

// CutoffStats returns the cut counts of every interface with the cutoff
// on, in configuration order.
func (c *Capture) CutoffStats() []InterfaceCutoff {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []InterfaceCutoff
	if c.closed || !c.cfg.Cutoff.Enabled() {
		return nil
	}
	for _, ic := range c.ifaces {
		p := ic.att.program()
		if p == nil {
			continue
		}
		ifc := InterfaceCutoff{Name: ic.name}
		s, err := p.CutoffStats()
		if err != nil {
			ifc.Error = err.Error()
		} else {
			ifc.CutoffStats = s
		}
		out = append(out, ifc)
	}
	return out
}

// SuspendCutoff suspends the cutoff of every connection, on every
// interface, whose canonical key (xdp.ConnKey) match accepts: their
// packets are stored from then on. It returns how many connections it
// suspended. Connections that start later are not affected.
func (c *Capture) SuspendCutoff(match func(k *flow.Key) bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	n := 0
	var errs []error
	for _, ic := range c.ifaces {
		p := ic.att.program()
		if p == nil || !c.cfg.Cutoff.Enabled() {
			continue
		}
		m, err := p.SuspendConns(match)
		n += m
		if err != nil {
			errs = append(errs, fmt.Errorf("capture on %s: suspend cutoff: %w", ic.name, err))
		}
	}
	return n, errors.Join(errs...)
}
