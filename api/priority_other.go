//go:build !linux

package api

// lowerPriority does nothing where stenod does not capture: there is no
// capture thread to protect.
func lowerPriority() error { return nil }
