package spool

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/stenod/stenod/flow"
	"github.com/stenod/stenod/pcapio"
)

// ErrLinkType: a capture holds packets of a link type other than Ethernet.
var ErrLinkType = errors.New("link type is not Ethernet")

// ImportResult counts what an import stored.
type ImportResult struct {
	Packets int64
	Bytes   int64 // captured bytes stored
}

// Import stores every packet of a pcap or pcapng capture through w, the
// same path captured packets take. It stops at the first problem (another
// link type, a corrupt or truncated record, a timestamp pcap cannot hold)
// with an error that names the byte offset in the capture; every packet
// before that point is stored. name is used in error messages.
func Import(ctx context.Context, w *Writer, name string, r io.Reader) (ImportResult, error) {
	var res ImportResult
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", name, err)
	}
	if ifs := rd.Interfaces(); !rd.IsPcapng() && ifs[0].LinkType != pcapio.LinkTypeEthernet {
		return res, fmt.Errorf("import %s: offset 20: %w: link type %s; stenod stores Ethernet frames only", name, ErrLinkType, pcapio.LinkTypeName(ifs[0].LinkType))
	}
	var p pcapio.Packet
	var k flow.Key
	for i := 0; ; i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return res, fmt.Errorf("import %s: %w", name, context.Cause(ctx))
		}
		err := rd.Next(&p)
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("import %s: %w (%d packets before it stored)", name, err, res.Packets)
		}
		if p.LinkType != pcapio.LinkTypeEthernet {
			return res, fmt.Errorf("import %s: offset %d: %w: link type %s; stenod stores Ethernet frames only (%d packets before it stored)",
				name, p.Offset, ErrLinkType, pcapio.LinkTypeName(p.LinkType), res.Packets)
		}
		flow.Parse(p.Data, &k)
		if err := w.Append(p.Timestamp, p.OrigLen, p.Data, &k); err != nil {
			return res, fmt.Errorf("import %s: offset %d: %w (%d packets before it stored)", name, p.Offset, err, res.Packets)
		}
		res.Packets++
		res.Bytes += int64(min(len(p.Data), w.sp.cfg.SnapLen))
	}
}
