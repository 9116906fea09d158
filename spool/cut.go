package spool

import "github.com/stenod/stenod/flow"

// AddCut records that the kernel's cutoff did not store packets packets,
// bytes bytes on the wire, of the flow k (directional) captured on iface,
// the latest of them at ts (Unix ns). Implemented by the index's cut counts.
func (s *Spool) AddCut(iface string, k *flow.Key, packets, bytes uint64, ts int64) {}
