package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/stenod/stenod/alert"
)

// HeaderQuery names, on an alert's answer, the query it was answered
// with: the analyst sees which connection and window the packets are of.
const HeaderQuery = "X-Stenod-Query"

// MaxAlertWindow bounds ?window=: a pivot is about one connection.
const MaxAlertWindow = 7 * 24 * time.Hour

// handleAlert answers POST /v1/alert: one Suricata eve.json or Zeek JSON
// log line in the body, the packets of its connection in the answer.
func (s *Server) handleAlert(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, "event", alert.MaxEventBytes)
	if !ok {
		return
	}
	v := r.URL.Query()
	format, opts, err := downloadOptions(v)
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	window := s.cfg.AlertWindow
	if d := v.Get("window"); d != "" {
		if window, err = time.ParseDuration(d); err != nil || window <= 0 || window > MaxAlertWindow {
			s.fail(w, http.StatusBadRequest, outcomeBadQuery, fmt.Sprintf("window %q: want a duration from 1s to %v, such as 10m", d, MaxAlertWindow))
			return
		}
	}
	ev, err := alert.Parse(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, outcomeBadQuery, err.Error())
		return
	}
	text := ev.Query(window)
	w.Header().Set(HeaderQuery, text)
	name := "stenod-alert"
	if n := fileNamePart(ev.Name); n != "" {
		name += "-" + n
	}
	s.answer(w, r, text, format, opts, name+"-"+ev.Time.UTC().Format("20060102T150405Z")+"."+format)
}

// fileNamePart keeps the characters of s that are safe in a file name
// and in a quoted Content-Disposition.
func fileNamePart(s string) string {
	return strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			return c
		}
		return -1
	}, s)
}
