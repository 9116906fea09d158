// Package demotap is stenod run --demo's tap: a veth pair whose host end,
// HostIface, is what stenod captures, and whose far end sits in the network
// namespace Namespace, from where sample traffic is replayed in a loop at a
// modest rate, so a newcomer sees packets flow and can query them at once.
//
// What is replayed: the Ethernet packets that fit the veth's MTU, whole ones
// only, in file order, of the sample captures built into the binary
// (samples/, go:embed: real traffic, see samples/README.md) and of those in
// SystemSamplesDir (/usr/share/stenod/demo) when it exists; or of the pcap
// and pcapng files of Options.Captures instead; or, with Options.Captures
// set to Generated, traffic from internal/trafficgen. Nothing else is read:
// not a checkout's testdata, not the working directory. The packets are sent
// through an AF_PACKET socket created inside the namespace, by a goroutine
// of the calling process (no helper process), and are stamped by the
// capturing kernel when they arrive, so their timestamps are fresh.
//
// Start needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for the namespace,
// CAP_NET_RAW for the socket) and the ip command (iproute2). It removes
// what a crashed demo left (the namespace and the veth) first. Close stops
// the sender and removes the namespace and the veth; nothing is left in
// the kernel afterwards. The XDP pins of the daemon that captured the tap
// are the daemon's, or RemovePins's after a crash.
package demotap
