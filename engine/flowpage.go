package engine

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/query"
	"github.com/stenod/stenod/spool"
)

// IfaceFlow is a flow as one capture interface saw it: a FlowRecord summed
// over the spool files of that interface only. The same key seen on two
// interfaces (two taps of one link, or a span port and a tap) is two
// IfaceFlows, so an analyst can tell where packets were captured.
type IfaceFlow struct {
	FlowRecord
	Iface string
}

// FlowSort is a column a FlowPage answer can be ordered by.
type FlowSort string

// The orders of FlowPage. Ties are broken by bytes (most first), then by
// first seen, key and interface, so paging through an answer sees each flow
// exactly once.
const (
	SortBytes   FlowSort = "bytes"
	SortPackets FlowSort = "packets"
	SortFirst   FlowSort = "first"
	SortLast    FlowSort = "last"
	SortSrc     FlowSort = "src" // address, then port
	SortDst     FlowSort = "dst"
	SortSport   FlowSort = "sport"
	SortDport   FlowSort = "dport"
	SortProto   FlowSort = "proto"
	SortVLAN    FlowSort = "vlan"
	SortIface   FlowSort = "iface"
)

// FlowSorts lists the valid FlowSort values, for messages and docs.
var FlowSorts = []FlowSort{SortBytes, SortPackets, SortFirst, SortLast, SortSrc, SortDst, SortSport, SortDport, SortProto, SortVLAN, SortIface}

// ParseFlowSort checks a sort column's name.
func ParseFlowSort(s string) (FlowSort, error) {
	for _, f := range FlowSorts {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(FlowSorts))
	for i, f := range FlowSorts {
		names[i] = string(f)
	}
	return "", fmt.Errorf("sort %q: want one of %s", s, strings.Join(names, ", "))
}

// FlowPageOptions choose the slice of the answer FlowPage returns.
type FlowPageOptions struct {
	Sort FlowSort // default SortBytes
	Desc bool     // descending
	// Offset flows of the sorted answer are skipped, then at most Limit
	// are returned (0: all).
	Offset, Limit int
}

// FlowPageResult is one page of the flows matching a query.
type FlowPageResult struct {
	Flows []IfaceFlow
	// Total is how many flows (key and interface) matched in all.
	Total int
}

// FlowPage returns the flows with packets matching q, aggregated per key and
// capture interface, sorted as opts says, and the page opts chooses. Every
// matching flow is aggregated and sorted for each page: the cost is that of
// Flows, whatever the page.
func FlowPage(ctx context.Context, sp *spool.Spool, q *query.Query, opts FlowPageOptions) (FlowPageResult, error) {
	type aggKey struct {
		key   flow.Key
		iface string
	}
	// The flows in a slice, found by key through a map of indexes: no
	// allocation per flow beyond the slice's growth.
	at := map[aggKey]int32{}
	var all []IfaceFlow
	err := scanFlows(ctx, sp, q, func(h *spool.Handle, k *flow.Key, c *counts) {
		ak := aggKey{*k, h.Interface}
		i, ok := at[ak]
		if !ok {
			i = int32(len(all))
			at[ak] = i
			all = append(all, IfaceFlow{FlowRecord: FlowRecord{Key: *k, First: c.first, Last: c.last}, Iface: h.Interface})
		}
		all[i].add(c)
	})
	if err != nil {
		return FlowPageResult{}, err
	}
	by := flowOrder(opts.Sort)
	compare := func(a, b *IfaceFlow) int {
		c := by(a, b)
		if opts.Desc {
			c = -c
		}
		return cmp.Or(c, cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.First, b.First),
			compareKeys(&a.Key, &b.Key), strings.Compare(a.Iface, b.Iface))
	}
	res := FlowPageResult{Total: len(all)}
	start := min(max(opts.Offset, 0), len(all))
	end := len(all)
	if opts.Limit > 0 {
		end = min(end, start+opts.Limit)
	}
	// Only the first end flows in order are needed: a page of a table of
	// millions selects them with a bounded heap, O(n log end), instead of
	// sorting all n.
	first := firstInOrder(all, end, compare)
	res.Flows = first[start:end:end]
	return res, nil
}

