package query

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/stenod/stenod/flow"
)

// ErrSyntax is matched (errors.Is) by every *SyntaxError, for callers that
// only need to tell a bad query from other failures.
var ErrSyntax = errors.New("query: syntax error")

// SyntaxError is what Parse returns for a bad query. It points at the token
// that made the query wrong, so an analyst can fix it without guessing.
type SyntaxError struct {
	Pos   int    // byte offset of Token in the query
	Token string // the offending token as written; "" at the end of the query
	Msg   string // what is wrong, in the analyst's terms
}

func (e *SyntaxError) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("query: at %d (end of query): %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("query: at %d (%q): %s", e.Pos, e.Token, e.Msg)
}

// Is reports whether target is ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// Verdict is the result of evaluating a query on a flow key before looking at
// packet timestamps.
type Verdict uint8

const (
	// No: no packet of the flow matches, whatever its timestamp.
	No Verdict = iota
	// Yes: every packet of the flow matches, whatever its timestamp.
	Yes
	// ByTime: the answer depends on each packet's timestamp; call
	// MatchPacket. ByTime is conservative: a query whose time primitives
	// cancel out (`before T or after T`) may answer ByTime although every
	// packet matches.
	ByTime
)

func (v Verdict) String() string {
	switch v {
	case No:
		return "no"
	case Yes:
		return "yes"
	case ByTime:
		return "bytime"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Query is a parsed, compiled query. It is immutable, so one Query may be
// evaluated from many goroutines at once.
type Query struct {
	root     *node
	prog     prog
	lo, hi   int64
	timeOnly bool
	hasTime  bool
}

// Parse parses a query. now is the reference for relative times ("3h ago");
// they are resolved once, here, so a long-running query keeps one meaning.
// A bad query returns a *SyntaxError. `community-id` compares IDs hashed
// with seed 0; ParseWith takes another.
func Parse(s string, now time.Time) (*Query, error) {
	return ParseWith(s, now, Options{})
}

// Options are the sensor's settings a query's meaning depends on.
type Options struct {
	// CommunityIDSeed is the seed `community-id` hashes flow keys with:
	// the one the IDs it is given were computed with (Zeek's and
	// Suricata's community_id seed, 0 unless configured).
	CommunityIDSeed uint16
}

// ParseWith is Parse with the sensor's options.
func ParseWith(s string, now time.Time, o Options) (*Query, error) {
	root, err := parse(s, clampTime(now))
	if err != nil {
		return nil, err
	}
	q := &Query{root: root}
	q.prog.seed = o.CommunityIDSeed
	q.prog.root = q.prog.compile(root)
	t, _ := bounds(root)
	if t.empty() {
		t = span{0, 0}
	}
	q.lo, q.hi = t.lo, t.hi
	q.timeOnly = timeOnly(root)
	q.hasTime = hasTime(root)
	return q, nil
}

// String returns the canonical form of the query: lower-case keywords, `and`
// and `or` spelled out, networks as CIDR with host bits cleared, IPv4-mapped
// addresses as IPv4, relative times resolved to absolute UTC times, and only
// the parentheses the left-to-right grammar needs. Parse(q.String()) gives an
// equivalent query whatever its now.
func (q *Query) String() string { return q.root.String() }

// zeroKey stands in for a nil key: the key of a frame too short to parse.
var zeroKey flow.Key

// MatchFlow evaluates the query on a flow key for packets of any timestamp.
// It does not allocate.
func (q *Query) MatchFlow(k *flow.Key) Verdict {
	return q.MatchFlowDuring(k, math.MinInt64, math.MaxInt64)
}

// MatchFlowDuring is MatchFlow for a flow whose packets are all stamped
// within [first, last] (unix ns, inclusive, e.g. the flow's first and last
// seen): time primitives that hold, or fail, for that whole span decide
// without looking at packets. It does not allocate.
func (q *Query) MatchFlowDuring(k *flow.Key, first, last int64) Verdict {
	if k == nil {
		k = &zeroKey
	}
	return q.prog.flow(q.prog.root, k, nil, first, last)
}

// MatchFlowWithID is MatchFlowDuring for a flow whose Community ID was
// hashed before, with CommunityIDSeed: cid is its first 8 bytes, big
// endian (flow.CommunityIDHead), which spares community-id a SHA-1 per flow.
// It does not allocate.
func (q *Query) MatchFlowWithID(k *flow.Key, cid uint64, first, last int64) Verdict {
	if k == nil {
		k = &zeroKey
	}
	return q.prog.flow(q.prog.root, k, &cid, first, last)
}

// HasCommunityID reports whether the query has a community-id primitive:
// then MatchFlowWithID is worth its precomputed IDs.
func (q *Query) HasCommunityID() bool { return q.prog.hasCommunityID }

// CommunityIDSeed is the seed community-id hashes keys with.
func (q *Query) CommunityIDSeed() uint16 { return q.prog.seed }

// MatchPacket fully evaluates the query for a packet with key k stamped ts
// (unix ns). A nil k is the key of a frame that did not parse. It does not
// allocate.
func (q *Query) MatchPacket(k *flow.Key, ts int64) bool {
	if k == nil {
		k = &zeroKey
	}
	return q.prog.packet(q.prog.root, k, ts)
}

// TimeRange returns a conservative half-open range [lo, hi) of timestamps
// that can match: a packet stamped outside it never matches. lo is
// math.MinInt64 and hi math.MaxInt64 when unbounded (so a packet stamped
// exactly math.MaxInt64, in the year 2262, is treated as out of every range).
// lo >= hi (returned as 0, 0) means no packet can match.
func (q *Query) TimeRange() (lo, hi int64) { return q.lo, q.hi }

// TimeOnly reports whether the query has only time primitives: then the key
// plays no part, and every packet whose timestamp matches is in the answer,
// whether it parsed as IP or not. The engine can skip the flow index and
// filter a file's packets with MatchPacket(nil, ts).
func (q *Query) TimeOnly() bool { return q.timeOnly }

// HasTime reports whether the query has a time primitive (before,
// after): without one, MatchFlow decides every key Yes or No, never
// ByTime, so the key alone says whether a flow matches.
func (q *Query) HasTime() bool { return q.hasTime }
