// Package spool stores captured packets: one nanosecond pcap file at a time
// per capture stream (an interface queue, or an import), each with its flow
// index, in one or more spool directories.
//
// A Writer appends packets to its stream's active file and indexes them in a
// live index.Builder, so they are queryable as soon as Flush has written
// them. At rotation (by size or by packet-time age) the file is closed and its
// index sealed next to it in the background. A Spool is the set of all files,
// sealed and active, found at Open (which repairs what a crash left) or
// created since; a query takes a Snapshot of the files in a time range.
//
// A Writer gathers records in two buffers of Config.WriteBuffer bytes. With
// Config.DirectIO (stenod import), where the file system takes O_DIRECT
// (ext4, XFS, ...), a full buffer's whole 4 KiB blocks are written directly,
// past the page cache, by a goroutine of the Writer's while Append fills the
// other buffer, and become visible once written; Flush writes the rest, its
// last partial block through the page cache, so that the file always ends
// with its last whole record. Otherwise (live capture) every write is a
// buffered pwrite. With direct I/O the page cache holds
// little of what was written: a query of recent packets reads the disk.
//
// Each spool directory has a disk budget (Config.MaxBytes, MinFreePercent,
// MaxFiles), enforced before every file creation, flush and index write by
// deleting the directory's oldest files that no writer holds; a write that
// finds the disk full (ENOSPC) deletes the oldest files and is tried once
// more (a packet write once again after syncfs: dirState.settle). Deleted files that queries still read are counted as held space,
// which comes back when they close; when capture needs it, those queries
// are cut off (ErrRevoked, SnapshotFor) rather than more history deleted
// (revoke.go). Spool.Counters reports what was deleted, lost and revoked,
// Spool.Usage what each directory holds and may hold.
//
// File names sort by time: <dir>/<first packet time>-<stream>.pcap, with the
// index in the same name ending .idx. Hidden files (".name.*.tmp") are
// half-written and removed at Open.
//
// Open repairs what a crash or damage left (repair.go, resync.go): a file
// without a usable index is re-indexed from its plausible records, stepping
// over damaged regions, which stay in the file and are logged and counted
// (Counters); files with no plausible record, and anything that is not a
// regular file under a spool file's name, go to <dir>/quarantine.
// docs/formats.md has the rules.
//
// A Snapshot handle reads its pcap with Handle.ReadAt: from memory when the
// file is sealed and its index cached (the spool maps such files and keeps
// them mapped while the index stays cached, reference-counted so that a
// file evicted or deleted meanwhile is unmapped only after its last handle
// closes; mapped.go), else with pread.
//
// The package does not know the query language. It owns the files it opens:
// Snapshot handles must be closed by the caller.
package spool
