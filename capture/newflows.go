//go:build linux

package capture

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// newFlowsRing is the reading end of an XDP program's new_flows ring
// buffer. The program submits its records without waking a reader
// (bpf/stenod.c): a reader woken for each record cost a thread switch per
// new flow, and, with the capture confined to one CPU, a hand-over of the
// CPU's only Go processor each time (a burst of 65,536 new flows kept the
// process busy for a second; docs/benchmarks.md, "New flows without
// wake-ups"). Instead the capture loops drain the ring as they go: the
// AF_XDP writers before they key a batch, the AF_PACKET readers after each
// ring block. An empty ring costs two atomic loads.
type newFlowsRing struct {
	mu  sync.Mutex
	rd  *ringbuf.Reader // nil once closed
	rec ringbuf.Record
}

func newNewFlowsRing(rd *ringbuf.Reader) *newFlowsRing {
	// A deadline in the past: ReadInto returns what the ring holds and
	// then os.ErrDeadlineExceeded, never waiting.
	rd.SetDeadline(time.Unix(1, 0))
	return &newFlowsRing{rd: rd}
}

// drain calls each with every record the ring holds, in order, and returns
// how many there were. The record's bytes are valid during the call only.
// A closed ring has none; a ring that fails to read is closed, and the
// error returned once.
func (r *newFlowsRing) drain(each func(sample []byte)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rd == nil || r.rd.AvailableBytes() == 0 {
		return 0, nil
	}
	n := 0
	for {
		err := r.rd.ReadInto(&r.rec)
		switch {
		case err == nil:
			each(r.rec.RawSample)
			n++
		case errors.Is(err, os.ErrDeadlineExceeded):
			return n, nil
		default:
			err = errors.Join(fmt.Errorf("read new_flows ring buffer: %w", err), r.rd.Close())
			r.rd = nil
			return n, err
		}
	}
}

// close closes the reader; later drains find nothing.
func (r *newFlowsRing) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rd == nil {
		return nil
	}
	err := r.rd.Close()
	r.rd = nil
	return err
}
