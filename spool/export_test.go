package spool

// Crash leaves sp as a killed process would: files and writers as they are,
// only the directory locks released (the kernel drops a dead process's
// flocks).
func Crash(sp *Spool) { sp.unlock() }
