// Package fleet asks several stenod sensors one query and merges their
// answers: the fleet query of docs/fleet.md.
//
// A Fleet holds the peers of the configuration's fleet section (name, base
// URL, certificates directory) and one HTTP client per peer. Query sends
// the query to every peer in parallel (GET /v1/pcap?format=pcapng, never
// the peer's own fleet endpoint, so fleets cannot recurse), reads the
// pcapng answers as they stream in and merges them by timestamp into one
// PacketWriter, naming each packet's interface "sensor/iface". Stats reads
// every peer's /v1/stats.
//
// What the package promises:
//
//   - A peer that fails (refused connection, error status, an answer that
//     breaks off, its deadline Config.Timeout, or no data for
//     Config.StallTimeout while the merge waits for it) is dropped: the
//     packets of it already merged stay, the others go on, and the
//     Summary names it with its error. A fleet query fails as a whole
//     only when its output fails or its context ends.
//   - The merge never reads ahead of its output by more than a few
//     batches per peer: a client that reads slowly slows the peers down
//     through TCP, it does not fill memory.
//   - Ties in time go to the peer listed first.
//
// The package does not load certificates itself: the caller passes a
// function that does (api.ClientTLSConfig), so that fleet depends on no
// server code. It owns the idle connections of its clients; Close closes
// them.
package fleet
