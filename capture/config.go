//go:build linux

package capture

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/stenod/stenod/internal/fielderr"
	"github.com/stenod/stenod/xdp"
)

// Capture methods (Config.Method).
const (
	MethodAuto     = "auto"
	MethodXDP      = "xdp"
	MethodAFPacket = "afpacket"
)

// XDP attach modes (Config.XDPMode).
const (
	XDPModeAuto    = "auto"
	XDPModeNative  = "native"
	XDPModeGeneric = "generic"
)

// Config says what to capture and how.
type Config struct {
	// Interfaces to capture from; each packet is stored with the name of
	// the interface it arrived on.
	Interfaces []string
	// Method is MethodAuto, MethodXDP or MethodAFPacket. Auto chooses per
	// interface: AF_XDP where the driver binds AF_XDP sockets in zero-copy
	// mode, AF_PACKET elsewhere (veth, most virtual NICs, generic XDP),
	// and logs the choice and why (docs/capture.md).
	Method string
	// XDPMode is how the XDP program is attached: XDPModeAuto (native,
	// falling back to generic with a logged reason), XDPModeNative or
	// XDPModeGeneric.
	XDPMode string
	// CPUs the receive loops are pinned to, one per RX queue or AF_PACKET
	// ring, round robin over all interfaces' queues. Empty: round robin
	// over every CPU, for AF_PACKET from the last CPU down (the kernel's
	// receive work tends to land on the first ones).
	CPUs []int
	// UMEMFrames is the number of 4 KiB frames per RX queue. The UMEM is
	// what rides out a stalled disk: packets wait there until the writer
	// catches up, and only when it is full does the kernel drop (counted).
	UMEMFrames int
	// FlushInterval bounds how long a stored packet may wait before it
	// becomes visible to queries while packets keep coming; an idle queue
	// flushes at once. At most one second (the freshness promise).
	FlushInterval time.Duration
	// SnapLen is how many bytes of each packet are kept. 0 takes the
	// spool's snap length; a larger value is cut to the spool's.
	SnapLen int
	// Observe loads the XDP program in observe mode: flows and counters
	// only, every packet passed on to the network stack, nothing stored.
	Observe bool
	// AFPacketRings is the number of AF_PACKET rings per interface, one
	// reader each, in one PACKET_FANOUT_HASH group. 0 chooses: one per RX
	// queue, at most half the CPUs, at least one.
	AFPacketRings int
	// AFPacketBlockSize and AFPacketBlocks shape each AF_PACKET ring
	// (TPACKET_V3): blocks of AFPacketBlockSize bytes, a multiple of the
	// page size and at least 64 KiB. The blocks are what rides out a
	// stalled disk, as the UMEM does for AF_XDP: the reader stores a block
	// before it takes the next, and only when every block is full does
	// the kernel drop (counted, QueueStats.Ring). The ring is locked
	// kernel memory: AFPacketBlockSize*AFPacketBlocks per ring.
	AFPacketBlockSize int
	AFPacketBlocks    int
	// XDPObserve, with AF_PACKET capture, also attaches the XDP program in
	// observe mode: its flow table, new-flow records and counters, as
	// bpftool and stenod status show them, at a cost per packet
	// (docs/capture.md). Drop rules need the program and load it even
	// without XDPObserve. No effect on AF_XDP capture.
	XDPObserve bool
	// PinRoot is the bpffs directory for the pins (xdp.DefaultPinRoot
	// when empty); each interface gets PinRoot/<interface>/.
	PinRoot string
	// DropRules drop matching frames in the XDP program before they are
	// accounted or captured. At most xdp.MaxDropRules.
	DropRules []xdp.DropRule
	// Cutoff limits what is stored of each connection, decided in the
	// kernel (docs/operations.md, Per-connection cutoff; docs/bpf.md,
	// "Cutoff"): by the XDP program on the AF_XDP
	// path, by the program's socket filter on the AF_PACKET rings (which
	// loads and pins the program's maps even without XDPObserve). What is
	// cut is counted per flow and handed to the spool
	// (index.Builder.AddCut of (*spool.Spool).LiveIndex) about once a second. No effect in Observe
	// mode. The zero value cuts nothing.
	Cutoff xdp.CutoffConfig
}

