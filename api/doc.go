// Package api serves stenod's HTTP API: stenographer's POST /query (so
// stenoread, stenocurl and Security Onion work unchanged), pcap and pcapng
// downloads, flow summaries, spool statistics, Prometheus metrics, a health
// check and pprof. docs/api.md is the user's reference.
//
// Access: on a loopback address the API may be plain HTTP; anywhere else it
// needs Config.CertsDir, and then it speaks only TLS (1.2 or later) and
// accepts only clients whose certificate is signed by the CA in that
// directory (see internal/certs and `stenod certs init`).
//
// Answers: a query's packets stream as they are read. The first 256 KiB are
// held back, so a query that fails early gets a 500 (or, past
// Config.QueryTimeout or cut off by the spool for capture, spool.ErrRevoked,
// a 503) with the reason as text; a failure after that
// aborts the stream (HTTP/1.1: the connection closes before the last chunk;
// HTTP/2: the stream is reset), which every HTTP client reports as an error.
// An answer is never ended as if it were whole when it is not. A client
// that goes away cancels its query through the request's context.
//
// Priority: each query runs on an OS thread of its own whose nice value is
// raised by 10 and whose I/O priority is the lowest best-effort level, and
// the thread ends with the query; capture threads keep their priority.
//
// The package owns no global state: metrics go to the registry the caller
// passes, routes to the Server's own router, and pprof is mounted on it
// rather than on http.DefaultServeMux. The caller owns the spool; Serve owns
// and closes the listener it is given.
package api
