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
// How records are read: a sealed file is mapped by the spool
// (spool.Handle.Mapped), and each record is copied out of the mapping
// exactly (Handle.ReadAt), header then data, with no system call. Any other
// file (the active one, or a sealed one that could not be mapped) is read
// with pread through a window buffer sized by the gaps between candidates,
// so that nearby records cost one read; so is the rest of a mapped file
// once reads from its mapping prove to wait for the disk (slowFaults in
// source.go). A file with many candidates is read in chunks on several
// goroutines ahead of the merge (prefetch.go).
//
// The data passed to PacketWriter.WritePacket is valid only during the
// call: the engine reuses its buffers.
//
// A record that does not agree with its index (length out of range, past the
// indexed end), or that cannot be read (a mapped file truncated by someone
// else gives an error wrapping io.ErrUnexpectedEOF, never SIGBUS), ends the
// query with an error: an answer is never silently wrong or partial.
package engine