// DefaultConfig returns settings that work as they are once Interfaces is
// set.
func DefaultConfig() Config {
	return Config{
		Method:        MethodAuto,
		XDPMode:       XDPModeAuto,
		UMEMFrames:    65536,
		FlushInterval: 100 * time.Millisecond,
		PinRoot:       xdp.DefaultPinRoot,

		AFPacketBlockSize: 4 << 20,
		AFPacketBlocks:    64,
	}
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid capture configuration")

// Validate reports the first impossible setting, wrapping ErrInvalidConfig;
// fielderr.Field(err) names the Config field.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fielderr.Errorf(field, "capture: %s: %w", fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	if len(c.Interfaces) == 0 {
		return bad("Interfaces", "no interface")
	}
	for i, name := range c.Interfaces {
		if name == "" || len(name) >= 16 {
			return bad("Interfaces", "interface name %q: not 1 to 15 characters", name)
		}
		if slices.Contains(c.Interfaces[:i], name) {
			return bad("Interfaces", "interface %s given twice", name)
		}
	}
	switch c.Method {
	case MethodAuto, MethodXDP, MethodAFPacket:
	default:
		return bad("Method", "method %q: want auto, xdp or afpacket", c.Method)
	}
	if _, err := attachMode(c.XDPMode); err != nil {
		return bad("XDPMode", "%v", err)
	}
	for _, cpu := range c.CPUs {
		if cpu < 0 {
			return bad("CPUs", "cpu %d: negative", cpu)
		}
	}
	switch {
	case c.UMEMFrames < minUMEMFrames || c.UMEMFrames > 1<<22:
		return bad("UMEMFrames", "umem frames %d outside [%d, %d]", c.UMEMFrames, minUMEMFrames, 1<<22)
	case c.FlushInterval <= 0 || c.FlushInterval > time.Second:
		return bad("FlushInterval", "flush interval %v outside (0, 1s]", c.FlushInterval)
	case c.SnapLen != 0 && (c.SnapLen < 64 || c.SnapLen > 262144):
		return bad("SnapLen", "snap length %d outside [64, 262144]", c.SnapLen)
	case len(c.DropRules) > xdp.MaxDropRules:
		return bad("DropRules", "%d drop rules, at most %d", len(c.DropRules), xdp.MaxDropRules)
	case c.Cutoff.Validate() != nil:
		return bad("Cutoff", "%v", c.Cutoff.Validate())
	case c.AFPacketRings < 0 || c.AFPacketRings > maxAFPacketRings:
		return bad("AFPacketRings", "af_packet rings %d outside [0, %d]", c.AFPacketRings, maxAFPacketRings)
	case c.AFPacketBlockSize < minAFPacketBlock || c.AFPacketBlockSize > maxAFPacketBlock || c.AFPacketBlockSize%os.Getpagesize() != 0:
		return bad("AFPacketBlockSize", "af_packet block size %d: not a multiple of the page size in [%d, %d]", c.AFPacketBlockSize, minAFPacketBlock, maxAFPacketBlock)
	case c.AFPacketBlocks < 2 || c.AFPacketBlocks > maxAFPacketBlocks:
		return bad("AFPacketBlocks", "af_packet blocks %d outside [2, %d]", c.AFPacketBlocks, maxAFPacketBlocks)
	case int64(c.AFPacketBlockSize)*int64(c.AFPacketBlocks) > maxAFPacketRing:
		return bad("AFPacketBlocks", "af_packet ring of %d blocks of %d bytes: more than %d bytes", c.AFPacketBlocks, c.AFPacketBlockSize, int64(maxAFPacketRing))
	}
	return nil
}

// Bounds of the AF_PACKET ring settings. A block holds at least one
// jumbo frame; the largest ring is 1 TiB, the afpacket package's own bound.
const (
	maxAFPacketRings  = 256
	minAFPacketBlock  = 64 << 10
	maxAFPacketBlock  = 1 << 30
	maxAFPacketBlocks = 1 << 20
	maxAFPacketRing   = 1 << 40
)

// minUMEMFrames leaves room for a full receive batch on top of what the
// kernel holds in its rings.
const minUMEMFrames = 256

func attachMode(s string) (xdp.AttachMode, error) {
	switch s {
	case XDPModeAuto, "":
		return xdp.AttachAuto, nil
	case XDPModeNative:
		return xdp.AttachNative, nil
	case XDPModeGeneric:
		return xdp.AttachGeneric, nil
	}
	return 0, fmt.Errorf("xdp mode %q: want auto, native or generic", s)
}
