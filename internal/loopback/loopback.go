// Package loopback tells whether a host name or address stays on the
// machine: where the API may listen without TLS, and where a fleet peer may
// be reached over plain HTTP.
package loopback

import "net"

// Host reports whether host names only loopback addresses: "localhost" or
// a loopback IP. An empty host (every address) is not.
func Host(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
