package spool

import "golang.org/x/sys/unix"

// Crash leaves sp as a killed process would: files and writers as they are,
// only the directory locks released (the kernel drops a dead process's
// flocks).
func Crash(sp *Spool) { sp.unlock() }

// FakeStatfs makes sp's budget see the file system f describes instead of
// the real one, from its next look on.
func FakeStatfs(sp *Spool, f func(path string, st *unix.Statfs_t) error) {
	for _, d := range sp.dirs {
		d.mu.Lock()
		d.fakeStatfs, d.statOK = f, false
		d.mu.Unlock()
	}
}

// Reclaim asks the first directory's readers for need bytes of held space
// back, as a write the disk cannot take does.
func Reclaim(sp *Spool, need int64) int64 {
	d := sp.dirs[0]
	d.mu.Lock()
	defer d.mu.Unlock()
	return sp.reclaim(d, need)
}

// CatchUpJournal writes w's gathered record checksums to its sums journal,
// as the writer does once a second: a crash after that leaves every
// record of the file in the journal.
func CatchUpJournal(w *Writer) { w.writeSums() }
