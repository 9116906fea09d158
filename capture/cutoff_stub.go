//go:build linux

package capture

import (
	"errors"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/xdp"
)

// This file stands in for the kernel side of the per-connection cutoff
// (cutoff-contract.md), so that config, api and cmd build against its
// interface; the real methods replace it.

// InterfaceCutoff is one interface's cutoff counters.
type InterfaceCutoff struct {
	Name  string
	Stats xdp.CutoffStats
}

// errCutoffStub: this build has the cutoff's interface only.
var errCutoffStub = errors.New("capture: the per-connection cutoff is not built into this version")

// SuspendCutoff stops cutting every connection match reports true for, on
// every interface, and returns how many it suspended.
func (c *Capture) SuspendCutoff(match func(k *flow.Key) bool) (int, error) {
	return 0, errCutoffStub
}

// CutoffStats returns every interface's cutoff counters.
func (c *Capture) CutoffStats() []InterfaceCutoff { return nil }
