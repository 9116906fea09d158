module github.com/stenod/stenod

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0 // indirect
	github.com/go-chi/chi/v5 v5.5.0 // indirect
	github.com/google/gopacket v1.1.19 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/term v0.48.0 // indirect
)
