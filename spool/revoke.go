package spool

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A query keeps reading the files the budget deletes under it (its
// descriptors and mappings keep them), so their space comes back only when
// it closes its handles. The budget counts that space per directory as
// held: it will come back, so the free-space floor compares available plus
// held bytes, and a slow reader no longer makes the budget delete history
// whose space it believes lost.
//
// Capture wins over a reader all the same. When the disk cannot physically
// take a write (statfs, or ENOSPC) while bytes are held, the readers
// holding the most are revoked, just enough of them, instead of deleting
// more history: their Handle.ReadAt fails at once with a *RevokedError,
// their callback (SnapshotFor) is told so that a reader blocked elsewhere,
// for example writing to a slow client, is woken, and the writer waits up
// to revokeWait for their handles to close before it falls back to
// deleting, and failing, as before. A reader that holds more than
// Config.MaxHeldPercent of a file system in deleted files is revoked as
// soon as it does. A mapping is never unmapped under a reader: a revoked
// reader stops and closes its handles itself.

// revokeWait bounds how long a write waits for revoked readers to close
// their handles. A revoked query usually lets go within milliseconds, but
// on a busy machine its goroutines may wait for a CPU much longer (200 ms
// lost packets in one of five runs of TestSlowClientOnFullDisk while other
// tests ran); the write that waits would fail without the space anyway,
// and capture's rings hold packets meanwhile.
const revokeWait = time.Second

// ErrRevoked: the query was cut off because capture needed the space of
// deleted spool files it was still reading. A *RevokedError says how much.
var ErrRevoked = errors.New("spool: query cut off")

// RevokedError is why a reader was cut off; it matches ErrRevoked.
type RevokedError struct {
	// Held is the bytes of deleted spool files the reader held open.
	Held int64
	// OverShare: it held more than Config.MaxHeldPercent (Percent) of
	// the file system; otherwise capture found the disk full.
	OverShare bool
	Percent   float64
}

func (e *RevokedError) Error() string {
	mib := float64(e.Held) / (1 << 20)
	if e.OverShare {
		return fmt.Sprintf("spool: query cut off: it held %.1f MiB of deleted spool files, more than %g%% of the file system (spool.max_held_percent)", mib, e.Percent)
	}
	return fmt.Sprintf("spool: query cut off: it held %.1f MiB of deleted spool files that capture needed", mib)
}

// Is makes errors.Is(err, ErrRevoked) hold.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// reader is one Snapshot's set of handles: what the budget revokes.
type reader struct {
	onRevoke func(error) // nil: the reader learns of it from ReadAt only
	err      atomic.Pointer[RevokedError]

	mu   sync.Mutex
	held map[*dirState]int64 // bytes of deleted files it holds, per directory
}

// revoked returns the reason the reader was revoked, or nil.
func (r *reader) revoked() error {
	if e := r.err.Load(); e != nil {
		return e
	}
	return nil
}

func (r *reader) heldIn(d *dirState) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held[d]
}

func (r *reader) addHeld(d *dirState, n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[*dirState]int64{}
	}
	r.held[d] += n
	return r.held[d]
}

func (r *reader) heldTotal() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, v := range r.held {
		n += v
	}
	return n
}

// revoke cuts the reader off with e, once, and reports whether this call
// did it. The callback runs on a goroutine of its own: it may take locks
// of its own (an HTTP connection's), and revoke runs under d.mu on
// capture's write path.
func (s *Spool) revoke(r *reader, e *RevokedError) bool {
	if !r.err.CompareAndSwap(nil, e) {
		return false
	}
	s.ctr.readersRevoked.Add(1)
	s.log.Warn("cutting off a query that holds deleted spool files", "err", e)
	if r.onRevoke != nil {
		go r.onRevoke(e)
	}
	return true
}

// hold counts f, which remove has just deleted while readers (holders)
// had it open, as held in d: its pcap bytes stay allocated until the last
// of them closes. Readers past Config.MaxHeldPercent are revoked. d.mu is
// held.
func (s *Spool) hold(d *dirState, f *File, size int64, holders []*reader) {
	f.held = size
	d.held += size
	d.heldFiles = append(d.heldFiles, f)
	var limit int64 = math.MaxInt64
	if s.cfg.MaxHeldPercent > 0 && !d.statOK {
		// No floor and no full disk yet: the size was never needed.
		if err := d.refresh(time.Now()); err != nil {
			s.log.Warn("file system size unknown; spool.max_held_percent not applied", "err", err)
		}
	}
	if p := s.cfg.MaxHeldPercent; p > 0 && d.statOK {
		limit = int64(float64(d.total) * p / 100)
	}
	for _, r := range holders {
		if n := r.addHeld(d, size); n > limit {
			s.revoke(r, &RevokedError{Held: r.heldTotal(), OverShare: true, Percent: s.cfg.MaxHeldPercent})
		}
	}
}

