// Package engine answers a query from a spool: it prunes files by time,
// evaluates the query on each file's flows, reads the matching packets from
// the pcap files, merges them across files by timestamp and writes them to a
// pcapio.PacketWriter, stopping at packet or byte limits (Run). It also
// summarizes an answer without its packets' bytes: its flows (Flows; per
// capture interface, sorted and paged, FlowPage), reading only the
// timestamps of flows a time bound cuts through, and its packets and bytes
// over time (Histogram), from the index alone.
//
// How a file is read (docs/architecture.md has the whole path):
//   - flows whose verdict is No are skipped without touching the pcap;
//   - flows whose verdict is Yes contribute all their packet offsets;
//   - flows whose verdict is ByTime contribute their offsets, and each packet
//     is tested against the query with its own timestamp when read;
//   - a query with only time primitives takes every flow's offsets, so that
//     every record read comes with its checksum.
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
// Every record is checked against its index before it is used: its place,
// its length, and its checksum (index.View.AppendSums). A record that does
// not agree, or that lies past the end of a file cut short (a mapped file
// truncated by someone else faults into an error wrapping
// io.ErrUnexpectedEOF, never SIGBUS), is a *DamageError: it is left out of
// the answer and counted (Result.Damaged), and the spool is told
// (spool.Damaged). Any other error ends the query: an answer is never
// silently wrong or partial.
package engine
