// Package ipfix exports the flows of the live index as IPFIX (RFC 7011)
// to collectors over UDP and TCP.
//
// It owns the encoder (encode.go: message header, template set, data sets,
// the enterprise-specific fields), the exporter (exporter.go: a scan of the
// live indexes every second, per-flow export state, active and idle
// timeouts) and one sender per collector (sender.go: a bounded queue, UDP
// with templates resent on a schedule, TCP with templates on every
// connection and reconnection with backoff).
//
// Flows come from the live indexes only (index.Builder, read with
// CopyFlows a chunk at a time), never from the packet path: a slow or
// absent collector costs records, counted in Counters.RecordsDropped, and
// never a packet. The exporter owns its sockets and goroutines; Run
// returns when its context is done, after closing them.
//
// What is exported, field by field, and the enterprise-specific fields'
// numbers are in docs/fleet.md ("Flow export (IPFIX)").
package ipfix
