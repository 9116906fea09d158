//go:build linux

package capture

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckInterfaces: an existing interface passes; a missing one is an
// ErrNoInterface naming it and listing the interfaces there are.
func TestCheckInterfaces(t *testing.T) {
	if err := CheckInterfaces([]string{"lo"}); err != nil {
		t.Fatalf("lo: %v", err)
	}
	err := CheckInterfaces([]string{"lo", "eht1"})
	if !errors.Is(err, ErrNoInterface) {
		t.Fatalf("eht1: %v, want ErrNoInterface", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, `interface "eht1": no such network interface (this host has `) || !strings.Contains(msg, "lo") {
		t.Errorf("message %q", msg)
	}
}

// TestStartMissingInterface: Start says which interface is missing before
// it tries a capture method.
func TestStartMissingInterface(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interfaces = []string{"eht1"}
	_, err := Start(t.Context(), cfg, nil, nil)
	if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), `interface "eht1"`) {
		t.Errorf("Start: %v", err)
	}
}
