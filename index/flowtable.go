package index

import (
	"hash/maphash"
	"unsafe"

	"github.com/stenod/stenod/flow"
)

// flowTable maps flow keys to flow numbers for the live index. It replaces
// a Go map because the key compare happens on the flow record the caller
// updates next anyway (one cache miss instead of two). Open addressing,
// linear probing, at most half full.
//
// The hash is keyed with a random seed of the table's own (hash/maphash,
// the hash of Go's maps and their defence against hash flooding; AES
// instructions where the CPU has them). Keys come from the wire: against
// a fixed hash an attacker finds, offline and in seconds, thousands of
// flows whose hashes share their slot bits, and every packet of them then
// walks one long run of slots. With the fixed hash this table had before,
// 2,000 such flows (TestFlowTableCraftedKeys finds them in a quarter of a
// second) put the average look-up 1,000 slots from its home, and 3,000
// cost 1.3-2.2 µs a packet where a packet costs about 0.05: a capture
// cannot keep up.
//
// A slot holds the flow number + 1 (0 is empty) in its low half and the
// upper half of the key's hash (the tag) in its high half. A probe compares
// keys only where the tag matches: without tags, a probe that met another
// flow's slot first (every other lookup at half load) read that flow's
// record to compare keys, a cache miss the grouped lookups could not
// foresee, and with 65,536 interleaved flows that was a third of the
// index's cost.
type flowTable struct {
	slots []uint64
	n     int
	seed  maphash.Seed
}

func slotOf(id int32, h uint64) uint64 { return h&^0xffffffff | uint64(uint32(id+1)) }

// slotID returns the flow number in slot s, -1 if it is empty.
func slotID(s uint64) int32 { return int32(uint32(s)) - 1 }

// tagMatch reports whether slot s may hold the key whose hash is h.
func tagMatch(s, h uint64) bool { return (s^h)>>32 == 0 }

// Six 8-byte words make a key; the layout test in flow guards KeySize.
const keyWords = flow.KeySize / 8

// hash is the table's keyed hash of k: its low bits pick the slot, its
// high half is the tag.
func (t *flowTable) hash(k *flow.Key) uint64 {
	return maphash.Bytes(t.seed, (*[flow.KeySize]byte)(unsafe.Pointer(k))[:])
}

// keyEqual compares two keys as six words; the generic memory compare the
// compiler emits for == on a 48-byte array costs several times more.
func keyEqual(a, b *flow.Key) bool {
	x := (*[keyWords]uint64)(unsafe.Pointer(a))
	y := (*[keyWords]uint64)(unsafe.Pointer(b))
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5]
}

// sameKey is keyEqual without early exits: one branch, taken the same way
// for nearly every packet whichever word differs, where keyEqual's chain
// mispredicts on keys that share their first words.
func sameKey(a, b *flow.Key) bool {
	x := (*[keyWords]uint64)(unsafe.Pointer(a))
	y := (*[keyWords]uint64)(unsafe.Pointer(b))
	return (x[0]^y[0])|(x[1]^y[1])|(x[2]^y[2])|(x[3]^y[3])|(x[4]^y[4])|(x[5]^y[5]) == 0
}

func newFlowTable(hint int) flowTable {
	n := 1024
	for n < 2*hint {
		n *= 2
	}
	return flowTable{slots: make([]uint64, n), seed: maphash.MakeSeed()}
}

// find returns the number of the flow with key k, whose hash is h, or
// -1, and the slot where k belongs.
func (t *flowTable) find(k *flow.Key, h uint64, flows []liveFlow) (int32, int) {
	mask := len(t.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return -1, i
		}
		if tagMatch(s, h) {
			if id := slotID(s); keyEqual(&flows[id].Key, k) {
				return id, i
			}
		}
	}
}

// lookAhead returns the flow number find would most likely return for the
// key whose hash is h, without comparing keys (which would read the
// record): the first tag match, or -1.
func (t *flowTable) lookAhead(h uint64) int32 {
	mask := len(t.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return -1
		}
		if tagMatch(s, h) {
			return slotID(s)
		}
	}
}

// insert records flow number id, whose key (hash h) is not in the table,
// at slot i. Growing rehashes every flow from its key: a slot keeps only
// the hash's upper half.
func (t *flowTable) insert(i int, id int32, h uint64, flows []liveFlow) {
	t.slots[i] = slotOf(id, h)
	t.n++
	if 2*t.n <= len(t.slots) {
		return
	}
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	mask := len(t.slots) - 1
	for _, s := range old {
		if s == 0 {
			continue
		}
		hs := t.hash(&flows[slotID(s)].Key)
		j := int(hs) & mask
		for t.slots[j] != 0 {
			j = (j + 1) & mask
		}
		t.slots[j] = s
	}
}

// hash and keyEqual read a Key as KeySize bytes: its size must be exactly
// that.
var (
	_ [unsafe.Sizeof(flow.Key{}) - flow.KeySize]struct{}
	_ [flow.KeySize - unsafe.Sizeof(flow.Key{})]struct{}
)
