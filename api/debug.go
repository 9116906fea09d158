package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
)

// handleDebugStats serves /v1/stats in the format of stenographer's
// /debug/stats: one "name<TAB>value" line per number, sorted by name. A
// name is the number's path in the /v1/stats answer, keys joined with dots
// and array elements numbered from 0 (spool.dirs.0.bytes,
// capture.interfaces.0.queues.1.packets); true and false are 1 and 0;
// strings (times, names, reasons) are left out.
func (s *Server) handleDebugStats(w http.ResponseWriter, _ *http.Request) {
	data, err := json.Marshal(s.statsAnswer())
	var v any
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		err = dec.Decode(&v)
	}
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "", fmt.Sprintf("encode stats: %v", err))
		return
	}
	var lines []string
	flatten("", v, &lines)
	slices.Sort(lines)
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if _, err := w.Write(b.Bytes()); err != nil {
		s.log.Info("write debug stats", "err", err)
	}
}

// flatten appends a "name\tvalue" line for every number and boolean in v.
func flatten(name string, v any, lines *[]string) {
	join := func(k string) string {
		if name == "" {
			return k
		}
		return name + "." + k
	}
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			flatten(join(k), e, lines)
		}
	case []any:
		for i, e := range v {
			flatten(join(strconv.Itoa(i)), e, lines)
		}
	case json.Number:
		*lines = append(*lines, name+"\t"+v.String())
	case bool:
		n := "0"
		if v {
			n = "1"
		}
		*lines = append(*lines, name+"\t"+n)
	}
}

// handleDebugConfig serves the daemon's effective configuration, the
// file `stenod run --print-config` writes (stenod's keys, not
// stenographer's: docs/migrating-from-stenographer.md maps them).
func (s *Server) handleDebugConfig(w http.ResponseWriter, _ *http.Request) {
	if s.config == nil {
		http.NotFound(w, nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if _, err := w.Write(s.config); err != nil {
		s.log.Info("write debug config", "err", err)
	}
}
