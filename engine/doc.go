// Package engine answers a query from a spool: it prunes files by time,
// evaluates the query on each file's flows, reads the matching packets from
// the pcap files, merges them across files by timestamp and writes them to a
// pcapio.PacketWriter, stopping at packet or byte limits.
//
// How a file is read (docs/architecture.md has the whole path):
//   - flows whose verdict is No are skipped without touching the pcap;
//   - flows whose verdict is Yes contribute all their packet offsets;
//   - flows whose verdict is ByTime contribute their offsets, and each packet
//     is tested against the query with its own timestamp when read;
//   - a query with only time primitives skips the flows and reads the blocks
//     of the sparse time index that overlap its range.
//
// A record that does not agree with its index (length out of range, past the
// indexed end) ends the query with an error: an answer is never silently
// wrong or partial.
package engine
