//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/stenod/stenod/gen"
)

// AttachMode says how the XDP program is attached to its interface.
type AttachMode int

const (
	// AttachAuto tries native (driver) mode and falls back to generic mode,
	// logging why native mode failed.
	AttachAuto AttachMode = iota
	// AttachNative attaches in the driver's receive path or fails.
	AttachNative
	// AttachGeneric attaches after the kernel built an skb (slower; every
	// driver supports it).
	AttachGeneric
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// Defaults of ProgramOptions; a zero field takes its default.
const (
	DefaultMaxFlows    = 262144  // flows map entries, about 36 MiB preallocated
	DefaultRingBufSize = 4 << 20 // bytes of new_flows: 58254 records of 72 bytes
	DefaultMaxQueues   = 256     // xsks map entries (RX queue indexes 0..255)
)

// ProgramOptions configure LoadProgram.
type ProgramOptions struct {
	// Interface is the network interface to attach to. Empty loads the
	// program and its maps without pinning or attaching anything (for
	// BPF_PROG_TEST_RUN and tools).
	Interface string
	// PinRoot is the bpffs directory under which the program's objects are
	// pinned, in PinRoot/<Interface>/. Default DefaultPinRoot.
	PinRoot string
	// Mode is how to attach; default AttachAuto.
	Mode AttachMode
	// NoXDP, with Interface set, pins the program and its maps but does not
	// attach the XDP program: for AF_PACKET capture, whose rings run the
	// socket filter (SocketFilter) on the same maps. There is no link pin.
	NoXDP bool
	// Config is written to the config map before the program is attached.
	Config ProgramConfig
	// MaxFlows is the size of the flows LRU map, and of the cutoff's conns
	// LRU map when Config enables the cutoff (else conns has one entry:
	// it is preallocated, about 180 bytes per entry). Default
	// DefaultMaxFlows.
	MaxFlows uint32
	// RingBufSize is the size of the new_flows ring buffer in bytes: a power
	// of two and a multiple of the page size. Default DefaultRingBufSize.
	RingBufSize uint32
	// MaxQueues is the size of the xsks map: frames arriving on an RX queue
	// index >= MaxQueues are never redirected. Default DefaultMaxQueues.
	MaxQueues uint32
	// Clock converts the kernel's CLOCK_TAI timestamps (Conn.LastCut);
	// the caller refreshes it. Default: one measured by LoadProgram.
	Clock *Clock
	// Logger receives the few events worth a line (generic-mode fallback,
	// replacing an earlier run's pins). Default: discard.
	Logger *slog.Logger
}

// DefaultProgramOptions returns the options LoadProgram uses for iface when
// every other field is zero.
func DefaultProgramOptions(iface string) ProgramOptions {
	return ProgramOptions{
		Interface:   iface,
		PinRoot:     DefaultPinRoot,
		Mode:        AttachAuto,
		MaxFlows:    DefaultMaxFlows,
		RingBufSize: DefaultRingBufSize,
		MaxQueues:   DefaultMaxQueues,
	}
}

func (o *ProgramOptions) setDefaults() error {
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.RingBufSize == 0 {
		o.RingBufSize = DefaultRingBufSize
	}
	if o.MaxQueues == 0 {
		o.MaxQueues = DefaultMaxQueues
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	page := uint32(os.Getpagesize())
	switch {
	case o.Mode < AttachAuto || o.Mode > AttachGeneric:
		return fmt.Errorf("attach mode %d: %w", int(o.Mode), ErrInvalidOptions)
	case o.RingBufSize&(o.RingBufSize-1) != 0 || o.RingBufSize%page != 0:
		return fmt.Errorf("ring buffer size %d: not a power of two multiple of %d: %w", o.RingBufSize, page, ErrInvalidOptions)
	}
	return nil
}

// Errors returned by LoadProgram and Program methods, to test with errors.Is.
var (
	// ErrInvalidOptions: a ProgramOptions field is out of range.
	ErrInvalidOptions = errors.New("invalid program options")
	// ErrInvalidDropRule: a DropRule matches everything or mixes address
	// families. SetConfig wraps it with the rule's index.
	ErrInvalidDropRule = errors.New("invalid drop rule")
	// ErrTooManyDropRules: more than MaxDropRules rules.
	ErrTooManyDropRules = errors.New("too many drop rules")
	// ErrNotBPFFS: the pin directory is not on a bpf filesystem.
	ErrNotBPFFS = errors.New("not a bpf filesystem")
	// ErrCutoffNotLoaded: SetConfig enables the cutoff of a program loaded
	// without it, whose connection table has no room.
	ErrCutoffNotLoaded = errors.New("cutoff enabled on a program loaded without it")
)

// Program is the loaded XDP program with its maps, and, when loaded for an
// interface, its pins and XDP link. Close detaches it; Remove deletes its
// pins. The maps returned by its methods belong to the Program: do not close
// them.
type Program struct {
	objs    gen.StenodObjects
	cutoff  CutoffConfig // as configured, for CutoffStats
	clock   *Clock
	link    link.Link // nil when not attached
	mode    AttachMode
	iface   string
	pinRoot string
	pinDir  string // "" when nothing is pinned
	log     *slog.Logger
}

// LoadProgram loads the XDP program and its maps, writes opts.Config, and,
// unless opts.Interface is empty, attaches the program to the interface and
// pins it under opts.PinRoot/<Interface>/ (names in docs/bpf.md).
//
// Pins left by an earlier run on the same interface (a crash, kill -9) are
// taken over: the earlier XDP link is detached and its pins replaced, so a
// restart needs no cleanup. The earlier run's maps, flow ids included, are
// not reused.
//
// Errors: ErrInvalidOptions, ErrInvalidDropRule, ErrTooManyDropRules,
// ErrTooManyCutoffMatches, ErrInvalidCutoff, ErrNotBPFFS; a verifier rejection wraps *ebpf.VerifierError (print it
// with %+v for the whole log); anything else comes from the kernel.
func LoadProgram(opts ProgramOptions) (_ *Program, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	cfg, err := opts.Config.compile()
	if err != nil {
		return nil, err
	}

	spec, err := gen.LoadStenod()
	if err != nil {
		return nil, fmt.Errorf("load program spec: %w", err)
	}
	spec.Maps[gen.StenodMapFlows].MaxEntries = opts.MaxFlows
	spec.Maps[gen.StenodMapConns].MaxEntries = 1
	if opts.Config.Cutoff.Enabled() {
		spec.Maps[gen.StenodMapConns].MaxEntries = opts.MaxFlows
	}
	spec.Maps[gen.StenodMapNewFlows].MaxEntries = opts.RingBufSize
	spec.Maps[gen.StenodMapXsks].MaxEntries = opts.MaxQueues

	clock := opts.Clock
	if clock == nil {
		if clock, err = NewClock(); err != nil {
			return nil, fmt.Errorf("load program: %w", err)
		}
	}
	p := &Program{iface: opts.Interface, pinRoot: opts.PinRoot, log: opts.Logger, clock: clock, cutoff: opts.Config.Cutoff}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("load program: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()

	if err := p.objs.Config.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	if opts.Interface == "" {
		return p, nil
	}

	ifc, err := net.InterfaceByName(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", opts.Interface, err)
	}
	dir, err := preparePinDir(opts.PinRoot, opts.Interface, opts.Logger)
	if err != nil {
		return nil, err
	}
	p.pinDir = dir
	defer func() {
		if err != nil {
			err = errors.Join(err, removePins(dir))
		}
	}()
	if err := p.pin(); err != nil {
		return nil, err
	}
	if opts.NoXDP {
		return p, nil
	}
	if err := p.attach(ifc, opts.Mode); err != nil {
		return nil, err
	}
	if err := p.link.Pin(pinPath(dir, PinLink)); err != nil {
		return nil, fmt.Errorf("pin %s: %w", PinLink, err)
	}
	return p, nil
}

// attach attaches the program to ifc in mode, falling back from native to
// generic in AttachAuto.
func (p *Program) attach(ifc *net.Interface, mode AttachMode) error {
	try := func(m AttachMode) error {
		flags := link.XDPDriverMode
		if m == AttachGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.StenodXdp, Interface: ifc.Index, Flags: flags})
		if err != nil {
			return fmt.Errorf("attach to %s in %s mode: %w", ifc.Name, m, err)
		}
		p.link, p.mode = l, m
		return nil
	}
	if mode != AttachAuto {
		return try(mode)
	}
	err := try(AttachNative)
	if err == nil {
		return nil
	}
	p.log.Warn("native XDP failed, attaching in generic mode (slower)", "iface", ifc.Name, "reason", err)
	if gerr := try(AttachGeneric); gerr != nil {
		return errors.Join(err, gerr)
	}
	return nil
}

// Close detaches the program from its interface and releases every file
// descriptor. The pinned maps and program stay, so bpftool can still read the
// last counters; the next LoadProgram replaces them and Remove deletes them.
// Close is not safe to call concurrently with other methods.
func (p *Program) Close() error {
	var errs []error
	if p.link != nil {
		// A pinned link outlives its file descriptor: detach explicitly.
		errs = append(errs, p.link.Detach())
		if p.pinDir != "" {
			if err := os.Remove(pinPath(p.pinDir, PinLink)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin %s: %w", PinLink, err))
			}
		}
		errs = append(errs, p.link.Close())
		p.link = nil
	}
	for _, c := range []io.Closer{
		p.objs.StenodXdp, p.objs.StenodSocket, p.objs.Flows, p.objs.NewFlows, p.objs.Stats,
		p.objs.Config, p.objs.Xsks, p.objs.FlowSeq, p.objs.Conns, p.objs.CutConns, p.objs.CutStats,
	} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the program's pin directory, PinRoot/<Interface>/. After
// Close, nothing of the program is left in the kernel. Before Close, the
// program stays attached until Close. A Program loaded without an interface
// has nothing to remove.
func (p *Program) Remove() error {
	if p.pinDir == "" {
		return nil
	}
	return removePins(p.pinDir)
}

// Attached reports whether the program is still attached to its
// interface through its link. It is not once someone holding the link
// (its pin) detached it, as bpftool link detach does, or once the
// interface is gone: the link stays, its interface index reads 0. Not safe
// to call concurrently with Close.
func (p *Program) Attached() (bool, error) {
	if p.link == nil {
		return false, nil
	}
	info, err := p.link.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	x := info.XDP()
	return x != nil && x.Ifindex != 0, nil
}

// Interface returns the interface the program is attached to, or "".
func (p *Program) Interface() string { return p.iface }

// AttachMode returns the mode the program was attached in: AttachNative or
// AttachGeneric (AttachAuto when not attached).
func (p *Program) AttachMode() AttachMode { return p.mode }

// PinDir returns the directory holding the pins, or "" when nothing is pinned.
func (p *Program) PinDir() string { return p.pinDir }

// XDPProgram returns the XDP program, e.g. for BPF_PROG_TEST_RUN.
func (p *Program) XDPProgram() *ebpf.Program { return p.objs.StenodXdp }

// XSKMap returns the xsks map: RX queue index (uint32) -> AF_XDP socket
// file descriptor (uint32, write only).
func (p *Program) XSKMap() *ebpf.Map { return p.objs.Xsks }

// NewFlows returns the new_flows ring buffer; read it with
// github.com/cilium/ebpf/ringbuf and decode records with NewFlowRecord.
func (p *Program) NewFlows() *ebpf.Map { return p.objs.NewFlows }

// Flows returns the flows LRU map: key flow.Key (it marshals itself), value
// FlowValue.
func (p *Program) Flows() *ebpf.Map { return p.objs.Flows }

// FlowValue is the value of the flows map (struct flow_value): the flow's
// id, packets, bytes, and CLOCK_TAI nanoseconds of its first and latest
// packet (see Clock).
type FlowValue = gen.StenodFlowValue

// ProgramStats are the XDP program's counters (enum stat in bpf/stenod.h),
// summed over all CPUs, since the program was loaded.
type ProgramStats struct {
	Packets          uint64 `json:"packets"`            // frames the program ran on
	Bytes            uint64 `json:"bytes"`              // their length, all buffers of multi-buffer frames
	Redirected       uint64 `json:"redirected"`         // handed to an AF_XDP socket (XDP_REDIRECT)
	RedirectFailed   uint64 `json:"redirect_failed"`    // no socket on the frame's RX queue: passed to the stack
	MetaFailed       uint64 `json:"meta_failed"`        // redirected without metadata (bpf_xdp_adjust_meta failed)
	RingBufFull      uint64 `json:"ringbuf_full"`       // new flows whose new_flows record was lost
	DroppedByRule    uint64 `json:"dropped_rule"`       // dropped by a drop rule
	OverSnapLen      uint64 `json:"over_snaplen"`       // longer than the snap length
	Passed           uint64 `json:"passed"`             // observe mode: passed to the stack after accounting
	NewFlows         uint64 `json:"new_flows"`          // flows entered in the flows map
	FlowInsertFailed uint64 `json:"flow_insert_failed"` // flows that could not be entered: packets with flow id 0
	ParseNotIP       uint64 `json:"parse_not_ip"`       // frames without an IPv4/IPv6 header
	ParseIPv4        uint64 `json:"parse_ipv4"`         // frames with an IPv4 header
	ParseIPv6        uint64 `json:"parse_ipv6"`         // frames with an IPv6 header
	ParseFragment    uint64 `json:"parse_fragment"`     // IP fragments
	ParseVLAN        uint64 `json:"parse_vlan"`         // frames with at least one VLAN tag
	ParseMPLS        uint64 `json:"parse_mpls"`         // frames with an MPLS label stack
	CutPackets       uint64 `json:"cut_packets"`        // not stored: past their connection's cutoff (XDP program and socket filter)
	CutBytes         uint64 `json:"cut_bytes"`          // their length
	CutRingBufFull   uint64 `json:"cut_ringbuf_full"`   // cut_conns records lost
}

const statCount = int(gen.StenodStatSTAT_MAX)

// counter returns the field of s counting enum stat i, or nil.
func (s *ProgramStats) counter(i gen.StenodStat) *uint64 {
	switch i {
	case gen.StenodStatSTAT_PACKETS:
		return &s.Packets
	case gen.StenodStatSTAT_BYTES:
		return &s.Bytes
	case gen.StenodStatSTAT_REDIRECTED:
		return &s.Redirected
	case gen.StenodStatSTAT_REDIRECT_FAILED:
		return &s.RedirectFailed
	case gen.StenodStatSTAT_META_FAILED:
		return &s.MetaFailed
	case gen.StenodStatSTAT_RINGBUF_FULL:
		return &s.RingBufFull
	case gen.StenodStatSTAT_DROPPED_RULE:
		return &s.DroppedByRule
	case gen.StenodStatSTAT_OVER_SNAPLEN:
		return &s.OverSnapLen
	case gen.StenodStatSTAT_PASSED:
		return &s.Passed
	case gen.StenodStatSTAT_NEW_FLOWS:
		return &s.NewFlows
	case gen.StenodStatSTAT_FLOW_INSERT_FAILED:
		return &s.FlowInsertFailed
	case gen.StenodStatSTAT_PARSE_NOT_IP:
		return &s.ParseNotIP
	case gen.StenodStatSTAT_PARSE_IPV4:
		return &s.ParseIPv4
	case gen.StenodStatSTAT_PARSE_IPV6:
		return &s.ParseIPv6
	case gen.StenodStatSTAT_PARSE_FRAGMENT:
		return &s.ParseFragment
	case gen.StenodStatSTAT_PARSE_VLAN:
		return &s.ParseVLAN
	case gen.StenodStatSTAT_PARSE_MPLS:
		return &s.ParseMPLS
	case gen.StenodStatSTAT_CUT_PACKETS:
		return &s.CutPackets
	case gen.StenodStatSTAT_CUT_BYTES:
		return &s.CutBytes
	case gen.StenodStatSTAT_CUT_RINGBUF_FULL:
		return &s.CutRingBufFull
	}
	return nil
}

// Stats reads the counters, summed over all CPUs. Counters are read one at
// a time while the program runs, so they are not a snapshot of one instant.
func (p *Program) Stats() (ProgramStats, error) {
	return readStats(p.objs.Stats)
}

// readStats sums the per-CPU stats map m.
func readStats(m *ebpf.Map) (ProgramStats, error) {
	var s ProgramStats
	var perCPU []uint64
	for i := range statCount {
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return ProgramStats{}, fmt.Errorf("read counter %d: %w", i, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		if c := s.counter(gen.StenodStat(i)); c != nil {
			*c = sum
		}
	}
	return s, nil
}

// SetConfig replaces the program's configuration. The program sees the new
// one from its next packet on; a packet being processed may see a mix.
// Connections already in the table keep the cutoff limits they entered
// with. Not safe to call concurrently with CutoffStats.
func (p *Program) SetConfig(c ProgramConfig) error {
	v, err := c.compile()
	if err != nil {
		return err
	}
	if c.Cutoff.Enabled() && p.objs.Conns.MaxEntries() <= 1 {
		return fmt.Errorf("write config: %w: load it with the cutoff enabled", ErrCutoffNotLoaded)
	}
	if err := p.objs.Config.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	p.cutoff = c.Cutoff
	return nil
}
