//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
)

// PinnedStatus is what the pins of one interface say about a running (or
// stopped but not cleaned up) sensor, read without loading anything.
type PinnedStatus struct {
	Interface string
	PinDir    string
	Stats     ProgramStats
	// Flows is the number of entries in the flows map (at most MaxEntries):
	// the flows seen recently, as the LRU map evicts the least recent.
	Flows, MaxFlows int
	// Attached: the link pin exists, so the program is attached.
	Attached bool
}

// PinnedInterfaces lists the interfaces with pins under root.
func PinnedInterfaces(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pins %s: %w", root, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// ReadPinned reads the counters and the flow table size of an interface's
// pinned maps, read-only.
func ReadPinned(root, iface string) (PinnedStatus, error) {
	dir := filepath.Join(root, iface)
	st := PinnedStatus{Interface: iface, PinDir: dir}
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	stats, err := ebpf.LoadPinnedMap(pinPath(dir, PinStats), ro)
	if err != nil {
		return st, fmt.Errorf("open %s: %w", pinPath(dir, PinStats), err)
	}
	defer stats.Close()
	if st.Stats, err = readStats(stats); err != nil {
		return st, fmt.Errorf("read %s: %w", pinPath(dir, PinStats), err)
	}
	flows, err := ebpf.LoadPinnedMap(pinPath(dir, PinFlows), ro)
	if err != nil {
		return st, fmt.Errorf("open %s: %w", pinPath(dir, PinFlows), err)
	}
	defer flows.Close()
	st.MaxFlows = int(flows.MaxEntries())
	var key, val []byte
	it := flows.Iterate()
	for it.Next(&key, &val) {
		st.Flows++
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read %s: %w", pinPath(dir, PinFlows), err)
	}
	_, err = os.Stat(pinPath(dir, PinLink))
	st.Attached = err == nil
	return st, nil
}
