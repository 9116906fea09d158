// Package flow defines the flow key that stenod indexes packets by, and the Go
// packet parser that derives it from an Ethernet frame.
//
// The XDP program in bpf/ derives the same key in the kernel; the two parsers
// must agree byte for byte on every frame (tested through BPF_PROG_TEST_RUN).
// Key's memory layout is therefore part of the contract: it is the key of the
// pinned `flows` map and the payload of the new-flow ringbuf record.
//
// The package owns no resources and returns no errors: a frame that does not
// parse still has a key (with fewer flags set), because every packet is stored.
package flow
