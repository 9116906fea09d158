// Package certs creates the certificates that guard stenod's API: a private
// CA, a server certificate signed by it and a client certificate signed by
// it, with the file names and modes stenographer's stenokeys.sh uses, so a
// certificate directory made for stenod also works for stenoread and
// stenocurl, and the other way round.
//
// Keys are ECDSA P-256, written as PKCS #8 PEM; certificates are X.509 PEM.
// Everything is made with crypto/x509: no openssl is needed.
//
// Init never overwrites: if any of the six files exists it fails with
// ErrExist and writes nothing.
//
// Who reads what: the server needs ca_cert.pem, server_cert.pem and
// server_key.pem; a client ca_cert.pem, client_cert.pem and client_key.pem;
// ca_key.pem only signs. A service that runs as its own user (the systemd
// unit runs stenod as the user stenod) reads its key when Options.ServerUID
// gives the key to that user.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The file names are stenographer's, so that its clients find them.
const (
	CACert     = "ca_cert.pem"
	CAKey      = "ca_key.pem"
	ServerCert = "server_cert.pem"
	ServerKey  = "server_key.pem"
	ClientCert = "client_cert.pem"
	ClientKey  = "client_key.pem"
)

// File modes. The server key is for the service user alone
// (Options.ServerUID); the client key may be shared with a group of analysts
// (Options.GID), as stenographer does with its "stenographer" group; the CA
// key signs new clients and is kept as private as the server key. A
// directory Init creates is ModeDir, whatever the umask, so that the service
// user reaches its key; the key files' own modes guard them.
const (
	ModeCert      fs.FileMode = 0o644
	ModeCAKey     fs.FileMode = 0o600
	ModeServerKey fs.FileMode = 0o600
	ModeClientKey fs.FileMode = 0o640
	ModeDir       fs.FileMode = 0o755
)

// ErrExist: the directory already holds one of the files Init writes.
var ErrExist = errors.New("certificate file already exists")

// Options say what Init puts in the certificates.
type Options struct {
	// Hosts are extra DNS names or IP addresses for the server certificate,
	// beside localhost, 127.0.0.1, ::1 and the machine's host name.
	Hosts []string
	// Validity is how long every certificate is valid.
	Validity time.Duration
	// GID, when not negative, becomes the group of the client key.
	GID int
	// ServerUID, when not negative, becomes the owner of the server key:
	// the user the service runs as, which then reads its key without being
	// root. Giving a file to another user needs root (CAP_CHOWN).
	ServerUID int
	// Now is the start of validity; the zero value means time.Now().
	Now time.Time
}

// DefaultOptions returns ten years of validity and no owner or group
// change.
func DefaultOptions() Options {
	return Options{Validity: 10 * 365 * 24 * time.Hour, GID: -1, ServerUID: -1}
}

// Result says what Init wrote.
type Result struct {
	Files     []string // paths, in the order written
	DNSNames  []string // of the server certificate
	IPs       []net.IP // of the server certificate
	NotBefore time.Time
	NotAfter  time.Time
}

// Init creates dir (0755) if needed and writes the CA, server and client
// certificates and keys into it.
func Init(dir string, opts Options) (*Result, error) {
	if opts.Validity <= 0 {
		return nil, fmt.Errorf("certs: validity %v must be positive", opts.Validity)
	}
	for _, name := range []string{CACert, CAKey, ServerCert, ServerKey, ClientCert, ClientKey} {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("certs: %s: %w (remove the old files first)", p, ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("certs: %w", err)
		}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	// A minute of slack absorbs clock skew between sensor and analyst.
	res := &Result{NotBefore: now.Add(-time.Minute).UTC(), NotAfter: now.Add(opts.Validity).UTC()}
	res.DNSNames, res.IPs = serverNames(opts.Hosts)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate CA key: %w", err)
	}
	host, _ := os.Hostname()
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "stenod CA " + host, Organization: []string{"stenod"}},
		NotBefore:             res.NotBefore,
		NotAfter:              res.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, caCert, err := sign(caTmpl, nil, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate server key: %w", err)
	}
	srvDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "stenod server " + host, Organization: []string{"stenod"}},
		NotBefore:   res.NotBefore,
		NotAfter:    res.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    res.DNSNames,
		IPAddresses: res.IPs,
	}, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: server certificate: %w", err)
	}

	cliKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate client key: %w", err)
	}
	cliDER, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "stenod client", Organization: []string{"stenod"}},
		NotBefore:   res.NotBefore,
		NotAfter:    res.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &cliKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: client certificate: %w", err)
	}

	if err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	files := []struct {
		name     string
		pem      []byte
		mode     fs.FileMode
		uid, gid int
	}{
		{CACert, certPEM(caDER), ModeCert, -1, -1},
		{CAKey, nil, ModeCAKey, -1, -1},
		{ServerCert, certPEM(srvDER), ModeCert, -1, -1},
		{ServerKey, nil, ModeServerKey, opts.ServerUID, -1},
		{ClientCert, certPEM(cliDER), ModeCert, -1, -1},
		{ClientKey, nil, ModeClientKey, -1, opts.GID},
	}
	for i, k := range []*ecdsa.PrivateKey{caKey, srvKey, cliKey} {
		if files[2*i+1].pem, err = keyPEM(k); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", files[2*i+1].name, err)
		}
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFile(p, f.pem, f.mode, f.uid, f.gid); err != nil {
			// Leave no half set behind: a later Init would refuse it.
			for _, w := range res.Files {
				err = errors.Join(err, os.Remove(w))
			}
			return nil, fmt.Errorf("certs: %w", err)
		}
		res.Files = append(res.Files, p)
	}
	return res, nil
}

// makeDir creates dir and its missing parents with mode ModeDir, whatever
// the umask; an existing directory is left as it is.
func makeDir(dir string) error {
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, ModeDir); err != nil {
		return err
	}
	return os.Chmod(dir, ModeDir)
}

// serverNames returns the names a client may use to reach this machine.
func serverNames(extra []string) ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	add := func(h string) {
		if h == "" {
			return
		}
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			return
		}
		if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	for _, h := range extra {
		add(h)
	}
	return dns, ips
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	// 128 random bits: serials must be unique per CA and unpredictable.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return der, c, err
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeFile creates path exclusively with exactly mode (whatever the umask)
// and, when uid or gid is not negative, that owner or group.
func writeFile(path string, data []byte, mode fs.FileMode, uid, gid int) (err error) {
	// Created 0600 and widened afterwards, so a key is never readable by
	// others, not even for a moment.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, f.Close())
		if err != nil {
			err = errors.Join(err, os.Remove(path))
		}
	}()
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("set owner of %s to %d:%d: %w", path, uid, gid, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}
