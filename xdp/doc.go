// Package xdp is stenod's capture path in the kernel and right above it: the
// XDP program and its loader (program*.go, pin*.go, meta*.go, with the C in
// bpf/ and the generated bindings in gen/), and the AF_XDP sockets the
// program redirects packets to (xsk*.go, umem.go). It is the only package
// that uses golang.org/x/sys/unix for raw AF_XDP ring handling.
//
// # Sockets
//
// A Socket is one AF_XDP socket bound to one RX queue, receive only, with
// its own UMEM (no shared UMEM between queues). NewSocket registers the UMEM,
// creates and maps the fill, completion and RX rings, puts every frame in
// the fill ring and binds. It does not touch the XSKMAP: the loader stores
// FD() at the queue's index, and the XDP program redirects with
// bpf_redirect_map(xsks, rx_queue_index, XDP_PASS).
//
// A worker, usually pinned with PinToCPU, either calls Run with a handler,
// or loops over Receive (non-blocking), Poll (blocking, with a timeout) and
// Release itself when it needs to hold frames across calls. Neither path
// allocates per packet. Frames returned by Receive alias the UMEM and stay
// valid until their descriptors are passed to Release; the kernel reuses
// them after that.
//
// A packet is one descriptor, or with multi-buffer (XDP_USE_SG) a run of
// descriptors whose last one has More() false; Receive never splits a run
// across batches. SocketPacket walks a batch packet by packet. The packet's
// metadata (what the XDP program wrote with bpf_xdp_adjust_meta, MetaLen
// bytes) sits right before the first descriptor's data: Meta(d).
//
// # Cutoff
//
// ProgramConfig.Cutoff limits what is stored of each connection, decided
// in the kernel (docs/bpf.md, "Cutoff"): by the XDP program in redirect
// mode, and by the socket filter (SocketFilter) that afpacket attaches to
// its rings; LoadProgram with ProgramOptions.NoXDP loads and pins the maps
// for the socket filter without attaching the XDP program. ConnKey is the
// kernel's connection key in Go and CutoffModel its whole decision;
// LookupConn, SuspendConns, CutoffStats and CutConns read and steer the
// kernel's connection table.
//
// # Ownership
//
// The Socket owns its file descriptor, its ring mappings and its UMEM;
// Close releases all of them, joining every error, and closing the socket
// removes it from any XSKMAP. FD() is borrowed, never to be closed by the
// caller. Receive, Release, Poll and Run belong to one goroutine; Stats and
// FD may be called from others while the socket is open; nothing may run
// concurrently with Close.
//
// # Errors
//
//   - NewSocket: "socket options: ..." for options that cannot work; else
//     the syscall that failed, wrapped. In SocketModeAuto a zero-copy
//     refusal is not an error: the socket binds in copy mode and
//     FallbackReason returns the refusal (EOPNOTSUPP on veth and in generic
//     XDP). When every attempt fails, the error joins all of them.
//   - ErrSocketClosed: a method was called after Close.
//   - ErrSocketDetached: the interface went away (deleted, moved to another
//     namespace); the socket receives nothing more and should be closed.
//     Poll finds out when it times out, Receive and Release when the kernel
//     asks for a wakeup.
//   - ErrSocketBatchTooSmall: a multi-buffer packet has more descriptors
//     than the batch; use batches of at least SocketMaxFragments.
//   - ErrSocketFillRingFull: more frames released than received (a double
//     release).
//
// Drops are not errors: Stats returns the kernel's counters, to be exported.
//
// # Kernel behaviour relied on (verified on 6.18 by xsk_test.go)
//
//   - Metadata: the 256 bytes of XDP_PACKET_HEADROOM are reserved before
//     the packet in every UMEM chunk, and bpf_xdp_adjust_meta takes its
//     space from them, so no user headroom is needed. In copy mode the
//     kernel copies the metadata along with the packet (veth native XDP
//     and generic XDP both tested); in zero-copy mode the driver runs XDP
//     on the chunk itself, so the metadata is already in place.
//   - Multi-buffer: XDP_USE_SG is accepted in copy mode (since 6.6) and a
//     9014-byte frame on veth with MTU 9000 arrives as three descriptors of
//     at most FrameSize-256 bytes (3840 with 4 KiB frames), with metadata
//     before the first. The XDP program must be loaded with
//     BPF_F_XDP_HAS_FRAGS (SEC("xdp.frags")): without it veth refuses to
//     attach when the MTU is above a page (ERANGE). Without XDP_USE_SG a
//     packet longer than FrameSize-256-Headroom is dropped and counted in
//     SocketStats.RxDropped; nothing truncates it.
//   - The kernel publishes new RX descriptors before it publishes that it
//     took their frames from the fill ring, so Release may briefly find
//     fewer free fill slots than frames it returns; it parks the surplus
//     and hands it over on the next call.
//   - Zero-copy needs driver support: veth and generic XDP refuse it with
//     EOPNOTSUPP. A failed bind leaves the UMEM and rings registered, so
//     auto mode retries copy mode on the same socket, as the kernel itself
//     does when bound without XDP_COPY or XDP_ZEROCOPY.
//
// Minimum kernel: 5.4 (need_wakeup, ring flags); 5.9 for the full
// statistics; 6.6 for multi-buffer, without which sockets bind without it.
package xdp
