package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	opts := DefaultOptions()
	opts.Hosts = []string{"sensor.example", "192.0.2.7", "2001:db8::7", "localhost"}
	opts.GID = os.Getgid()
	opts.ServerUID = os.Getuid() // giving a file to oneself needs no privilege
	res, err := Init(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 6 {
		t.Fatalf("wrote %v", res.Files)
	}
	modes := map[string]fs.FileMode{CACert: ModeCert, CAKey: ModeCAKey, ServerCert: ModeCert,
		ServerKey: ModeServerKey, ClientCert: ModeCert, ClientKey: ModeClientKey}
	for name, want := range modes {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
		if name == ClientKey {
			if gid := st.Sys().(*syscall.Stat_t).Gid; int(gid) != opts.GID {
				t.Errorf("client key gid %d, want %d", gid, opts.GID)
			}
		}
		if name == ServerKey {
			if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != opts.ServerUID {
				t.Errorf("server key uid %d, want %d", uid, opts.ServerUID)
			}
		}
	}

	ca := readCert(t, filepath.Join(dir, CACert))
	if !ca.IsCA || ca.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA: IsCA %v, algorithm %v", ca.IsCA, ca.PublicKeyAlgorithm)
	}
	if k, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is not P-256")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := readCert(t, filepath.Join(dir, ServerCert))
	host, _ := os.Hostname()
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "sensor.example", "192.0.2.7", "2001:db8::7", host} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %q: %v", name, err)
		}
	}
	if n := len(srv.DNSNames); n != len(slices.Compact(slices.Sorted(slices.Values(srv.DNSNames)))) {
		t.Errorf("duplicate DNS names %v", srv.DNSNames)
	}
	if !slices.ContainsFunc(srv.IPAddresses, net.ParseIP("192.0.2.7").Equal) {
		t.Errorf("IPs %v", srv.IPAddresses)
	}
	cli := readCert(t, filepath.Join(dir, ClientCert))
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("client certificate is good for server auth")
	}
	if d := time.Until(cli.NotAfter); d < 9*365*24*time.Hour {
		t.Errorf("client certificate valid only %v more", d)
	}
	for _, pair := range [][2]string{{ServerCert, ServerKey}, {ClientCert, ClientKey}} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])); err != nil {
			t.Errorf("%s: %v", pair[1], err)
		}
	}

	// Never overwrite: a second Init fails and leaves the files as they were.
	before, _ := os.ReadFile(filepath.Join(dir, CAKey))
	if _, err := Init(dir, opts); !errors.Is(err, ErrExist) {
		t.Fatalf("second Init: %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKey))
	if string(before) != string(after) {
		t.Fatal("second Init changed the CA key")
	}
}

func TestInitModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	// A directory Init creates is ModeDir, so that the service user
	// reaches its key.
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := Init(dir, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{"": ModeDir, ClientKey: ModeClientKey, CACert: ModeCert} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v under umask 077, want %v", name, st.Mode().Perm(), want)
		}
	}
}

func TestInitRejectsBadValidity(t *testing.T) {
	opts := DefaultOptions()
	opts.Validity = 0
	if _, err := Init(t.TempDir(), opts); err == nil {
		t.Fatal("zero validity accepted")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s: no certificate PEM block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
