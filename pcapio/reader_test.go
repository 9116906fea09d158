package pcapio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stenod/stenod/internal/testkit/testpcaps"
)

// TestReaderAgreesWithPcapgo reads every committed test capture with this
// reader and with gopacket/pcapgo (through testpcaps) and requires the same
// packets, bytes and timestamps, as far as pcapgo reads.
func TestReaderAgreesWithPcapgo(t *testing.T) {
	files, compared := 0, 0
	for _, path := range testpcaps.Files(t, "") {
		ref, err := testpcaps.Read(path)
		if err != nil {
			continue // pcapgo cannot read it; covered by TestReaderNeverPanics
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(f)
		if err != nil {
			f.Close()
			if len(ref.Packets) > 0 {
				t.Errorf("%s: pcapgo reads %d packets, NewReader: %v", path, len(ref.Packets), err)
			}
			continue
		}
		files++
		var p Packet
		for i, want := range ref.Packets {
			if err := r.Next(&p); err != nil {
				t.Errorf("%s: packet %d: %v (pcapgo read %d packets)", path, i, err, len(ref.Packets))
				break
			}
			if !bytes.Equal(p.Data, want.Data) || (p.Timestamp != want.Timestamp.UnixNano() && !r.badFraction) || p.OrigLen != max(want.OrigLen, len(want.Data)) {
				t.Errorf("%s: packet %d differs: ts %d/%d len %d/%d orig %d/%d",
					path, i, p.Timestamp, want.Timestamp.UnixNano(), len(p.Data), len(want.Data), p.OrigLen, want.OrigLen)
				break
			}
			compared++
		}
		f.Close()
	}
	t.Logf("%d files, %d packets agree with pcapgo", files, compared)
	if compared < 10000 {
		t.Fatalf("only %d packets compared", compared)
	}
}

// TestReaderNeverPanics reads every test capture to its end, including the
// deliberately broken ones, and requires a clean EOF or a *FormatError.
func TestReaderNeverPanics(t *testing.T) {
	for _, path := range testpcaps.Files(t, "") {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		checkRead(t, path, data)
	}
}

func checkRead(t *testing.T, name string, data []byte) int {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: NewReader error is not a *FormatError: %v", name, err)
		}
		return 0
	}
	var p Packet
	n := 0
	for {
		err := r.Next(&p)
		if err == io.EOF {
			return n
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset > int64(len(data)) {
				t.Errorf("%s: bad error after %d packets: %v", name, n, err)
			}
			return n
		}
		if p.CapLen != len(p.Data) || p.CapLen > MaxPacket {
			t.Errorf("%s: packet %d: caplen %d, data %d", name, n, p.CapLen, len(p.Data))
		}
		n++
	}
}

func TestTruncatedNamesOffset(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf, 65535)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := w.WritePacket(int64(i)*1e9+7, 60, make([]byte, 60), ""); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	data := buf.Bytes()[:buf.Len()-10]
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	for range 2 {
		if err := r.Next(&p); err != nil {
			t.Fatal(err)
		}
	}
	err = r.Next(&p)
	var fe *FormatError
	if !errors.As(err, &fe) || !errors.Is(err, ErrTruncated) || fe.Offset != 24+2*(16+60) {
		t.Fatalf("got %v, want truncated at offset %d", err, 24+2*(16+60))
	}
}

func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := NewPcapngWriter(&buf, 65535)
	w.WritePacket(1e18, 64, make([]byte, 60), "eth0")
	w.Flush()
	f.Add(buf.Bytes())
	buf.Reset()
	pw, _ := NewPcapWriter(&buf, 65535)
	pw.WritePacket(1e18, 64, make([]byte, 60), "")
	pw.Flush()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) { checkRead(t, "fuzz", data) })
}

func BenchmarkReaderPcap(b *testing.B) {
	var buf bytes.Buffer
	w, _ := NewPcapWriter(&buf, 65535)
	pkt := make([]byte, 64)
	for i := range 10000 {
		w.WritePacket(int64(i), 64, pkt, "")
	}
	w.Flush()
	data := buf.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)) / 10000)
	var p Packet
	r, _ := NewReader(bytes.NewReader(data))
	for i := 0; b.Loop(); i++ {
		if err := r.Next(&p); err == io.EOF {
			r, _ = NewReader(bytes.NewReader(data))
		}
	}
}
