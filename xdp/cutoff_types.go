//go:build linux

package xdp

// The per-connection cutoff's configuration and counters, as
// /work/notes/cutoff-contract.md (issue 17) fixes them. The program side
// (ProgramConfig.Cutoff, the conns map, LookupConn, SuspendConns,
// CutoffStats) is built beside them.

// MaxCutoffMatches is the number of drop-rule matches all cutoff rules
// may take together (the size of the program's cutoff rule array).
const MaxCutoffMatches = 32

// Limit: after Bytes bytes or Packets packets of a connection (both
// directions together) its further packets are not stored. Zero fields:
// no limit of that kind; the zero Limit never cuts.
type Limit struct{ Bytes, Packets uint64 }

// CutoffRule gives the connections it matches its own limit.
type CutoffRule struct {
	Name  string     // the rule's text as configured, for metrics and logs
	Match []DropRule // the rule matches if any of these does (query.ParseDropRules of its query)
	Limit Limit
}

// CutoffConfig is the per-connection cutoff: a connection's limit is that
// of the first rule matching its first packet (in either orientation),
// else Default.
type CutoffConfig struct {
	Default       Limit        // zero: only rules cut
	Rules         []CutoffRule // first match wins
	JitterPercent uint32       // 0..100
}

// Enabled reports whether any limit, the default's or a rule's, is not
// zero: only then can a packet be cut.
func (c CutoffConfig) Enabled() bool {
	if c.Default != (Limit{}) {
		return true
	}
	for _, r := range c.Rules {
		if r.Limit != (Limit{}) {
			return true
		}
	}
	return false
}

// CutoffStats counts what the cutoff did not store.
type CutoffStats struct {
	Packets, Bytes uint64 // all cut packets
	// Rules: per rule, in configuration order, then one for the default
	// (Rule == -1).
	Rules []RuleCut
}

// RuleCut counts the packets cut under one rule's limit.
type RuleCut struct {
	Rule           int // index in CutoffConfig.Rules, -1 = the default
	Name           string
	Packets, Bytes uint64
}