// firstInOrder returns the n smallest of all under compare, sorted. It
// reorders all.
func firstInOrder(all []IfaceFlow, n int, compare func(a, b *IfaceFlow) int) []IfaceFlow {
	if n >= len(all)/4 {
		slices.SortFunc(all, func(a, b IfaceFlow) int { return compare(&a, &b) })
		return all[:n]
	}
	// A max-heap of the n smallest seen so far, as indexes into all.
	h := make([]int32, 0, n)
	greater := func(i, j int) bool { return compare(&all[h[i]], &all[h[j]]) > 0 }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			if r := l + 1; r < len(h) && greater(r, l) {
				l = r
			}
			if !greater(l, i) {
				return
			}
			h[i], h[l] = h[l], h[i]
			i = l
		}
	}
	for x := range all {
		switch {
		case len(h) < n:
			h = append(h, int32(x))
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !greater(i, p) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
		case n > 0 && compare(&all[x], &all[h[0]]) < 0:
			h[0] = int32(x)
			down(0)
		}
	}
	out := make([]IfaceFlow, len(h))
	for i, x := range h {
		out[i] = all[x]
	}
	slices.SortFunc(out, func(a, b IfaceFlow) int { return compare(&a, &b) })
	return out
}

// flowOrder returns the ascending comparison of a sort column.
func flowOrder(s FlowSort) func(a, b *IfaceFlow) int {
	switch s {
	case SortPackets:
		return func(a, b *IfaceFlow) int { return cmp.Compare(a.Packets, b.Packets) }
	case SortFirst:
		return func(a, b *IfaceFlow) int { return cmp.Compare(a.First, b.First) }
	case SortLast:
		return func(a, b *IfaceFlow) int { return cmp.Compare(a.Last, b.Last) }
	case SortSrc:
		return func(a, b *IfaceFlow) int {
			return cmp.Or(a.Key.SrcAddr().Compare(b.Key.SrcAddr()), cmp.Compare(port(&a.Key, true), port(&b.Key, true)))
		}
	case SortDst:
		return func(a, b *IfaceFlow) int {
			return cmp.Or(a.Key.DstAddr().Compare(b.Key.DstAddr()), cmp.Compare(port(&a.Key, false), port(&b.Key, false)))
		}
	case SortSport:
		return func(a, b *IfaceFlow) int { return cmp.Compare(port(&a.Key, true), port(&b.Key, true)) }
	case SortDport:
		return func(a, b *IfaceFlow) int { return cmp.Compare(port(&a.Key, false), port(&b.Key, false)) }
	case SortProto:
		return func(a, b *IfaceFlow) int { return cmp.Compare(proto(&a.Key), proto(&b.Key)) }
	case SortVLAN:
		return func(a, b *IfaceFlow) int {
			return cmp.Or(cmp.Compare(vlan(&a.Key, 0), vlan(&b.Key, 0)), cmp.Compare(vlan(&a.Key, 1), vlan(&b.Key, 1)))
		}
	case SortIface:
		return func(a, b *IfaceFlow) int { return strings.Compare(a.Iface, b.Iface) }
	}
	return func(a, b *IfaceFlow) int { return cmp.Compare(a.Bytes, b.Bytes) }
}

// port is a key's source or destination port, -1 without ports, so that
// flows without ports sort before port 0.
func port(k *flow.Key, src bool) int {
	switch {
	case k.Flags&flow.FlagPorts == 0:
		return -1
	case src:
		return int(k.SrcPort)
	}
	return int(k.DstPort)
}

// proto is a key's IP protocol, -1 for frames that are not IP.
func proto(k *flow.Key) int {
	if !k.IsIP() {
		return -1
	}
	return int(k.Proto)
}

// vlan is a key's outer (i 0) or inner (1) VLAN tag, -1 without one.
func vlan(k *flow.Key, i int) int {
	if k.Flags&(flow.FlagVLAN0<<i) == 0 {
		return -1
	}
	return int(k.VLAN[i])
}
