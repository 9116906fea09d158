//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/gen"
)

// MaxCutoffMatches is the number of DropRules the kernel holds over all
// cutoff rules together (MAX_CUTOFF_MATCHES in bpf/stenod.h).
const MaxCutoffMatches = 32

// Errors of the cutoff configuration, to test with errors.Is. An invalid
// match of a rule wraps ErrInvalidDropRule; each error names the rule.
var (
	// ErrTooManyCutoffMatches: the rules hold more than MaxCutoffMatches
	// DropRules together.
	ErrTooManyCutoffMatches = errors.New("too many cutoff matches")
	// ErrInvalidCutoff: a rule without a match, or a jitter above 100%.
	ErrInvalidCutoff = errors.New("invalid cutoff configuration")
)

// Limit: after Bytes bytes or Packets packets of a connection (both
// directions together) its further packets are not stored. Zero fields:
// no limit of that kind; the zero Limit never cuts.
type Limit struct{ Bytes, Packets uint64 }

// IsZero reports whether l never cuts.
func (l Limit) IsZero() bool { return l == Limit{} }

// CutoffRule gives the connections it matches their own Limit.
type CutoffRule struct {
	Name  string     // the rule's text as configured, for metrics and logs
	Match []DropRule // the rule matches if any of these does (query.ParseDropRules of its query)
	Limit Limit
}

// CutoffConfig is the per-connection cutoff (docs/bpf.md, "Cutoff"). The
// zero value cuts nothing.
type CutoffConfig struct {
	Default       Limit        // zero: only rules cut
	Rules         []CutoffRule // first match wins
	JitterPercent uint32       // 0..100
}

// Enabled reports whether any limit is non-zero: only then does the kernel
// keep its connection table.
func (c CutoffConfig) Enabled() bool {
	if !c.Default.IsZero() {
		return true
	}
	for _, r := range c.Rules {
		if !r.Limit.IsZero() {
			return true
		}
	}
	return false
}

// compile turns c into struct cutoff_config.
func (c CutoffConfig) compile() (gen.StenodCutoffConfig, error) {
	var v gen.StenodCutoffConfig
	if c.JitterPercent > 100 {
		return v, fmt.Errorf("cutoff jitter %d%%, at most 100%%: %w", c.JitterPercent, ErrInvalidCutoff)
	}
	n := 0
	for i, r := range c.Rules {
		if len(r.Match) == 0 {
			return v, fmt.Errorf("cutoff rule %d (%q): no match: %w", i, r.Name, ErrInvalidCutoff)
		}
		if n+len(r.Match) > MaxCutoffMatches {
			return v, fmt.Errorf("cutoff rule %d (%q): its %d matches make more than %d over all rules: %w",
				i, r.Name, len(r.Match), MaxCutoffMatches, ErrTooManyCutoffMatches)
		}
		for j, m := range r.Match {
			dr, err := m.compile()
			if err != nil {
				return v, fmt.Errorf("cutoff rule %d (%q) match %d (%v): %w", i, r.Name, j, m, err)
			}
			v.Matches[n] = gen.StenodCutoffMatch{
				Match: dr, Rule: uint32(i),
				LimitBytes: r.Limit.Bytes, LimitPackets: r.Limit.Packets,
			}
			n++
		}
	}
	if c.Enabled() {
		v.Enabled = 1
	}
	v.JitterPercent = c.JitterPercent
	v.N_matches = uint32(n)
	v.DefaultBytes, v.DefaultPackets = c.Default.Bytes, c.Default.Packets
	return v, nil
}

