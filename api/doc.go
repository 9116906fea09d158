// Package api serves stenod's HTTP API: stenographer's POST /query (so
// stenoread, stenocurl and Security Onion work unchanged), pcap and pcapng
// downloads, flow summaries (sorted and paged), a time histogram and packet
// lists read from the index and the spool, spool statistics, suspending
// the per-connection cutoff for a query's connections (Options.Cutoff,
// POST /v1/cutoff/suspend), Prometheus
// metrics, a health check and, when asked for, pprof; and, at /, the
// analyst's web page (web/, embedded: plain HTML, CSS and JavaScript that
// use only those JSON endpoints). docs/api.md is the user's reference.
//
// Access: by default the API is plain HTTP on a Unix socket (Config.Socket, mode
// 0660, group Config.SocketGroup), which only root and that group reach.
// A loopback TCP address may be plain HTTP too, with a warning (any local
// user can connect); anywhere else it needs Config.CertsDir, and then it
// speaks only TLS (1.2 or later) and accepts only clients whose
// certificate is signed by the CA in that directory (see internal/certs
// and `stenod certs init`). pprof is mounted only with Config.PProf.
//
// Connections: Serve wraps its listener so that no more than
// ConnLimits.Total connections are open at once, nor ConnLimits.PerClient
// from one TCP client address; one over a cap is closed at once and
// counted. The caps are derived from the open files limit the caller
// passes (Options.FDLimit), after a reserve for capture, so that no flood
// of connections takes the descriptors capture needs. Connections that
// send no headers (or do not finish the TLS handshake) within 5 s are
// closed.
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
// and closes the listener it is given (the Unix socket's listener from
// Listen removes the socket file when closed).
package api
