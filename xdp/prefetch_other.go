//go:build linux && !amd64

package xdp

// Prefetch does nothing here: the prefetch is written for amd64 only.
func (s *Socket) Prefetch(descs []Desc) {}
