package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stenod/stenod/flow"
)

// MaxFileSize bounds the index files Open reads into memory. The positions
// section cannot exceed 4 GiB (Decode), and an index takes one to three
// bytes per packet plus a record per flow: a file larger than this is not
// an index, whatever its header says, and reading it could exhaust memory.
const MaxFileSize = 4 << 30

// Reader is a sealed index, read completely into memory and verified.
// It is immutable and safe for concurrent use.
type Reader struct {
	sum       Summary
	iface     string
	blocks    []Block
	flows     []Flow
	posStart  []uint32 // flow i's positions are positions[posStart[i]:posStart[i+1]]
	positions []byte
	// flow i's record sums are the 4-byte words of sums from
	// 4*sumStart[i] on, one per packet
	sumStart []uint64
	sums     []byte

	// cids caches the flows' Community ID heads for one seed, hashed
	// by the first query that asks (CommunityIDHeads).
	cidMu   sync.Mutex
	cidSeed uint16
	cids    []uint64
}

// CommunityIDHeads returns flow.CommunityIDHead of every flow, by flow
// id, hashed with seed. A sealed index never changes, so the hashes are
// computed once per seed (one SHA-1 per flow, about 140 ns) and kept while
// the Reader is: the second pivot by Community ID costs what one by 5-tuple
// does.
func (r *Reader) CommunityIDHeads(seed uint16) []uint64 {
	r.cidMu.Lock()
	defer r.cidMu.Unlock()
	if r.cids == nil || r.cidSeed != seed {
		cids := make([]uint64, len(r.flows))
		for i := range r.flows {
			cids[i] = flow.CommunityIDHead(&r.flows[i].Key, seed)
		}
		r.cids, r.cidSeed = cids, seed
	}
	return r.cids
}

// Open reads and verifies the index file at path; it is OpenLimit with
// MaxFileSize.
func Open(path string) (*Reader, error) { return OpenLimit(path, MaxFileSize) }

// OpenLimit reads and verifies the index file at path, refusing before it
// reads more than the header a file that is not a regular file (it does not
// follow a symbolic link), that is larger than limit bytes, or whose size
// differs from the size its header adds up to. Every refusal wraps
// ErrCorrupt, except a missing file (os.ErrNotExist).
func OpenLimit(path string, limit int64) (*Reader, error) {
	f, size, err := openIndex(path)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	defer f.Close()
	data, err := readBounded(f, size, min(limit, MaxFileSize))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	r, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	return r, nil
}

// openIndex opens an index file for reading without following a symbolic
// link and without blocking on a FIFO, and returns it with its size if it
// is a regular file.
func openIndex(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, 0, fmt.Errorf("%w: a symbolic link (not followed)", ErrCorrupt)
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, 0, errors.Join(err, f.Close())
	}
	if !st.Mode().IsRegular() {
		return nil, 0, errors.Join(fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, st.Mode().Type()), f.Close())
	}
	return f, st.Size(), nil
}

// readBounded reads a whole index file of size bytes from f, after checking
// the size against limit and against the size its header adds up to, so
// that nothing is allocated for a file that cannot be an index.
func readBounded(f *os.File, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d an index may have", ErrCorrupt, size, limit)
	}
	var h [headerSize]byte
	if err := readHeader(f, size, h[:]); err != nil {
		return nil, err
	}
	data := make([]byte, size)
	copy(data, h[:])
	if _, err := f.ReadAt(data[headerSize:], headerSize); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%w: shorter than its header says (shrank while read)", ErrCorrupt)
		}
		return nil, err
	}
	return data, nil
}

