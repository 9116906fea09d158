package pcapio

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordSum is the checksum a spool index keeps of each packet record: the
// CRC-32C (Castagnoli) of the record as stored, its 16-byte header followed
// by its captured bytes. Covering the header catches a changed timestamp or
// a lowered captured length as well as damaged packet bytes, and the
// Castagnoli polynomial has a CPU instruction on amd64 and arm64.
func RecordSum(record []byte) uint32 { return crc32.Checksum(record, castagnoli) }

// RecordSumParts is RecordSum of a record whose header and data are in two
// buffers.
func RecordSumParts(header, data []byte) uint32 {
	return crc32.Update(crc32.Checksum(header, castagnoli), castagnoli, data)
}
