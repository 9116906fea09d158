package spool

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// stampLayout names files by the time of their first packet, so that names
// sort by time (UTC, fixed width).
const stampLayout = "20060102T150405.000000000Z"

const (
	pcapExt  = ".pcap"
	indexExt = ".idx"
)

// fileName returns the base name of a spool file.
func fileName(first int64, stream string) string {
	return time.Unix(0, first).UTC().Format(stampLayout) + "-" + stream + pcapExt
}

// parseName splits a spool file's base name into its first-packet time and
// stream; ok is false for names stenod did not write.
func parseName(base string) (first int64, stream string, ok bool) {
	if !strings.HasSuffix(base, pcapExt) || len(base) < len(stampLayout)+1+len(pcapExt)+1 {
		return 0, "", false
	}
	t, err := time.Parse(stampLayout, base[:len(stampLayout)])
	if err != nil || base[len(stampLayout)] != '-' {
		return 0, "", false
	}
	return t.UnixNano(), strings.TrimSuffix(base[len(stampLayout)+1:], pcapExt), true
}

// indexPath returns the index file that belongs to a pcap file.
func indexPath(pcapPath string) string {
	return strings.TrimSuffix(pcapPath, pcapExt) + indexExt
}

// CheckStream refuses stream names that cannot be part of a file name.
func CheckStream(stream string) error {
	if stream == "" || len(stream) > 64 {
		return fmt.Errorf("spool: stream name %q must have 1 to 64 characters", stream)
	}
	for _, c := range stream {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '@') {
			return fmt.Errorf("spool: stream name %q: character %q not allowed", stream, c)
		}
	}
	if filepath.Base(stream) != stream || strings.HasPrefix(stream, ".") {
		return fmt.Errorf("spool: stream name %q not allowed", stream)
	}
	return nil
}
