package index

import (
	"unsafe"

	"github.com/stenod/stenod/flow"
)

// flowTable maps flow keys to flow numbers for the live index. It replaces
// a Go map because the key compare happens on the flow record the caller
// updates next anyway (one cache miss instead of two) and the hash is a few
// multiplications over the key's six words. Open addressing, linear
// probing, at most half full.
type flowTable struct {
	slots []int32 // flow number + 1; 0 is empty
	n     int
}

// Six 8-byte words make a key; the layout test in flow guards KeySize.
const keyWords = flow.KeySize / 8

func hashKey(k *flow.Key) uint64 {
	w := (*[keyWords]uint64)(unsafe.Pointer(k))
	h := uint64(0x9e3779b97f4a7c15)
	for _, x := range w {
		h = (h ^ x) * 0xbf58476d1ce4e5b9
		h ^= h >> 29
	}
	return h
}

// keyEqual compares two keys as six words; the generic memory compare the
// compiler emits for == on a 48-byte array costs several times more.
func keyEqual(a, b *flow.Key) bool {
	x := (*[keyWords]uint64)(unsafe.Pointer(a))
	y := (*[keyWords]uint64)(unsafe.Pointer(b))
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5]
}

func newFlowTable(hint int) flowTable {
	n := 1024
	for n < 2*hint {
		n *= 2
	}
	return flowTable{slots: make([]int32, n)}
}

// find returns the number of the flow with key k, whose hashKey is h, or
// -1, and the slot where k belongs.
func (t *flowTable) find(k *flow.Key, h uint64, flows []liveFlow) (int32, int) {
	mask := len(t.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return -1, i
		}
		if keyEqual(&flows[s-1].Key, k) {
			return s - 1, i
		}
	}
}

// insert records flow number id (whose key is not in the table) at slot i.
func (t *flowTable) insert(i int, id int32, flows []liveFlow) {
	t.slots[i] = id + 1
	t.n++
	if 2*t.n > len(t.slots) {
		old := t.slots
		t.slots = make([]int32, 2*len(old))
		mask := len(t.slots) - 1
		for _, s := range old {
			if s == 0 {
				continue
			}
			j := int(hashKey(&flows[s-1].Key)) & mask
			for t.slots[j] != 0 {
				j = (j + 1) & mask
			}
			t.slots[j] = s
		}
	}
}

// hashKey reads a Key as six words: its size must be exactly KeySize.
var (
	_ [unsafe.Sizeof(flow.Key{}) - flow.KeySize]struct{}
	_ [flow.KeySize - unsafe.Sizeof(flow.Key{})]struct{}
)
