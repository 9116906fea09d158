// Package testpcaps finds and reads the test captures for tests.
//
// The captures are committed in the repository, in testdata/pcaps (their
// sources and licences are in testdata/pcaps/README.md). No test reads data
// from outside the repository: Dir has no override.
package testpcaps

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Packet is one captured frame with its capture metadata.
type Packet struct {
	Timestamp time.Time
	OrigLen   int
	Data      []byte
}

// Capture is a whole test capture file.
type Capture struct {
	Path     string
	LinkType layers.LinkType
	Packets  []Packet
	// Err is the read error that ended the file early, if any; Packets holds
	// what came before it.
	Err error
}

// Dir returns the directory holding the test captures.
func Dir(tb testing.TB) string {
	tb.Helper()
	d := filepath.Join(RepoRoot(), "testdata", "pcaps")
	if _, err := os.Stat(d); err != nil {
		tb.Fatalf("test captures not found at %s: %v", d, err)
	}
	return d
}

// RepoRoot returns the repository's top directory, found from this
// source file's place in it.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	// internal/testkit/testpcaps/testpcaps.go -> repo root
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Files lists every capture file (pcap or pcapng) below sub ("" for all), sorted.
func Files(tb testing.TB, sub string) []string {
	tb.Helper()
	var out []string
	root := filepath.Join(Dir(tb), sub)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		name := filepath.Base(path)
		switch {
		case strings.HasSuffix(name, ".md"), strings.HasPrefix(name, "LICENSE"), strings.HasPrefix(name, "."):
			return nil
		}
		out = append(out, path)
		return nil
	})
	if err != nil {
		tb.Fatalf("list captures: %v", err)
	}
	sort.Strings(out)
	return out
}

// Read reads a pcap or pcapng file completely. A file that is neither gets an
// error; a file that breaks off mid-way returns what came before in Packets
// and the reason in Capture.Err.
func Read(path string) (*Capture, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return nil, fmt.Errorf("%s: read magic: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var src interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	c := &Capture{Path: path}
	if string(magic[:]) == "\x0a\x0d\x0d\x0a" {
		r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		c.LinkType = r.LinkType()
		src = r
	} else {
		r, err := pcapgo.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		c.LinkType = r.LinkType()
		src = r
	}
	for {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.Err = err
			break
		}
		c.Packets = append(c.Packets, Packet{Timestamp: ci.Timestamp, OrigLen: ci.Length, Data: data})
	}
	return c, nil
}

// Ethernet returns every readable Ethernet capture below sub, with at least
// one packet. Files of other link types and unreadable files are left out.
func Ethernet(tb testing.TB, sub string) []*Capture {
	tb.Helper()
	var out []*Capture
	for _, p := range Files(tb, sub) {
		c, err := Read(p)
		if err != nil || c.LinkType != layers.LinkTypeEthernet || len(c.Packets) == 0 {
			continue
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		tb.Fatalf("no Ethernet captures below %s", filepath.Join(Dir(tb), sub))
	}
	return out
}