// unhold is the last handle of a held file closing: its space is back.
// d.mu is held.
func (d *dirState) unhold(f *File) {
	d.held -= f.held
	d.avail += f.held
	f.held = 0
	if i := slices.Index(d.heldFiles, f); i >= 0 {
		d.heldFiles = slices.Delete(d.heldFiles, i, i+1)
	}
	select {
	case d.releasedChan() <- struct{}{}:
	default:
	}
}

// release drops h from its file's holders, after its descriptor and
// mapping are closed, and gives the file's held space back if h was the
// last.
func (s *Spool) release(h *Handle) {
	f := h.File
	d := f.ds
	d.mu.Lock()
	defer d.mu.Unlock()
	f.mu.Lock()
	if i := slices.Index(f.readers, h.rd); i >= 0 {
		f.readers = slices.Delete(f.readers, i, i+1)
	}
	last := len(f.readers) == 0 && f.held > 0
	deleted, size := f.deleted, f.held
	f.mu.Unlock()
	if deleted && size > 0 {
		h.rd.addHeld(d, -size)
	}
	if last {
		d.unhold(f)
	}
}

// releasedChan returns d.released, made on first use. d.mu is held.
func (d *dirState) releasedChan() chan struct{} {
	if d.released == nil {
		d.released = make(chan struct{}, 1)
	}
	return d.released
}

// reclaim gets up to need bytes of d's held space back for a write that
// the disk cannot take: it revokes the readers holding the most, until
// the files they alone hold cover need, and waits up to revokeWait for
// their handles to close. It returns the held bytes given back meanwhile.
// d.mu is held, and released while it waits.
func (s *Spool) reclaim(d *dirState, need int64) int64 {
	if d.held <= 0 || need <= 0 {
		return 0
	}
	before := d.held
	if s.revokeFor(d, need) {
		d.reclaimUntil = time.Now().Add(revokeWait)
	}
	// Readers revoked earlier (by this call or another) are still given
	// the rest of their time, but no more.
	var t *time.Timer
	for d.held > 0 && before-d.held < need {
		left := time.Until(d.reclaimUntil)
		if left <= 0 {
			break
		}
		if t == nil {
			t = time.NewTimer(left)
			defer t.Stop()
		} else {
			t.Reset(left)
		}
		released := d.releasedChan()
		d.mu.Unlock()
		select {
		case <-released:
		case <-t.C:
		}
		d.mu.Lock()
	}
	if before > d.held {
		return before - d.held
	}
	return 0
}

// revokeFor revokes the readers of d's held files, those holding the most
// bytes first, until the files whose holders are all revoked add up to
// need. It reports whether it revoked any. d.mu is held.
func (s *Spool) revokeFor(d *dirState, need int64) bool {
	type holding struct {
		r    *reader
		held int64
	}
	var rs []holding
	files := make([][]*reader, len(d.heldFiles))
	for i, f := range d.heldFiles {
		f.mu.Lock()
		files[i] = slices.Clone(f.readers)
		f.mu.Unlock()
		for _, r := range files[i] {
			if !slices.ContainsFunc(rs, func(h holding) bool { return h.r == r }) {
				rs = append(rs, holding{r, r.heldIn(d)})
			}
		}
	}
	// The most held first: the fewest queries cut off for the space.
	slices.SortStableFunc(rs, func(a, b holding) int {
		switch {
		case a.held > b.held:
			return -1
		case a.held < b.held:
			return 1
		}
		return 0
	})
	coming := func() int64 {
		var n int64
		for i, f := range d.heldFiles {
			if !slices.ContainsFunc(files[i], func(r *reader) bool { return r.revoked() == nil }) {
				n += f.held
			}
		}
		return n
	}
	did := false
	for _, h := range rs {
		if coming() >= need {
			break
		}
		if h.r.revoked() == nil {
			did = s.revoke(h.r, &RevokedError{Held: h.r.heldTotal()}) || did
		}
	}
	return did
}
