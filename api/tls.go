package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/stenod/stenod/internal/certs"
)

// ServerTLSConfig loads server_cert.pem, server_key.pem and ca_cert.pem from
// dir (as written by `stenod certs init`) and returns a configuration that
// accepts only clients presenting a certificate signed by that CA, on TLS
// 1.2 or later.
func ServerTLSConfig(dir string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.ServerCert), filepath.Join(dir, certs.ServerKey))
	if err != nil {
		return nil, fmt.Errorf("api: load server certificate: %w", err)
	}
	pool, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLSConfig loads client_cert.pem, client_key.pem and ca_cert.pem from
// dir: the client side of ServerTLSConfig, as stenoread and stenocurl use
// the same files.
func ClientTLSConfig(dir string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.ClientCert), filepath.Join(dir, certs.ClientKey))
	if err != nil {
		return nil, fmt.Errorf("api: load client certificate: %w", err)
	}
	pool, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
	}, nil
}

func loadCA(dir string) (*x509.CertPool, error) {
	path := filepath.Join(dir, certs.CACert)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api: load CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("api: load CA certificate: %s holds no PEM certificate", path)
	}
	return pool, nil
}
