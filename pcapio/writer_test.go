package pcapio

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/gopacket/pcapgo"
)

func TestPcapngWriterReadByPcapgo(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapngWriter(&buf, 9000)
	if err != nil {
		t.Fatal(err)
	}
	pkts := [][]byte{make([]byte, 61), make([]byte, 64), make([]byte, 1)}
	for i := range pkts[0] {
		pkts[0][i] = byte(i)
	}
	names := []string{"eth1", "eth2", "eth1"}
	for i, p := range pkts {
		if err := w.WritePacket(1764132478123456789+int64(i), len(p)+3, p, names[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(buf.Bytes()), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range pkts {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(data, want) || ci.Timestamp.UnixNano() != 1764132478123456789+int64(i) || ci.Length != len(want)+3 {
			t.Fatalf("packet %d: got ts %v len %d", i, ci.Timestamp.UnixNano(), ci.Length)
		}
		ifc, _ := r.Interface(ci.InterfaceIndex)
		if ifc.Name != names[i] {
			t.Fatalf("packet %d: interface %q, want %q", i, ifc.Name, names[i])
		}
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	// And our own reader agrees.
	checkRead(t, "pcapng", buf.Bytes())
}

func TestPcapWriterReadByPcapgo(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewPcapWriter(&buf, 65535)
	w.WritePacket(1764132478123456789, 100, make([]byte, 60), "")
	w.Flush()
	r, err := pcapgo.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	_, ci, err := r.ReadPacketData()
	if err != nil || ci.Timestamp.UnixNano() != 1764132478123456789 || ci.Length != 100 || ci.CaptureLength != 60 {
		t.Fatalf("got %+v, %v", ci, err)
	}
}
