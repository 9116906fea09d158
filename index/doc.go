// Package index is stenod's per-file flow index: for each spool file, one
// record per flow (key, first and last timestamp, packets, bytes) and the
// file offset of every packet of that flow, plus a sparse time index.
//
// A Builder is the live index of the file being written: Add is called once
// per packet on the capture path and allocates nothing per packet; queries
// read the Builder concurrently and see packets up to the offset last
// published with SetVisible. At rotation the Builder is sealed with
// WriteFile into an immutable index file (format in docs/formats.md), which
// Open reads back after verifying its version and checksum. Builder and
// Reader both implement View, the read side the query engine uses.
//
// The package knows nothing of the query language or of pcap files: offsets
// are opaque numbers to it.
package index