// readHeader reads and checks the header of an index file of size bytes
// into h: its magic, version and checksum, and that the sections it
// declares add up to size.
func readHeader(f *os.File, size int64, h []byte) error {
	if size < headerSize+4 {
		return fmt.Errorf("%w: %d bytes, shorter than a header: not an index file", ErrCorrupt, size)
	}
	if _, err := f.ReadAt(h, 0); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: shorter than a header: not an index file", ErrCorrupt)
		}
		return err
	}
	if string(h[:8]) != magic {
		return fmt.Errorf("%w: not an index file", ErrCorrupt)
	}
	if err := checkHeader(h); err != nil {
		return err
	}
	if want, ok := declaredSize(h); !ok || want != uint64(size) {
		if ok && want > uint64(size) {
			return fmt.Errorf("%w: %d bytes, shorter than the %d its header says", ErrCorrupt, size, want)
		}
		return fmt.Errorf("%w: %d bytes, not the size its header says", ErrCorrupt, size)
	}
	return nil
}

// declaredSize returns the file size a header's section lengths add up
// to; ok is false if the sum overflows or exceeds MaxFileSize.
func declaredSize(h []byte) (size uint64, ok bool) {
	le := binary.LittleEndian
	parts := []uint64{
		headerSize, 4,
		uint64(le.Uint16(h[80:])),
		uint64(le.Uint32(h[60:])) * blockSize,
		le.Uint64(h[64:]),
		le.Uint64(h[72:]),
	}
	if le.Uint32(h[8:]) >= 2 {
		// From version 2 on, a section of 4-byte record checksums, one
		// per packet, follows the positions.
		packets := le.Uint64(h[32:])
		if packets > MaxFileSize/4 {
			return 0, false
		}
		parts = append(parts, 4*packets)
	}
	for _, p := range parts {
		if p > MaxFileSize || size+p > MaxFileSize {
			return 0, false
		}
		size += p
	}
	return size, true
}

