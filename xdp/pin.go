//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinRoot is the bpffs directory holding one directory of pins per
// interface.
const DefaultPinRoot = "/sys/fs/bpf/stenod"

// Names of the pins in PinRoot/<interface>/ (docs/bpf.md). They are stable:
// bpftool commands and `stenod status` use them. bpffs refuses names with
// dots, so the .bss of the program is not pinned.
const (
	PinFlows    = "flows"     // flows LRU map: flow.Key -> FlowValue
	PinStats    = "stats"     // per-CPU counters, ProgramStats
	PinXSKs     = "xsks"      // RX queue -> AF_XDP socket
	PinConfig   = "config"    // the one config entry
	PinNewFlows = "new_flows" // ring buffer of NewFlowRecord
	PinConns    = "conns"     // cutoff connections: canonical flow.Key -> ConnValue
	PinCutConns = "cut_conns" // ring buffer of CutConnRecord
	PinCutStats = "cut_stats" // per-CPU cut counts per cutoff rule
	PinProgram  = "prog"      // the XDP program
	PinSocket   = "socket"    // the socket filter of AF_PACKET rings
	PinLink     = "link"      // the XDP link attaching prog to the interface
)

// pinNames lists every pin LoadProgram creates, the link last.
var pinNames = []string{PinFlows, PinStats, PinXSKs, PinConfig, PinNewFlows, PinConns, PinCutConns, PinCutStats, PinProgram, PinSocket, PinLink}

func pinPath(dir, name string) string { return filepath.Join(dir, name) }

// pin pins the maps and the program (not the link) into p.pinDir.
func (p *Program) pin() error {
	for _, o := range []struct {
		name string
		pin  func(string) error
	}{
		{PinFlows, p.objs.Flows.Pin},
		{PinStats, p.objs.Stats.Pin},
		{PinXSKs, p.objs.Xsks.Pin},
		{PinConfig, p.objs.Config.Pin},
		{PinNewFlows, p.objs.NewFlows.Pin},
		{PinConns, p.objs.Conns.Pin},
		{PinCutConns, p.objs.CutConns.Pin},
		{PinCutStats, p.objs.CutStats.Pin},
		{PinProgram, p.objs.StenodXdp.Pin},
		{PinSocket, p.objs.StenodSocket.Pin},
	} {
		if err := o.pin(pinPath(p.pinDir, o.name)); err != nil {
			return fmt.Errorf("pin %s: %w", o.name, err)
		}
	}
	return nil
}

// preparePinDir creates root/iface on a bpffs and clears what an earlier run
// left there: its XDP link is detached, its pins removed.
func preparePinDir(root, iface string, log *slog.Logger) (string, error) {
	dir := filepath.Join(root, iface)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create pin directory: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		return "", fmt.Errorf("pin directory %s: %w (mount one: mount -t bpf bpf /sys/fs/bpf)", dir, ErrNotBPFFS)
	}

	linkPin := pinPath(dir, PinLink)
	if _, err := os.Stat(linkPin); err == nil {
		l, err := link.LoadPinnedLink(linkPin, nil)
		if err != nil {
			return "", fmt.Errorf("open earlier link %s: %w", linkPin, err)
		}
		// Detach even if another process still holds the link: this
		// interface is ours now.
		err = errors.Join(l.Detach(), l.Close())
		if err != nil {
			return "", fmt.Errorf("detach earlier link %s: %w", linkPin, err)
		}
		log.Info("detached the XDP program of an earlier run", "iface", iface, "pin", linkPin)
	}
	if err := removePinFiles(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// removePinFiles removes the pins LoadProgram creates in dir, keeping dir.
func removePinFiles(dir string) error {
	var errs []error
	for _, name := range pinNames {
		if err := os.Remove(pinPath(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// removePins removes the pins and dir itself.
func removePins(dir string) error {
	if err := removePinFiles(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pin directory: %w", err)
	}
	return nil
}

// RemovePins deletes root/iface and the pins in it, as Program.Remove does,
// for a cleanup without a Program (after a crash). Removing the link pin of
// a program no process holds any more detaches it. A missing directory is
// not an error.
func RemovePins(root, iface string) error {
	if root == "" {
		root = DefaultPinRoot
	}
	return removePins(filepath.Join(root, iface))
}
