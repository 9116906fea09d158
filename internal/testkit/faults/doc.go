// Package faults is stenod's fault-injection suite: it damages a real spool
// in the ways disks, crashes and careless hands do, opens it as stenod run
// does (with its start-up repair), queries it, and checks the promise of
// docs/operations.md ("What stenod promises on damage"):
//
//   - every intact packet is returned exactly once, byte for byte;
//   - no damaged packet is ever returned;
//   - damage is counted (in the answer, or in the spool's repair counters).
//
// The suite is its tests (faults_test.go): a fixed set of named cases, one
// per kind of damage the issue tracker recorded, then random cases from
// deterministic seeds (STENOD_FAULT_CASES of them, 1,000 by default; `make
// faults` runs more). A failing case prints its seed and what was done to
// the spool, and STENOD_FAULT_SEED=N runs that case alone.
//
// The package has no code outside its tests.
package faults
