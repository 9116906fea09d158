//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stenotype is stenographer's capture program (scripts/build-stenotype.sh
// builds it): TPACKET_V3 blocks written whole with O_DIRECT and AIO, every
// packet indexed in the capture thread into an in-memory index that a
// second thread writes out when its file closes (at rotation, every minute
// by default, and at the end).
//
// Flags as stenographer's daemon passes them (--threads, --dir, --iface),
// stenotype's defaults otherwise (2,048 blocks of 1 MiB, seccomp on), and:
//   - -v: its informational lines, of which capbench waits for the one that
//     says capture has started (one more line for every 100 MiB captured);
//   - --uid/--gid root: it stays root, as tcpdump does here (-Z root), to
//     write to the benchmark's directory;
//   - --blockage_sec=1 instead of 10: a block the traffic left half full is
//     written a second after its last packet, within the drain below, not
//     ten seconds later (at the generator's maximum blocks fill in
//     milliseconds and this changes nothing else).
const stenotypeBlockTimeout = time.Second

// stenotypeBlockSize is stenotype's default --blocksize_kb: its packet
// files are whole TPACKET_V3 blocks of this size.
const stenotypeBlockSize = 1 << 20

func startStenotype(e *env) (*capturer, error) {
	if e.stenotype == "" {
		return nil, errors.New("stenotype not found: scripts/build-stenotype.sh builds it, or -stenotype names it")
	}
	dir, err := os.MkdirTemp(e.dir, "stenotype-")
	if err != nil {
		return nil, err
	}
	e.cleanups.push("stenotype directory "+dir, func() error { return os.RemoveAll(dir) })
	// stenographer's daemon makes these for thread 0 (as links to the
	// configured directories).
	pkts := filepath.Join(dir, "PKT0")
	for _, d := range []string{pkts, filepath.Join(dir, "IDX0")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	name, args := e.taskset(e.stenotype, "-v", "--threads=1", "--dir="+dir, "--iface="+e.v.host,
		"--uid=root", "--gid=root", "--blockage_sec="+strconv.Itoa(int(stenotypeBlockTimeout/time.Second)))
	ch, err := startReady(e, name, args, syscall.SIGTERM, "starting to process packets", 30*time.Second)
	if err != nil {
		return nil, err
	}
	var indexCPU time.Duration
	stop := func() (counters, error) {
		var err error
		indexCPU, err = stopStenotype(ch)
		n, cerr := stenotypePackets(pkts)
		return counters{captured: n}, errors.Join(err, cerr)
	}
	return &capturer{pid: ch.pid(), stop: stop, drain: 2 * stenotypeBlockTimeout,
		closeLog: func() closeCPU { return closeCPU{seal: indexCPU} }}, nil
}

// stopStenotype ends stenotype with SIGINT, as stenographer's daemon does,
// and returns the CPU time its other threads than the capture thread took
// meanwhile: writing the index of the file it was capturing to, which it
// does for every file at rotation (a run is shorter than a file's minute).
// Like stenod's seal it counts as capture's cost; the rest of the stop
// (the capture thread's last writes and freeing its ring, the exit) does
// not, as for stenod. The kernel counts threads' CPU time in 10 ms ticks.
//
// stenotype v1.0.1 does not always exit: when no write is in flight as it
// stops, its capture thread waits for one to complete forever (Output::Flush
// closes the last file only on a completion). Its index is written all the
// same, and logged; once it is, the process is killed.
func stopStenotype(ch *child) (time.Duration, error) {
	const indexWritten = "Wrote all index files"
	pid := ch.pid()
	before, err := threadCPUs(pid)
	if err != nil {
		return 0, err
	}
	// The capture thread is the one that worked.
	capture, most := 0, time.Duration(-1)
	for tid, c := range before {
		if c > most {
			capture, most = tid, c
		}
	}
	written := strings.Count(ch.stderr.String(), indexWritten)
	last := map[int]time.Duration{}
	sample := func() {
		now, _ := threadCPUs(pid)
		for tid, c := range now {
			last[tid] = c
		}
	}
	_ = syscall.Kill(pid, syscall.SIGINT)
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var stopErr error
wait:
	for {
		select {
		case <-ch.done:
			stopErr = ch.err
			break wait
		case <-deadline:
			return 0, ch.stop(syscall.SIGKILL, 0)
		case <-tick.C:
			sample()
			if strings.Count(ch.stderr.String(), indexWritten) > written {
				// Let the index thread free the index, then take its figure.
				time.Sleep(50 * time.Millisecond)
				sample()
				_ = ch.stop(syscall.SIGKILL, 0)
				break wait
			}
		}
	}
	var index time.Duration
	for tid, c := range last {
		if tid != capture {
			index += c - before[tid]
		}
	}
	if stopErr != nil {
		return index, fmt.Errorf("stenotype: %w: %s", stopErr, lastLines(ch.stderr.String(), 3))
	}
	return index, nil
}

// threadCPUs returns the user and system CPU time of each living thread of
// process pid, by thread id.
func threadCPUs(pid int) (map[int]time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[int]time.Duration, len(ents))
	for _, ent := range ents {
		tid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		// A thread may end between the listing and the read.
		if c, err := statTimes(filepath.Join(dir, ent.Name(), "stat"), 2); err == nil {
			out[tid] = c
		}
	}
	return out, nil
}

// stenotypePackets counts the packets of the TPACKET_V3 blocks in
// stenotype's packet files in dir (the one being written is a dot file
// until it is closed).
func stenotypePackets(dir string) (uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, ent := range ents {
		c, err := countBlockPackets(filepath.Join(dir, ent.Name()))
		if err != nil {
			return n, err
		}
		n += c
	}
	return n, nil
}

// countBlockPackets adds up num_pkts of each block of a stenotype packet
// file: struct tpacket_block_desc, whose version (TPACKET_V3, 2) is the
// first word and whose tpacket_hdr_v1 starts at byte 8 (block_status,
// num_pkts, ...).
func countBlockPackets(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n uint64
	var hdr [16]byte
	for off := int64(0); ; off += stenotypeBlockSize {
		if _, err := f.ReadAt(hdr[:], off); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, fmt.Errorf("%s: block at %d: %w", path, off, err)
		}
		if v := binary.LittleEndian.Uint32(hdr[0:]); v != 2 {
			return n, fmt.Errorf("%s: block at %d: version %d, not TPACKET_V3", path, off, v)
		}
		n += uint64(binary.LittleEndian.Uint32(hdr[12:]))
	}
}
