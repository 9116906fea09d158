package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/stenod/stenod/internal/ifacelock"
	"github.com/stenod/stenod/xdp"
)

func cmdStatus(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "status", "[INTERFACE...]", "Shows a running sensor's capture counters, read from the XDP program's pinned\nmaps (the same maps 'bpftool map dump pinned' shows; see docs/bpf.md).")
	pinRoot := fs.String("pin-root", xdp.DefaultPinRoot, "bpffs `directory` of the pinned XDP objects")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ifaces := fs.Args()
	if len(ifaces) == 0 {
		var err error
		if ifaces, err = xdp.PinnedInterfaces(*pinRoot); err != nil {
			return err
		}
		if len(ifaces) == 0 {
			return fmt.Errorf("no pinned XDP objects under %s: is stenod running (with the XDP program)?", *pinRoot)
		}
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "interface\tsensor pid\tattached\tpackets\tbytes\tredirected\tpassed\tno socket\tno meta\tringbuf lost\trule drops\tover snap\tflows\t")
	for _, ifc := range ifaces {
		st, err := xdp.ReadPinned(*pinRoot, ifc)
		if err != nil {
			return err
		}
		// The sensor capturing it (its interface lock), "-" for pins a
		// dead sensor left.
		sensor := "-"
		if pid, _, err := ifacelock.HolderOf("", ifc); err == nil && pid != 0 {
			sensor = strconv.Itoa(pid)
		}
		s := st.Stats
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d/%d\t\n", ifc, sensor, st.Attached, s.Packets, s.Bytes,
			s.Redirected, s.Passed, s.RedirectFailed, s.MetaFailed, s.RingBufFull, s.DroppedByRule, s.OverSnapLen, st.Flows, st.MaxFlows)
	}
	return tw.Flush()
}
