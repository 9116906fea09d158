package ipfix

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// Message sizes: a UDP message must fit in one datagram of a 1500-byte
// MTU (IPv6 and UDP headers take 48 bytes; tunnels some more), a TCP one
// only in IPFIX's 16-bit length, and larger ones cost fewer writes.
const (
	udpMessageBytes = 1400
	tcpMessageBytes = 16 << 10
)

// queueRecords is how many records wait for a collector at most; past it
// new records are dropped and counted (Counters.RecordsDropped). 65,536
// records (about 6 MiB) hold a burst of flows all idle in the same
// second, or a few seconds of a TCP collector reconnecting.
const queueRecords = 1 << 16

// Reconnection backoff of a TCP collector, doubling from min to max.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// drainTimeout bounds how long a sender keeps writing its queue once the
// exporter stops.
const drainTimeout = 3 * time.Second

// Counters are one collector's export counters.
type Counters struct {
	Collector      string // as configured: udp://HOST:PORT
	Records        uint64 // data records sent
	Bytes          uint64 // message bytes sent
	Templates      uint64 // template sets sent
	SendErrors     uint64 // failed writes and connections
	RecordsDropped uint64 // records never sent: queue full, or lost with a failed write
}

// sender sends the records queued for one collector. One goroutine runs
// it; offer is called by the exporter's.
type sender struct {
	name, network, addr string
	queue               chan Record
	enc                 *Encoder
	refresh             time.Duration
	log                 *slog.Logger

	seq uint32 // data records sent (RFC 7011 sequence number)

	records, bytes, templates, sendErrors, dropped atomic.Uint64
}

func newSender(name string, cfg *Config, seed uint16, url string, log *slog.Logger) (*sender, error) {
	network, addr, err := ParseCollector(name)
	if err != nil {
		return nil, err
	}
	size := udpMessageBytes
	if network == "tcp" {
		size = tcpMessageBytes
	}
	return &sender{name: name, network: network, addr: addr, queue: make(chan Record, queueRecords),
		enc: NewEncoder(uint32(cfg.SensorID), uint32(cfg.EnterpriseNumber), seed, url, size), refresh: cfg.TemplateRefresh,
		log: log.With("collector", name)}, nil
}

// offer queues r without ever waiting: a full queue drops it.
func (s *sender) offer(r *Record) {
	select {
	case s.queue <- *r:
	default:
		s.dropped.Add(1)
	}
}

func (s *sender) counters() Counters {
	return Counters{Collector: s.name, Records: s.records.Load(), Bytes: s.bytes.Load(), Templates: s.templates.Load(),
		SendErrors: s.sendErrors.Load(), RecordsDropped: s.dropped.Load()}
}

// run sends until the queue is closed and empty, or until ctx is done
// (which only the exporter's stop deadline cancels: closing the queue is
// the normal end). now is the clock.
func (s *sender) run(ctx context.Context, now func() time.Time) {
	var conn net.Conn
	// closed is closed when a TCP collector closes the connection: a
	// collector never sends, so a read that returns means the end, and
	// the sender reconnects at once instead of at its next failed write.
	var closed chan struct{}
	hangUp := func() {
		if conn != nil {
			_ = conn.Close()
		}
		conn, closed = nil, nil
	}
	defer hangUp()
	var lastTemplates time.Time // zero: templates are due
	backoff := backoffMin
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// pending was taken from the queue and not sent yet (hasPending). A
	// value, not a pointer to the received record, which would make
	// every record received escape to the heap.
	var pending Record
	hasPending := false
	errLogged := time.Time{}
	fail := func(what string, err error) {
		s.sendErrors.Add(1)
		if t := now(); t.Sub(errLogged) >= 10*time.Second {
			s.log.Warn("ipfix export: "+what, "err", err, "send_errors", s.sendErrors.Load())
			errLogged = t
		}
	}
	for {
		if conn == nil {
			c, err := s.dial(ctx)
			if err != nil {
				if ctx.Err() != nil {
					s.dropQueue(hasPending)
					return
				}
				fail("connect", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, backoffMax)
				continue
			}
			conn, lastTemplates, backoff = c, time.Time{}, backoffMin
			if s.network == "tcp" {
				s.log.Info("ipfix collector connected")
				closed = make(chan struct{})
				go watchClose(c, closed)
			}
		}
		due := lastTemplates.IsZero() || (s.network == "udp" && now().Sub(lastTemplates) >= s.refresh)
		if !hasPending && !due {
			select {
			case r, ok := <-s.queue:
				if !ok {
					return
				}
				pending, hasPending = r, true
			case <-tick.C:
				continue
			case <-closed:
				s.log.Info("ipfix collector closed the connection; reconnecting")
				hangUp()
				continue
			case <-ctx.Done():
				s.dropQueue(false)
				return
			}
		}
		t := now()
		s.enc.Begin(uint32(t.Unix()), s.seq)
		if due {
			s.enc.Templates()
		}
		if hasPending {
			_ = s.enc.Add(&pending) // the first record of a message always fits
			hasPending = false
		}
	fill:
		for {
			select {
			case r, ok := <-s.queue:
				if !ok {
					break fill
				}
				if err := s.enc.Add(&r); errors.Is(err, ErrMessageFull) {
					pending, hasPending = r, true
					break fill
				}
			default:
				break fill
			}
		}
		n := s.enc.Records()
		msg := s.enc.Finish()
		if s.network == "tcp" {
			_ = conn.SetWriteDeadline(t.Add(5 * time.Second))
		}
		if _, err := conn.Write(msg); err != nil {
			s.dropped.Add(uint64(n))
			fail("send", err)
			if s.network == "tcp" {
				// The stream may hold part of the message: start a
				// new one, with templates.
				hangUp()
			}
			continue
		}
		s.seq += uint32(n)
		s.records.Add(uint64(n))
		s.bytes.Add(uint64(len(msg)))
		if due {
			s.templates.Add(1)
			lastTemplates = t
		}
	}
}

func (s *sender) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	return d.DialContext(ctx, s.network, s.addr)
}

// dropQueue counts what is left as dropped, when the sender gives up at
// the stop deadline.
func (s *sender) dropQueue(pending bool) {
	n := uint64(len(s.queue))
	if pending {
		n++
	}
	s.dropped.Add(n)
}

// watchClose closes closed when the collector ends the connection (or it
// is closed here).
func watchClose(c net.Conn, closed chan<- struct{}) {
	defer close(closed)
	var b [512]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return
		}
	}
}
