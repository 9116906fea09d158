//go:build linux

package main

import (
	"fmt"
	"strings"
)

// printCutoff compares each stenod configuration with a cutoff to the same
// one without, round by round, on every traffic both ran: the spool's
// bytes per packet offered (how much longer the same disk lasts) and the
// capturer's CPU per packet offered (captured, whether stored or cut).
func printCutoff(o *options, keys []runKey, runs [][]*result) {
	find := func(cfg, traffic, cont string) []*result {
		for i, k := range keys {
			if k.cfg == cfg && k.t.name == traffic && k.rate == 0 && k.contention == cont {
				return runs[i]
			}
		}
		return nil
	}
	var lines []string
	for _, k := range keys {
		base, ok := strings.CutSuffix(k.cfg, "-cutoff")
		if !ok || k.rate != 0 {
			continue
		}
		with, without := find(k.cfg, k.t.name, k.contention), find(base, k.t.name, k.contention)
		var smaller, cpu, cutShare []float64
		for i := range min(len(with), len(without)) {
			w, wo := with[i], without[i]
			if w.err != nil || wo.err != nil || w.gen.sent == 0 || wo.gen.sent == 0 || w.cnt.stored == 0 {
				continue
			}
			perW := float64(w.cnt.stored) / float64(w.gen.sent)
			perWO := float64(wo.cnt.stored) / float64(wo.gen.sent)
			smaller = append(smaller, perWO/perW)
			cpu = append(cpu, (w.cpu.Seconds()/float64(w.gen.sent))/(wo.cpu.Seconds()/float64(wo.gen.sent)))
			if w.cnt.captured > 0 {
				cutShare = append(cutShare, float64(w.cnt.cut)/float64(w.cnt.captured))
			}
		}
		lines = append(lines, fmt.Sprintf("| %s vs %s | %s | %s | %s | %s | %s |", k.cfg, base, k.t.name, k.contention,
			spreadOf(smaller).format("%.1fx"), spreadOf(cutShare).format("%.2f"), spreadOf(cpu).format("%.2fx")))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Printf("\nCutoff (%d alternating rounds, medians with the range): the spool's bytes per packet offered without the cutoff over those with it (how many times longer the disk lasts), the share of the offered packets cut, and the capturer's CPU per packet offered with over without.\n\n", o.repeat)
	fmt.Println("| configuration | traffic | contention | disk per packet, without / with | packets cut | CPU per offered packet, with / without |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, l := range lines {
		fmt.Println(l)
	}
}
