package api

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// webFiles is the analyst's page: plain HTML, CSS and JavaScript, no build
// step and nothing fetched from elsewhere (a sensor has no internet), so
// the binary serves all of it, behind the same socket or client
// certificates as the packets it shows.
//
//go:embed web
var webFiles embed.FS

// webRoutes mounts the page at / and /ui/, and the JSON endpoints it uses
// beside /v1/flows and /v1/stats.
func (s *Server) webRoutes(r chi.Router) {
	r.Get("/v1/histogram", s.handleHistogram)
	r.Get("/v1/packets", s.handlePackets)
	r.Get("/v1/parse", s.handleParse)
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		// Only a build without the directory; go:embed makes that a
		// compile error.
		panic(err)
	}
	files := http.FileServerFS(sub)
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w.Header())
		http.ServeFileFS(w, r, sub, "index.html")
	})
	r.Get("/ui/*", func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w.Header())
		http.StripPrefix("/ui", files).ServeHTTP(w, r)
	})
}

// pageHeaders keep the page to itself: its own scripts and styles only,
// never framed, no referrer with a query in it sent anywhere.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// Embedded files carry no modification time: revalidate each time,
	// so a new binary's page is never mixed with an old one's.
	h.Set("Cache-Control", "no-cache")
}
