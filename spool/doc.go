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
// Each spool directory has a disk budget (Config.MaxBytes, MinFreePercent,
// MaxFiles), enforced before every file creation, flush and index write by
// deleting the directory's oldest files that no writer holds; a write that
// finds the disk full (ENOSPC) deletes the oldest files and is tried once
// more. Spool.Counters reports what was deleted and lost, Spool.Usage what
// each directory holds and may hold.
//
// File names sort by time: <dir>/<first packet time>-<stream>.pcap, with the
// index in the same name ending .idx. Hidden files (".name.tmp") are
// half-written and removed at Open.
//
// The package does not know the query language. It owns the files it opens:
// Snapshot handles must be closed by the caller.
package spool
