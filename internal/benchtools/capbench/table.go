//go:build linux

package main

import (
	"fmt"
	"strings"
	"time"
)

func printTable(o *options, mixes []traffic, results []*result, live []row) {
	g, c := o.cpus(1)
	fmt.Printf("Capture on a veth pair, %v per run, %s: trafgen on CPU %d and the capturer on CPU %d at the generator's maximum; at a limited rate trafgen on CPU %d and the capturer on CPU %d.\n\n",
		o.duration, time.Now().Format("2006-01-02"), o.genCPU, o.capCPU, g, c)
	fmt.Printf("Memory: %s.\n\n", o.pageNote)
	for _, t := range mixes {
		fmt.Printf("- %s: %s, mean frame %.0f bytes\n", t.name, t.desc, t.avgLen)
	}
	fmt.Println()
	fmt.Println("| capture | traffic | offered | sender rate | sent | captured | lost | drop counters | CPU per captured packet | capturer CPU |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("| %s | %s | %s | n/a: %s | | | | | | |\n", r.config, r.traffic, offered(r.rate), oneLine(r.err.Error()))
			continue
		}
		captured, lost, drops, cpu, util := "-", "-", "-", "-", "-"
		if r.hasCapture {
			captured = fmt.Sprint(r.cnt.captured)
			lost = fmt.Sprint(r.lost())
			drops = r.cnt.dropNote()
			cpu = perPacket(r)
			util = fmt.Sprintf("%.0f%% of a core", 100*r.cpu.Seconds()/r.gen.wall.Seconds())
		}
		if r.gen.generated > r.gen.sent {
			drops += fmt.Sprintf(" (trafgen counted %d more than the veth sent)", r.gen.generated-r.gen.sent)
		}
		if r.gen.vethDropped != 0 {
			drops += fmt.Sprintf(" veth_tx_dropped=%d", r.gen.vethDropped)
		}
		sender := fmt.Sprintf("%.3f Mpps", r.gen.rate/1e6)
		if r.runs != "" {
			sender += " (" + r.runs + ")"
		}
		fmt.Printf("| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n",
			r.config, r.traffic, offered(r.rate), sender, r.gen.sent, captured, lost, drops, cpu, util)
	}

	var rows []row
	find := func(cfg, t string) *result {
		for _, r := range results {
			if r.config == cfg && r.traffic == t && r.rate == 0 && r.err == nil {
				return r
			}
		}
		return nil
	}
	for _, t := range mixes {
		drop, xsk, td := find("xdp-drop", t.name), find("xsk-count", t.name), find("tcpdump", t.name)
		for _, cfg := range []string{"xsk-count", "xsk-coalesce", "tcpdump", "stenod-xdp", "stenod-afpacket", "stenod-afpacket-ipfix"} {
			best, lossy, seen := zeroLossRate(results, cfg, t.name)
			if !seen {
				continue
			}
			v := "none of the rates run"
			if best > 0 {
				v = fmt.Sprintf("%.3f Mpps", best/1e6)
			}
			note := "no run lost packets"
			if lossy > 0 {
				note = fmt.Sprintf("highest zero-loss sender rate below the lowest that lost (%.3f Mpps)", lossy/1e6)
			}
			rows = append(rows, row{fmt.Sprintf("%s %s: zero-loss rate", t.name, cfg), v, note + "; of the rates run (max and -rates)"})
		}
		if drop != nil && xsk != nil {
			rows = append(rows, row{t.name + " xsk-count / xdp-drop sender max", pct(xsk.gen.rate, drop.gen.rate), fmt.Sprintf("%.3f / %.3f Mpps", xsk.gen.rate/1e6, drop.gen.rate/1e6)})
		}
		if drop != nil && td != nil {
			rows = append(rows, row{t.name + " tcpdump / xdp-drop sender max", pct(td.gen.rate, drop.gen.rate), fmt.Sprintf("%.3f / %.3f Mpps", td.gen.rate/1e6, drop.gen.rate/1e6)})
		}
		if xc := find("xsk-coalesce", t.name); xc != nil && td != nil && td.cnt.captured > 0 && xc.cnt.captured > 0 {
			ratio := (xc.cpu.Seconds() / float64(xc.cnt.captured)) / (td.cpu.Seconds() / float64(td.cnt.captured))
			rows = append(rows, row{fmt.Sprintf("%s xsk-coalesce / tcpdump CPU per packet", t.name), fmt.Sprintf("%.2fx", ratio), fmt.Sprintf("%s vs %s; the least an AF_XDP copy-mode consumer with stenod's wakeups costs", perPacket(xc), perPacket(td))})
		}
		if on, off := find("stenod-afpacket-ipfix", t.name), find("stenod-afpacket", t.name); on != nil && off != nil && on.cnt.captured > 0 && off.cnt.captured > 0 {
			ratio := (on.cpu.Seconds() / float64(on.cnt.captured)) / (off.cpu.Seconds() / float64(off.cnt.captured))
			rows = append(rows, row{fmt.Sprintf("%s stenod-afpacket with / without IPFIX export, CPU per packet", t.name), fmt.Sprintf("%.3fx", ratio),
				fmt.Sprintf("%s vs %s; target < 1.05x (issue 16)", perPacket(on), perPacket(off))})
		}
		for _, cfg := range []string{"stenod-xdp", "stenod-afpacket"} {
			s := find(cfg, t.name)
			if s == nil {
				continue
			}
			if xsk != nil {
				note := "for comparison"
				rows = append(rows, row{fmt.Sprintf("%s %s / xsk-count sender max", t.name, cfg), pct(s.gen.rate, xsk.gen.rate), note})
			}
			if td != nil && td.cnt.captured > 0 && s.cnt.captured > 0 {
				ratio := (s.cpu.Seconds() / float64(s.cnt.captured)) / (td.cpu.Seconds() / float64(td.cnt.captured))
				rows = append(rows, row{fmt.Sprintf("%s %s / tcpdump CPU per packet", t.name, cfg), fmt.Sprintf("%.2fx", ratio), fmt.Sprintf("%s vs %s, the median-rate runs; quote the rounds table below%s", perPacket(s), perPacket(td), cpuTarget(t.name))})
			}
			note := "target: zero loss at the generator's maximum, the sender at >= 95% of its rate with tcpdump (issue 14)"
			v := "zero loss"
			if !s.zeroLoss() {
				v = lossValue(s) + ", drops " + s.cnt.dropNote()
			}
			rows = append(rows, row{fmt.Sprintf("%s %s at the generator's max", t.name, cfg), v, fmt.Sprintf("%.3f Mpps, %s/packet; %s", s.gen.rate/1e6, perPacket(s), note)})
		}
	}
	rows = append(rows, live...)
	fmt.Println()
	fmt.Println("| benchmark | result | note |")
	fmt.Println("|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s |\n", r.name, r.value, oneLine(r.note))
	}
}

// zeroLossRate is the highest sender rate of a zero-loss run of cfg on
// mix below the sender rate of the slowest run that lost packets (lossy,
// 0 when none did): a rate that lost once is not a zero-loss rate.
func zeroLossRate(results []*result, cfg, mix string) (best, lossy float64, seen bool) {
	for _, r := range results {
		if r.config == cfg && r.traffic == mix && r.err == nil && !r.zeroLoss() {
			if lossy == 0 || r.gen.rate < lossy {
				lossy = r.gen.rate
			}
		}
	}
	for _, r := range results {
		if r.config == cfg && r.traffic == mix && r.err == nil {
			seen = true
			if r.zeroLoss() && (lossy == 0 || r.gen.rate < lossy) {
				best = max(best, r.gen.rate)
			}
		}
	}
	return best, lossy, seen
}

func pct(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", "/")
}

// cpuTarget is issue 14's target for the CPU per packet against tcpdump,
// as a note.
func cpuTarget(traffic string) string {
	switch traffic {
	case "64B-1flow", "IMIX":
		return "; target <= 0.9x (issue 14)"
	case "64B":
		return "; target <= 1.1x (issue 14)"
	}
	return ""
}
