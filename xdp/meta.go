//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
)

// MetaSize is the size of struct packet_meta, the metadata the XDP program
// writes immediately before every packet it redirects (bpf_xdp_adjust_meta).
// In an AF_XDP frame it occupies umem[desc.Addr-MetaSize : desc.Addr]
// (UMEM.Meta with SocketOptions.MetaLen = MetaSize).
const MetaSize = 16

// PacketMeta is struct packet_meta. Layout, little endian:
//
//	offset 0  u64 flow_id  the packet's flow (NewFlowRecord.FlowID), 0 if the
//	                       flow could not be entered in the flows map
//	offset 8  u64 ts_ns    CLOCK_TAI nanoseconds when the XDP program ran
//	offset 16              the packet's first byte
type PacketMeta struct {
	FlowID uint64
	TAINS  uint64 // convert with Clock.Time
}

// FlowIDCPUBits is FLOW_ID_CPU_BITS of bpf/stenod.h: a flow id is the
// creating CPU's sequence number shifted left by it, ORed with the CPU
// number (docs/bpf.md).
const FlowIDCPUBits = 12

// ErrShortRecord: fewer bytes than the record needs.
var ErrShortRecord = errors.New("record too short")

// ParseMeta decodes the metadata in the last MetaSize bytes of b: pass the
// bytes that end where the packet begins. It does not allocate.
func ParseMeta(b []byte) (PacketMeta, error) {
	if len(b) < MetaSize {
		return PacketMeta{}, fmt.Errorf("packet metadata: %d bytes, want %d: %w", len(b), MetaSize, ErrShortRecord)
	}
	b = b[len(b)-MetaSize:]
	return PacketMeta{
		FlowID: binary.LittleEndian.Uint64(b[0:8]),
		TAINS:  binary.LittleEndian.Uint64(b[8:16]),
	}, nil
}

// NewFlowRecordSize is the size of struct new_flow, one record of the
// new_flows ring buffer.
const NewFlowRecordSize = 16 + flow.KeySize

// NewFlowRecord is struct new_flow, written once for every flow the XDP
// program enters in its flows map. Layout, little endian:
//
//	offset 0   u64 flow_id        the id its packets carry in PacketMeta
//	offset 8   u64 first_seen_ns  CLOCK_TAI nanoseconds of its first packet
//	offset 16  struct flow_key    48 bytes, flow.Key's layout
type NewFlowRecord struct {
	FlowID      uint64
	FirstSeenNS uint64 // CLOCK_TAI; convert with Clock.Time
	Key         flow.Key
}

// UnmarshalBinary decodes a ring buffer record (ringbuf.Record.RawSample)
// without allocating.
func (r *NewFlowRecord) UnmarshalBinary(b []byte) error {
	if len(b) < NewFlowRecordSize {
		return fmt.Errorf("new flow record: %d bytes, want %d: %w", len(b), NewFlowRecordSize, ErrShortRecord)
	}
	r.FlowID = binary.LittleEndian.Uint64(b[0:8])
	r.FirstSeenNS = binary.LittleEndian.Uint64(b[8:16])
	r.Key.Get(b[16:NewFlowRecordSize])
	return nil
}

// Clock converts the XDP program's timestamps, nanoseconds of CLOCK_TAI
// (bpf_ktime_get_tai_ns), to wall-clock time.
//
// CLOCK_TAI is CLOCK_REALTIME plus the kernel's TAI offset (37 s in 2025 when
// chrony or ntpd set it, often 0 when nothing did), and both follow the same
// clock adjustments, so one offset converts every timestamp. The offset only
// changes when the TAI offset is set or a leap second passes: call Refresh
// periodically (once a minute is plenty). Clock is safe for concurrent use.
type Clock struct {
	offset atomic.Int64 // CLOCK_TAI - CLOCK_REALTIME, ns
}

// NewClock returns a Clock with the offset measured now.
func NewClock() (*Clock, error) {
	c := new(Clock)
	if err := c.Refresh(); err != nil {
		return nil, err
	}
	return c, nil
}

// Refresh measures the offset between CLOCK_TAI and CLOCK_REALTIME again.
func (c *Clock) Refresh() error {
	off, err := measureTAIOffset()
	if err != nil {
		return err
	}
	c.offset.Store(off)
	return nil
}

// Offset returns CLOCK_TAI minus CLOCK_REALTIME as last measured.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Time converts CLOCK_TAI nanoseconds to wall-clock time.
func (c *Clock) Time(taiNS uint64) time.Time {
	return time.Unix(0, int64(taiNS)-c.offset.Load())
}

// measureTAIOffset reads CLOCK_REALTIME, CLOCK_TAI, CLOCK_REALTIME a few
// times and keeps the tightest bracket. The true offset is a whole number of
// seconds (the kernel keeps it in seconds); a measurement within a
// millisecond of one is rounded to it, which removes the read jitter.
func measureTAIOffset() (int64, error) {
	var best, bestSpan int64 = 0, -1
	for range 5 {
		var r1, tai, r2 unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r1); err != nil {
			return 0, fmt.Errorf("read CLOCK_REALTIME: %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_TAI, &tai); err != nil {
			return 0, fmt.Errorf("read CLOCK_TAI: %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r2); err != nil {
			return 0, fmt.Errorf("read CLOCK_REALTIME: %w", err)
		}
		span := r2.Nano() - r1.Nano()
		if span < 0 {
			continue // the wall clock stepped back between the reads
		}
		if bestSpan < 0 || span < bestSpan {
			best, bestSpan = tai.Nano()-(r1.Nano()+span/2), span
		}
	}
	if bestSpan < 0 {
		return 0, errors.New("measure TAI offset: CLOCK_REALTIME kept stepping back")
	}
	const sec = int64(time.Second)
	rounded := (best + sec/2) / sec * sec
	if best < 0 {
		rounded = (best - sec/2) / sec * sec
	}
	if d := best - rounded; d > -int64(time.Millisecond) && d < int64(time.Millisecond) {
		best = rounded
	}
	return best, nil
}
