package index

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stenod/stenod/flow"
)

// fixedHash is the unkeyed hash the flow table used before it had a seed:
// a few multiplications over the key's six words, which anyone can compute.
func fixedHash(k *flow.Key) uint64 {
	b := (*[flow.KeySize]byte)(unsafe.Pointer(k))[:]
	h := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < len(b); i += 8 {
		h = (h ^ binary.LittleEndian.Uint64(b[i:])) * 0xbf58476d1ce4e5b9
		h ^= h >> 29
	}
	return h
}

// craftKeys returns n UDP keys whose fixedHash values share their low
// slotBits bits, found the way an attacker would: by trying source
// addresses until enough land in one slot.
func craftKeys(n, slotBits int) []flow.Key {
	k := flow.Key{EtherType: 0x0800, Proto: 17, Flags: flow.FlagIPv4, SrcPort: 53, DstPort: 53}
	mask := uint64(1)<<slotBits - 1
	var keys []flow.Key
	for i := uint64(0); len(keys) < n; i++ {
		binary.BigEndian.PutUint32(k.Src[:4], uint32(i))
		if fixedHash(&k)&mask == 0 {
			keys = append(keys, k)
		}
	}
	return keys
}

// probeLen is how many slots past its home slot the look-up of flow id,
// whose key is k, walks.
func probeLen(t *flowTable, k *flow.Key, id int32) int {
	mask := len(t.slots) - 1
	home := int(t.hash(k)) & mask
	for d := 0; d < len(t.slots); d++ {
		if slotID(t.slots[(home+d)&mask]) == id {
			return d
		}
	}
	return len(t.slots)
}

// TestFlowTableCraftedKeys: flows chosen to collide under a fixed hash
// (the table's before it was keyed) spread over the keyed table, so that a
// flood of them costs a look-up no more than other flows do. Under the
// fixed hash every one of them would start at the same slot, and the
// average look-up would walk past half of the others.
func TestFlowTableCraftedKeys(t *testing.T) {
	const flows = 2000 // the table then has 4,096 slots
	keys := craftKeys(flows, 13)
	b := NewBuilder(0)
	for i := range keys {
		b.Add(&keys[i], int64(24+i*100), int64(i), 60, uint32(i))
	}
	if got := b.Summary().Flows; got != flows {
		t.Fatalf("%d flows, want %d", got, flows)
	}
	total, longest := 0, 0
	for i := range keys {
		d := probeLen(&b.ids, &keys[i], int32(i))
		total += d
		longest = max(longest, d)
	}
	// Linear probing at most half full averages about half a slot past
	// home; the bounds leave room for chance, not for clustering.
	if avg := float64(total) / flows; avg > 4 || longest > 256 {
		t.Fatalf("crafted flows cluster: %.1f slots past home on average, %d at most, in %d slots", avg, longest, len(b.ids.slots))
	}

	// Every table has a seed of its own: what collides in one does not
	// in another.
	other := newFlowTable(0)
	same := 0
	for i := range keys {
		if b.ids.hash(&keys[i]) == other.hash(&keys[i]) {
			same++
		}
	}
	if same != 0 {
		t.Fatalf("%d of %d keys hash alike in two tables", same, flows)
	}
}
