// Package capture runs live capture: it attaches stenod's XDP program to
// each configured interface, reads every RX queue through its own AF_XDP
// socket (or, on interfaces without AF_XDP zero-copy, reads AF_PACKET
// rings: see Methods) and stores the packets in the spool, where they are
// queryable within a second of arriving.
//
// # Data path
//
// Per interface: xdp.LoadProgram (pinned under PinRoot/<iface>/), one
// xdp.Socket per RX queue in the program's XSKMAP, and a table of flow id
// -> flow.Key filled from the program's new_flows ring buffer, which the
// writers drain before keying each batch (the program wakes no reader:
// newFlowsRing).
//
// Per RX queue, two goroutines joined by a fixed set of batch buffers:
//
//   - the receive loop, locked to its OS thread and pinned to a CPU, copies
//     each packet (up to the snap length) with its timestamp and flow id
//     into a batch and gives the frames back to the fill ring at once. It
//     never touches the disk. Once it has packets and the socket has no
//     more, it sleeps until its batch is 25 ms old (rxCoalesce; less when
//     a quarter of the RX ring would fill meanwhile at the current rate)
//     so that packets gather in the RX ring instead of each waking it, as
//     a TPACKET_V3 block does for AF_PACKET. A batch goes to the writer
//     when it is full, or when the socket is dry and the batch is 25 ms
//     old (half the flush interval while the writer is still busy with
//     earlier batches), or after half the flush interval.
//   - the writer keys each packet (see Flow keys) and appends it to the
//     stream's spool.Writer ("<iface>-q<queue>", interface name <iface>). It flushes
//     whenever no batch is waiting, and at least every FlushInterval under
//     load, which is what makes packets queryable within a second.
//
// When every batch is with the writer (a slow disk), the receive loop waits
// for one and the packets wait in the UMEM, UMEMFrames frames per queue;
// only when that is full does the kernel drop, and it counts what it drops
// (XDP_STATISTICS, in Stats). Dropping in user space instead would throw
// away the UMEM's buffering. The writers are not pinned: they wait on the
// disk, and the CPUs are the receive loops'.
//
// Timestamps come from the XDP program's metadata (CLOCK_TAI) converted by
// an xdp.Clock refreshed every few seconds; a packet without metadata is
// stamped when it is received.
//
// # Flow keys
//
// Every packet is keyed by flow.Parse over its captured bytes, on both
// paths. The AF_XDP writer uses the XDP program's flow id for two
// shortcuts only (queue.store says why no more): a packet with the flow id
// of the packet before it keeps that packet's key without a parse, and a
// packet the snap length cut, whose headers the parser may lack, takes the
// key the program parsed from the whole frame, from the flow id table. The
// counters say which: QueueStats.KeysFromFlowID and KeysParsed (AF_PACKET:
// every packet is parsed). Flow ids are only meaningful for one loaded
// program (docs/bpf.md), so the table belongs to one interface's capture
// and dies with it. It is direct-mapped (one cache miss per lookup): a
// newer flow may take an older one's slot, and a cut packet of the older
// flow is then keyed by parsing what was kept
// (InterfaceStats.FlowIDEvictions).
//
// # Methods
//
// Config.Method chooses the reader per interface: MethodXDP (the above),
// MethodAFPacket, or MethodAuto, which takes AF_XDP only where a trial bind
// of an AF_XDP socket in zero-copy mode succeeds and AF_PACKET elsewhere
// (veth, virtio, generic XDP: AF_XDP's copy mode is slower there), and logs
// the choice and the reason (also InterfaceStats.Method, MethodReason).
//
// AF_PACKET (afpacketsource.go): per interface Config.AFPacketRings
// TPACKET_V3 rings in one PACKET_FANOUT_HASH group (a flow stays on one
// ring), stream "<iface>-q<ring>". Each ring has one goroutine, pinned to
// a CPU (the last CPUs first), which walks one block at a time, keys each
// packet with flow.Parse and appends it to the stream's spool.Writer
// straight from the block; there is no batch and no writer goroutine. The
// kernel fills the other blocks meanwhile, so the blocks
// (AFPacketBlocks of AFPacketBlockSize) are what rides out a slow disk,
// as the UMEM does for AF_XDP; when all are full the kernel drops and
// counts (PACKET_STATISTICS, QueueStats.Ring). The reader flushes when no
// block follows within one poll interval (10 ms) and at least every
// FlushInterval; blocks retire after at most min(50 ms, FlushInterval/2),
// so packets are queryable within about 100 ms. VLAN tags the kernel
// strips are put back from the ring's headers (package afpacket).
// Timestamps are the kernel's receive times. With Config.XDPObserve or
// drop rules, the XDP program also runs in observe mode on the interface;
// its counters join InterfaceStats, its new-flow records are read and
// counted, and its drop rules act before the rings.
//
// # Cutoff
//
// With Config.Cutoff, the kernel stores only the first bytes or packets of
// each connection (docs/bpf.md, "Cutoff"): on the XDP path the XDP program
// drops the rest, on the AF_PACKET path the program's socket filter,
// attached to every ring in place of the classic snap length filter,
// filters it out (the program and its maps are loaded and pinned even
// without XDPObserve; in observe mode the XDP program does not cut). Per
// interface a cut reporter reads the program's cut_conns ring buffer and,
// about once a second and at Close, hands each cut connection's new cut
// counts, per direction, to the spool ((*spool.Spool).LiveIndex, index.Builder.AddCut).
// SuspendCutoff stores the matching connections whole from then on;
// CutoffStats and InterfaceStats count what was cut.
//
// # Life cycle and ownership
//
// Start sets everything up before any goroutine runs, and undoes it all on
// error. It first checks that every interface exists (CheckInterfaces: an
// *InterfaceError, ErrNoInterface, naming the missing one), so a typo is
// never reported as a capture method failing. The Capture owns the programs, sockets, AF_PACKET rings, ring
// buffer readers and spool writers it created; the spool belongs to the
// caller. Close detaches
// the programs first (so nothing new arrives), lets the receive loops drain
// their rings and the writers store everything and Close their spool
// writers, which seals the indexes, then closes the sockets and removes the
// pins: after Close nothing of the capture is left in the kernel. An
// AF_PACKET ring cannot be detached: its reader stores what the ring holds
// at Close (the filled blocks and the one being filled), then the ring is
// closed. Pins left
// by a crashed run are taken over by the next Start (xdp.LoadProgram).
//
// # Counters
//
// Nothing is dropped silently: Stats reports, per interface, the XDP
// program's counters (redirect failures, ring buffer records lost, frames
// over the snap length, drop rules) and, per queue, packets and bytes
// received, stored, spool write failures (the packet is lost and counted),
// keys parsed and taken through flow ids, writer stalls and the socket's XDP_STATISTICS or the
// AF_PACKET ring's PACKET_STATISTICS (stenod_afpacket_* metrics).
// Collectors exports the same figures to Prometheus.
package capture
