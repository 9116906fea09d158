// Package pcapio reads pcap and pcapng capture files and writes the two
// formats stenod stores and serves: nanosecond pcap and pcapng.
//
// stenod reads captures with its own reader rather than gopacket/pcapgo for
// three reasons that matter to import: every error names the byte offset of
// the record or block that is bad (pcapgo's pcapng reader buffers internally
// and cannot say where it is), a hostile length field is refused before any
// allocation, and reading a packet allocates nothing. Tests check this reader
// against pcapgo on every committed test capture (testdata/pcaps).
//
// Readers and writers own no file descriptors: callers open and close files.
package pcapio
