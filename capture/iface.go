//go:build linux

package capture

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrNoInterface: a configured interface does not exist. The error is an
// *InterfaceError naming it.
var ErrNoInterface = errors.New("no such network interface")

// InterfaceError says which configured interface is missing, and which
// interfaces there are instead (a typo is the usual cause).
type InterfaceError struct {
	Name string
	// Have are the interfaces of this network namespace; nil when they
	// could not be listed.
	Have []string
}

func (e *InterfaceError) Error() string {
	msg := fmt.Sprintf("interface %q: %v", e.Name, ErrNoInterface)
	if len(e.Have) > 0 {
		msg += " (this host has " + strings.Join(e.Have, ", ") + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrNoInterface) true.
func (e *InterfaceError) Is(target error) bool { return target == ErrNoInterface }

// CheckInterfaces returns an *InterfaceError for the first of names that
// is not a network interface of this namespace. Start calls it before it
// tries any capture method, so that a typo is reported as such and not as
// a capture method failing.
func CheckInterfaces(names []string) error {
	for _, name := range names {
		if _, err := net.InterfaceByName(name); err != nil {
			e := &InterfaceError{Name: name}
			if ifs, err := net.Interfaces(); err == nil {
				for _, ifc := range ifs {
					e.Have = append(e.Have, ifc.Name)
				}
			}
			return e
		}
	}
	return nil
}