// Decode verifies and parses an index file's bytes. It keeps references into
// data, which the caller must not modify afterwards.
func Decode(data []byte) (*Reader, error) {
	le := binary.LittleEndian
	if len(data) < headerSize+4 || string(data[:8]) != magic {
		return nil, fmt.Errorf("%w: not an index file", ErrCorrupt)
	}
	if err := checkHeader(data); err != nil {
		return nil, err
	}
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, castagnoli), le.Uint32(data[len(data)-4:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	r := &Reader{sum: headerSummary(data)}
	nFlows := uint64(le.Uint32(data[56:]))
	nBlocks := uint64(le.Uint32(data[60:]))
	flowsLen := le.Uint64(data[64:])
	posLen := le.Uint64(data[72:])
	ifaceLen := uint64(le.Uint16(data[80:]))
	rest := uint64(len(body) - headerSize)
	// Each length is checked against what is left before it is used, so the
	// sums below cannot overflow.
	if r.sum.Packets > rest/4 {
		return nil, fmt.Errorf("%w: %d packets' sums cannot fit in %d bytes", ErrCorrupt, r.sum.Packets, rest)
	}
	sumsLen := 4 * r.sum.Packets
	rest -= sumsLen
	if ifaceLen > maxIfaceName || ifaceLen > rest || nBlocks > (rest-ifaceLen)/blockSize ||
		flowsLen > rest-ifaceLen-nBlocks*blockSize ||
		posLen != rest-ifaceLen-nBlocks*blockSize-flowsLen {
		return nil, fmt.Errorf("%w: section lengths do not add up to the file size", ErrCorrupt)
	}
	if posLen > math.MaxUint32 || r.sum.DataEnd < 0 || r.sum.Packets > 0 && r.sum.First > r.sum.Last {
		return nil, fmt.Errorf("%w: header out of range", ErrCorrupt)
	}
	p := body[headerSize:]
	r.iface = string(p[:ifaceLen])
	p = p[ifaceLen:]
	r.blocks = make([]Block, nBlocks)
	for i := range r.blocks {
		b := p[i*blockSize:]
		r.blocks[i] = Block{Offset: int64(le.Uint64(b)), Min: int64(le.Uint64(b[8:])), Max: int64(le.Uint64(b[16:]))}
	}
	p = p[nBlocks*blockSize:]
	// A flow record takes at least 9 bytes, which bounds the allocation.
	if nFlows > flowsLen/9 {
		return nil, fmt.Errorf("%w: %d flows cannot fit in %d bytes", ErrCorrupt, nFlows, flowsLen)
	}
	r.positions = p[flowsLen : flowsLen+posLen]
	r.sums = p[flowsLen+posLen:]
	d := decoder{b: p[:flowsLen]}
	r.flows = make([]Flow, nFlows)
	r.posStart = make([]uint32, nFlows+1)
	r.sumStart = make([]uint64, nFlows+1)
	var start, packets uint64
	for i := range r.flows {
		n := d.flow(&r.flows[i], r.sum.First, uint32(r.sum.Version))
		if d.err != nil {
			return nil, fmt.Errorf("flow %d: %w", i, d.err)
		}
		// Every position takes at least one byte.
		if n > posLen-start || n < r.flows[i].Packets {
			return nil, fmt.Errorf("%w: flow %d positions overrun their section", ErrCorrupt, i)
		}
		if f := &r.flows[i]; f.First < r.sum.First || f.Last > r.sum.Last {
			return nil, fmt.Errorf("%w: flow %d outside the file's time range", ErrCorrupt, i)
		}
		start += n
		packets += r.flows[i].Packets
		r.posStart[i+1] = uint32(start)
		r.sumStart[i+1] = packets
	}
	if len(d.b) != 0 || start != posLen || packets != r.sum.Packets {
		return nil, fmt.Errorf("%w: flow records disagree with the header", ErrCorrupt)
	}
	r.sum.Flows = len(r.flows)
	return r, nil
}

// Interface returns the name of the interface the file was captured on.
func (r *Reader) Interface() string { return r.iface }

// Summary implements View.
func (r *Reader) Summary() Summary { return r.sum }

// Flows implements View.
func (r *Reader) Flows(fn func(id int, f *Flow) bool) {
	for i := range r.flows {
		if !fn(i, &r.flows[i]) {
			return
		}
	}
}

// Blocks implements View.
func (r *Reader) Blocks() []Block { return r.blocks }

// AppendPositions implements View. Offsets that are not ascending or that
// point past the data the index covers mean corruption the checksum missed.
func (r *Reader) AppendPositions(dst []int64, id int) ([]int64, error) {
	if id < 0 || id >= len(r.flows) {
		return dst, nil
	}
	b := r.positions[r.posStart[id]:r.posStart[id+1]]
	var off int64
	for n := r.flows[id].Packets; n > 0; n-- {
		d, k := binary.Uvarint(b)
		if k <= 0 || d > uint64(r.sum.DataEnd) || (off > 0 && d == 0) {
			return dst, fmt.Errorf("%w: flow %d positions", ErrCorrupt, id)
		}
		b = b[k:]
		off += int64(d)
		if off >= r.sum.DataEnd {
			return dst, fmt.Errorf("%w: flow %d position %d past data end %d", ErrCorrupt, id, off, r.sum.DataEnd)
		}
		dst = append(dst, off)
	}
	return dst, nil
}

// AppendSums implements View.
func (r *Reader) AppendSums(dst []uint32, id int) ([]uint32, error) {
	if id < 0 || id >= len(r.flows) {
		return dst, nil
	}
	b := r.sums[4*r.sumStart[id] : 4*r.sumStart[id+1]]
	for ; len(b) >= 4; b = b[4:] {
		dst = append(dst, binary.LittleEndian.Uint32(b))
	}
	return dst, nil
}

// checkHeader verifies the header's own checksum.
func checkHeader(h []byte) error {
	le := binary.LittleEndian
	if v := le.Uint32(h[8:]); v < minVersion || v > FormatVersion {
		return fmt.Errorf("%w: want %d to %d got %d", ErrVersion, minVersion, FormatVersion, v)
	}
	if got, want := crc32.Checksum(h[:headerCRCOffset], castagnoli), le.Uint32(h[headerCRCOffset:]); got != want {
		return fmt.Errorf("%w: header checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	return nil
}

// ReadSummary reads only the header of the index file at path: enough to
// prune files by time without loading them. It checks the header's own
// checksum and that the file has the size the header says (so a truncated
// or padded index is found at once), but not the file's checksum; Open
// does, before anything is read from the index. Like Open, it refuses
// anything but a regular file and does not follow symbolic links.
func ReadSummary(path string) (Summary, error) {
	f, size, err := openIndex(path)
	if err != nil {
		return Summary{}, fmt.Errorf("index %s: %w", path, err)
	}
	defer f.Close()
	if sum, ok, err := readSummaryV1(f, size); ok || err != nil {
		if err != nil {
			return Summary{}, fmt.Errorf("index %s: %w", path, err)
		}
		return sum, nil
	}
	var h [headerSize]byte
	if err := readHeader(f, size, h[:]); err != nil {
		return Summary{}, fmt.Errorf("index %s: %w", path, err)
	}
	sum := headerSummary(h[:])
	sum.Flows = int(binary.LittleEndian.Uint32(h[56:]))
	return sum, nil
}

// headerSummary decodes the summary a checked version 2 or 3 header holds (all
// but Flows, which Decode counts itself).
func headerSummary(h []byte) Summary {
	le := binary.LittleEndian
	return Summary{
		Monotone:   le.Uint32(h[12:])&flagMonotone != 0,
		First:      int64(le.Uint64(h[16:])),
		Last:       int64(le.Uint64(h[24:])),
		Packets:    le.Uint64(h[32:]),
		Bytes:      le.Uint64(h[40:]),
		DataEnd:    int64(le.Uint64(h[48:])),
		FirstSum:   le.Uint32(h[84:]),
		LastOffset: int64(le.Uint64(h[88:])),
		LastSum:    le.Uint32(h[96:]),
		NameHash:   le.Uint64(h[100:]),
		Version:    int(le.Uint32(h[8:])),
	}
}

// Version 1 of the format had no record checksums and a 96-byte header
// with its CRC-32C at 92. Its summary is still read, so that an upgraded
// sensor starts without re-indexing its whole spool; Open refuses it
// (ErrVersion), and the spool rebuilds such an index from its pcap when a
// query first needs it.
const (
	v1HeaderSize    = 96
	v1HeaderCRCOffs = 92
)

// readSummaryV1 reads the summary of a version 1 index of size bytes; ok
// is false (and err nil) if f is not version 1.
func readSummaryV1(f *os.File, size int64) (sum Summary, ok bool, err error) {
	var h [v1HeaderSize]byte
	if size < v1HeaderSize+4 {
		return sum, false, nil
	}
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return sum, false, nil
	}
	le := binary.LittleEndian
	if string(h[:8]) != magic || le.Uint32(h[8:]) != 1 {
		return sum, false, nil
	}
	if got, want := crc32.Checksum(h[:v1HeaderCRCOffs], castagnoli), le.Uint32(h[v1HeaderCRCOffs:]); got != want {
		return sum, true, fmt.Errorf("%w: version 1 header checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	var declared uint64 = v1HeaderSize + 4
	for _, p := range []uint64{uint64(le.Uint16(h[80:])), uint64(le.Uint32(h[60:])) * blockSize, le.Uint64(h[64:]), le.Uint64(h[72:])} {
		if p > MaxFileSize || declared+p > MaxFileSize {
			return sum, true, fmt.Errorf("%w: version 1 sections out of range", ErrCorrupt)
		}
		declared += p
	}
	if declared != uint64(size) {
		return sum, true, fmt.Errorf("%w: %d bytes, not the %d its version 1 header says", ErrCorrupt, size, declared)
	}
	return Summary{
		Monotone: le.Uint32(h[12:])&flagMonotone != 0,
		First:    int64(le.Uint64(h[16:])),
		Last:     int64(le.Uint64(h[24:])),
		Packets:  le.Uint64(h[32:]),
		Bytes:    le.Uint64(h[40:]),
		DataEnd:  int64(le.Uint64(h[48:])),
		Flows:    int(le.Uint32(h[56:])),
		Version:  1,
	}, true, nil
}
