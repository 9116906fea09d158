//go:build linux

package capture

import (
	"errors"
	"fmt"
)

// ErrDetached: an interface's XDP program was detached by someone else
// (bpftool link detach, the interface removed), so nothing arrives from it
// any more.
var ErrDetached = errors.New("XDP program detached: nothing is captured")

// Health returns nil while every interface's capture is set up as Start
// left it; otherwise an error naming each interface whose XDP program is
// no longer attached (errors.Is ErrDetached). After Close it returns nil.
// Safe from any goroutine; cheap (one bpf(2) call per XDP interface).
func (c *Capture) Health() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	var errs []error
	for _, ic := range c.ifaces {
		x, ok := ic.att.(*xdpIface)
		if !ok || x.prog == nil || x.detached {
			continue
		}
		attached, err := x.prog.Attached()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("capture on %s: %w", ic.name, err))
		case !attached:
			errs = append(errs, fmt.Errorf("capture on %s: %w", ic.name, ErrDetached))
		}
	}
	return errors.Join(errs...)
}