// ConnKey returns the canonical key of k's connection, the key of the
// kernel's conns table, and whether k is in the reverse direction:
// FlagFragment cleared, ICMP type and code zeroed, and the endpoints
// ordered so that (Src, SrcPort) <= (Dst, DstPort), addresses compared as
// bytes, then ports as numbers. A key that is not IP stays as it is. The
// Go twin of conn_key() in bpf/stenod.c.
func ConnKey(k *flow.Key) (conn flow.Key, reversed bool) {
	conn = *k
	conn.Flags &^= flow.FlagFragment
	if conn.Flags&flow.FlagICMP != 0 {
		conn.SrcPort, conn.DstPort = 0, 0
	}
	c := bytes.Compare(conn.Src[:], conn.Dst[:])
	if c > 0 || c == 0 && conn.SrcPort > conn.DstPort {
		// Ports of keys without FlagPorts are zero (ICMP's zeroed above).
		conn = conn.Reversed()
		reversed = true
	}
	return conn, reversed
}

// Conn is a connection of the kernel's conns table.
type Conn struct {
	Key                  flow.Key  // canonical (ConnKey)
	Packets, Bytes       uint64    // counted, both directions
	Limit                Limit     // with jitter
	CutPackets, CutBytes [2]uint64 // [0] key orientation, [1] reversed
	LastCut              int64     // unix ns of the latest cut packet, 0 = none
	Rule                 int       // index in CutoffConfig.Rules, -1 = the default
	Suspended            bool
}

// ConnValue is the value of the conns map (struct conn_value).
type ConnValue = gen.StenodConnValue

// conn fills c from the map entry k, v.
func (p *Program) conn(c *Conn, k *flow.Key, v *ConnValue) {
	*c = Conn{
		Key:        *k,
		Packets:    v.Packets,
		Bytes:      v.Bytes,
		Limit:      Limit{Bytes: v.LimitBytes, Packets: v.LimitPackets},
		CutPackets: v.CutPackets,
		CutBytes:   v.CutBytes,
		Rule:       int(v.Rule),
		Suspended:  v.Flags&uint32(gen.StenodConnFlagCONN_SUSPENDED) != 0,
	}
	if v.LastCutNs != 0 {
		c.LastCut = int64(v.LastCutNs) - int64(p.clock.Offset())
	}
}

// LookupConn returns the connection of k, in either orientation, from the
// conns table; false when it is not there (never seen, evicted by the LRU
// map, or the cutoff is off).
func (p *Program) LookupConn(k *flow.Key) (Conn, bool, error) {
	ck, _ := ConnKey(k)
	var v ConnValue
	err := p.objs.Conns.Lookup(&ck, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Conn{}, false, nil
	}
	if err != nil {
		return Conn{}, false, fmt.Errorf("look up connection %v: %w", ck, err)
	}
	var c Conn
	p.conn(&c, &ck, &v)
	return c, true, nil
}

// SuspendConns sets the suspended flag on every connection in the table
// whose canonical key match accepts, and returns how many it set: their
// packets are stored from then on, whatever their counts. Connections that
// enter the table later are not affected. The flag is set by rewriting the
// entry, so a packet counted by the kernel at that instant may be lost from
// its counts.
func (p *Program) SuspendConns(match func(k *flow.Key) bool) (int, error) {
	var k flow.Key
	var v ConnValue
	var keys []flow.Key
	it := p.objs.Conns.Iterate()
	for it.Next(&k, &v) {
		if v.Flags&uint32(gen.StenodConnFlagCONN_SUSPENDED) == 0 && match(&k) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("walk connections: %w", err)
	}
	n := 0
	for i := range keys {
		if err := p.objs.Conns.Lookup(&keys[i], &v); errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // evicted meanwhile
		} else if err != nil {
			return n, fmt.Errorf("look up connection %v: %w", keys[i], err)
		}
		v.Flags |= uint32(gen.StenodConnFlagCONN_SUSPENDED)
		err := p.objs.Conns.Update(&keys[i], &v, ebpf.UpdateExist)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("suspend connection %v: %w", keys[i], err)
		}
		n++
	}
	return n, nil
}

