// Package afpacket reads packets from a network interface through an
// AF_PACKET socket with a TPACKET_V3 receive ring, in pure Go.
//
// It is stenod's second capture reader, beside xdp/: on virtual NICs (veth,
// virtio) AF_XDP only runs in copy mode and is slower than AF_PACKET, so a
// sensor on such a port captures through this package instead.
//
// # What the package owns
//
// A Ring owns one packet socket and the memory the kernel shares with it
// (the mmapped ring of blocks). Close releases both; nothing else does, and
// the kernel drops the socket's promiscuous-mode membership and fanout group
// membership when the socket closes. The package sets no thread affinity, no
// interface offloads and no BPF program besides the snap-length filter, or
// the eBPF socket filter the caller passes in its place (Options.BPFFilterFD,
// stenod's cutoff: xdp.Program.SocketFilter); the kernel holds that one
// while the socket is open. The caller pins its reader goroutine and tunes
// the interface (turn GRO/LRO off on a capture port, or the ring sees merged
// super-frames instead of the frames that crossed the wire).
//
// # Reading
//
// The kernel fills one block of packets at a time and hands it to user space
// when the block is full or, on a quieter link, one to two BlockTimeouts after
// it opened.
// Next waits for the next block, calls fn once per packet in arrival order,
// and hands the block back to the kernel when fn has seen all of it. Blocks
// are the unit of ownership, so a slow consumer holds at most one block while
// the kernel keeps filling the others; when all blocks are held, the kernel
// drops and counts (Stats.Drops), it never blocks the network stack.
//
// Packet.Data aliases the ring (or the Ring's VLAN scratch buffer): it is
// valid only until fn returns. Copy what must outlive fn.
//
// # VLAN tags
//
// The kernel removes the outermost 802.1Q (0x8100) or 802.1ad (0x88a8) tag of
// every received frame before any packet socket sees it (skb_vlan_untag in
// __netif_receive_skb_core), and reports it in the packet header instead. It
// does so whatever the NIC's rx-vlan-offload setting says: on veth the tag is
// stripped with `ethtool -K IF rxvlan on` and with `off` alike, and priority
// tags (VID 0) are stripped too. Next puts the tag back where it was, after
// the two MAC addresses, so Data and OrigLen are the frame as it crossed the
// wire; SnapLen counts the re-inserted tag. Inner tags, and outer tags with
// TPIDs the kernel does not treat as VLAN (0x9100), stay in the frame data
// untouched.
//
// # Requirements
//
// Linux 4.20 or later (PACKET_IGNORE_OUTGOING; TPACKET_V3 dates from 3.2 and
// the tag's TPID in the header from 3.14), CAP_NET_RAW, and for fanout groups
// the same Options.Fanout on every member.
//
// # Errors
//
// Open returns errors that name the interface and the step that failed and
// wrap the system call's errno (errors.Is(err, unix.EPERM) without
// CAP_NET_RAW, unix.ENODEV for a missing interface). Next returns ctx.Err()
// when ctx ends, ErrClosed after Close, fn's error unchanged, and a wrapped
// errno for socket errors: unix.ENETDOWN when the interface went down, after
// which Next may be called again and resumes once the interface is up.
package afpacket
