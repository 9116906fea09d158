//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/stenod/stenod/xdp"
)

// XDP actions.
const (
	xdpDrop = 1
	xdpPass = 2
)

// attachDrop attaches a program that drops every frame to iface in native
// mode: the baseline of how fast the sender can go when nothing is copied.
func attachDrop(iface string, c *cleanups) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "capbench_drop", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpDrop), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load drop program: %w", err)
	}
	l, err := attachNative(prog, iface)
	prog.Close()
	if err != nil {
		return err
	}
	c.push("xdp drop program", l.Close)
	return nil
}

func attachNative(prog *ebpf.Program, iface string) (link.Link, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach XDP to %s: %w", iface, err)
	}
	return l, nil
}

// xskCounters is what the xskcount child reports for each line it reads.
type xskCounters struct {
	Packets              uint64
	RxDropped            uint64
	RxRingFull           uint64
	RxFillRingEmptyDescs uint64
	RxInvalidDescs       uint64
}

// xskCount is the minimal redirect-and-count consumer, run as a child
// process ("capbench xskcount") so that its CPU time is measured like
// stenod's: a program that redirects every frame into the AF_XDP socket of
// its RX queue, one copy-mode socket per queue, and one goroutine per
// socket that only counts and gives the frames back. It prints "ready",
// then one JSON line of counters for each line read from stdin, and ends on
// SIGINT, SIGTERM or end of input.
func xskCount(args []string) error {
	fs := flag.NewFlagSet("xskcount", flag.ExitOnError)
	iface := fs.String("iface", "", "interface")
	coalesce := fs.Duration("coalesce", 0, "after draining the ring, sleep this long before looking again (stenod's rxCoalesce); 0: poll at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ifc, err := net.InterfaceByName(*iface)
	if err != nil {
		return err
	}
	queues, err := xdp.RxQueueCount(*iface)
	if err != nil {
		return err
	}
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Name: "capbench_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		return fmt.Errorf("xsks map: %w", err)
	}
	defer xsks.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "capbench_redir", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // xdp_md.rx_queue_index
			asm.LoadMapPtr(asm.R1, xsks.FD()),
			asm.Mov.Imm(asm.R3, xdpPass), // no socket: pass
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load redirect program: %w", err)
	}
	defer prog.Close()

	opts := xdp.DefaultSocketOptions()
	opts.Mode = xdp.SocketModeCopy
	opts.MetaLen = 0
	var socks []*xdp.Socket
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for q := range queues {
		s, err := xdp.NewSocket(ifc.Index, q, opts)
		if err != nil {
			return fmt.Errorf("queue %d: %w", q, err)
		}
		socks = append(socks, s)
		if err := xsks.Update(uint32(q), uint32(s.FD()), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("xsks map: %w", err)
		}
	}
	l, err := attachNative(prog, *iface)
	if err != nil {
		return err
	}
	defer l.Close()

	sigctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(sigctx)
	defer cancel()
	var packets atomic.Uint64
	errc := make(chan error, len(socks))
	for _, s := range socks {
		go func() {
			batch := make([]xdp.Desc, 256)
			if *coalesce <= 0 {
				errc <- s.Run(ctx, batch, func(b []xdp.Desc) error {
					packets.Add(uint64(len(b)))
					return nil
				})
				return
			}
			errc <- countCoalesced(ctx, s, batch, *coalesce, &packets)
		}()
	}
	report := func() error {
		c := xskCounters{Packets: packets.Load()}
		for _, s := range socks {
			st, err := s.Stats()
			if err != nil {
				return err
			}
			c.RxDropped += st.RxDropped
			c.RxRingFull += st.RxRingFull
			c.RxFillRingEmptyDescs += st.RxFillRingEmptyDescs
			c.RxInvalidDescs += st.RxInvalidDescs
		}
		return json.NewEncoder(os.Stdout).Encode(c)
	}
	fmt.Println("ready")
	lines := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- struct{}{}
		}
		cancel()
	}()
	for {
		select {
		case <-ctx.Done():
			var errs []error
			for range socks {
				errs = append(errs, <-errc)
			}
			return errors.Join(errs...)
		case err := <-errc:
			return err
		case <-lines:
			if err := report(); err != nil {
				return err
			}
		}
	}
}

// countCoalesced is Socket.Run with stenod's receive discipline: once the
// ring is drained after taking packets, sleep for coalesce instead of
// polling at once, so packets gather in the ring; poll only when idle.
func countCoalesced(ctx context.Context, s *xdp.Socket, batch []xdp.Desc, coalesce time.Duration, packets *atomic.Uint64) error {
	took := false
	for ctx.Err() == nil {
		n, err := s.Receive(batch)
		if err != nil {
			return err
		}
		if n > 0 {
			packets.Add(uint64(n))
			if err := s.Release(batch[:n]); err != nil {
				return err
			}
			took = true
			continue
		}
		if took {
			took = false
			time.Sleep(coalesce)
			continue
		}
		if _, err := s.Poll(100 * time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}
