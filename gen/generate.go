// Package gen holds the XDP program compiled from bpf/stenod.c and the Go
// bindings bpf2go generated for it (stenod_bpfel.go, stenod_bpfel.o). Both
// are committed, so building stenod needs no clang.
//
// Regenerate with `make generate` after changing bpf/; CI runs it and fails
// if gen/ then differs from the commit. The compiler is pinned (clang-14) and
// so are the flags, because the .o must come out byte for byte the same.
// -mcpu=v3 (32-bit jumps and ALU, kernel 5.1+) gives smaller code that the
// verifier follows more easily; the program needs 6.1 anyway.
//
// Use package xdp, not this one: xdp loads, pins and attaches the objects.
package gen

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -go-package gen -output-stem stenod -type flow_key -type flow_value -type new_flow -type packet_meta -type config_value -type drop_rule -type stat -type mode -type flow_flag -type drop_rule_flag -type cutoff_config -type cutoff_match -type conn_value -type conn_flag -type cut_conn -type cut_count Stenod ../bpf/stenod.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
