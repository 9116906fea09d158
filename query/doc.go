// Package query implements stenod's query language: stenographer's grammar
// (host, net, port, ip proto, tcp, udp, icmp, vlan, mpls, before, after, and,
// or, parentheses) plus src/dst, not, icmp6, sctp, ip, ip6 and s/m/h/d
// durations. docs/query-language.md is the user's reference; this package is
// its implementation.
//
// The package owns parsing and evaluation against a flow.Key and a
// timestamp. It does not know about files, indexes or packets: the engine
// decides which flows and files to look at, using three answers a Query
// gives:
//
//   - TimeRange: a conservative [lo, hi) of timestamps that can match, to
//     prune whole files.
//   - MatchFlow / MatchFlowDuring: a three-valued verdict per flow key. No:
//     skip the flow; Yes: take every packet of the flow (in the time
//     window); ByTime: test each packet's timestamp with MatchPacket.
//   - MatchPacket: the full answer for one packet.
//
// TimeOnly says the key does not matter at all, so packets that did not
// parse (ARP, truncated frames) are in the answer too.
//
// Parse resolves relative times ("3h ago") once against the now it is given,
// and compiles the query into a flat program: the Match methods and
// TimeRange do not allocate and a Query is safe for concurrent use.
//
// ParseDropRules reads the same language, restricted to what the XDP
// program can match, into pre-capture drop rules (DropRule, the form of
// xdp.DropRule), so the configuration's drop rules and the analyst's
// queries are one language with one parser.
//
// Errors: Parse returns a *SyntaxError for every bad query (errors.Is(err,
// ErrSyntax) holds), with the byte offset and text of the offending token
// and a message meant for the analyst who typed the query; the API shows
// Error() as it is. Parse returns no other errors. ParseDropRules also
// returns errors wrapping ErrDropRule, for a valid query that drop rules
// cannot express (not, time, vlan; see its doc).
package query