// CutoffStats are the packets and bytes the cutoff did not store, since
// the program was loaded.
type CutoffStats struct {
	Packets, Bytes uint64 // all cut packets
	// Rules: per rule, in configuration order, then one for the default
	// (Rule == -1). Counts are kept by rule index: after SetConfig changed
	// the rules, an index's counts include those of its former rule.
	Rules []RuleCut
}

// RuleCut is what the cutoff did not store of the connections one rule
// (or the default) limited.
type RuleCut struct {
	Rule           int    // index in CutoffConfig.Rules, -1 = the default
	Name           string // CutoffRule.Name; "default" for the default
	Packets, Bytes uint64
}

// CutoffStats reads the cut counters, summed over all CPUs.
func (p *Program) CutoffStats() (CutoffStats, error) {
	ps, err := p.Stats()
	if err != nil {
		return CutoffStats{}, err
	}
	s := CutoffStats{Packets: ps.CutPackets, Bytes: ps.CutBytes}
	var perCPU []gen.StenodCutCount
	read := func(idx uint32, rc RuleCut) error {
		if err := p.objs.CutStats.Lookup(idx, &perCPU); err != nil {
			return fmt.Errorf("read cut counters of rule %d: %w", rc.Rule, err)
		}
		for _, c := range perCPU {
			rc.Packets += c.Packets
			rc.Bytes += c.Bytes
		}
		s.Rules = append(s.Rules, rc)
		return nil
	}
	for i, r := range p.cutoff.Rules {
		if err := read(uint32(i), RuleCut{Rule: i, Name: r.Name}); err != nil {
			return CutoffStats{}, err
		}
	}
	if err := read(MaxCutoffMatches, RuleCut{Rule: -1, Name: "default"}); err != nil {
		return CutoffStats{}, err
	}
	return s, nil
}

// CutConns returns the cut_conns ring buffer: one record (CutConnRecord)
// per connection the first time it has a packet cut, so that user space
// learns which connections to poll without walking the whole table. Read
// it with github.com/cilium/ebpf/ringbuf. Records lost to a full ring are
// counted in ProgramStats.CutRingBufFull.
func (p *Program) CutConns() *ebpf.Map { return p.objs.CutConns }

// Conns returns the conns LRU map: key flow.Key (canonical, ConnKey),
// value ConnValue.
func (p *Program) Conns() *ebpf.Map { return p.objs.Conns }

// SocketFilter returns the socket filter program for AF_PACKET sockets
// (SO_ATTACH_BPF): the cutoff on the same maps as the XDP program, and the
// snap length of the configuration (ProgramConfig.SnapLen), as
// afpacket's classic filter does.
func (p *Program) SocketFilter() *ebpf.Program { return p.objs.StenodSocket }

// CutConnRecordSize is the size of a cut_conns record (struct cut_conn).
const CutConnRecordSize = 56

// CutConnRecord is a record of the cut_conns ring buffer.
type CutConnRecord struct {
	Key      flow.Key // the connection, canonical
	FirstCut uint64   // CLOCK_TAI ns of its first cut packet (Clock.Time)
}

// UnmarshalBinary decodes a record of CutConnRecordSize bytes:
// struct flow_key, then the u64 timestamp.
func (r *CutConnRecord) UnmarshalBinary(b []byte) error {
	if len(b) < CutConnRecordSize {
		return fmt.Errorf("cut connection record: %d bytes, want %d: %w", len(b), CutConnRecordSize, ErrShortRecord)
	}
	if err := r.Key.UnmarshalBinary(b[:flow.KeySize]); err != nil {
		return fmt.Errorf("cut connection record: %w", err)
	}
	r.FirstCut = binary.LittleEndian.Uint64(b[flow.KeySize:])
	return nil
}

// Validate reports what SetConfig would refuse in c: the errors of the
// cutoff part of ProgramConfig.
func (c CutoffConfig) Validate() error {
	_, err := c.compile()
	return err
}
