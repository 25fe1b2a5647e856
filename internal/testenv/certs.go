package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a throwaway certificate authority generated in Go for one test run.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	// CertFile is the CA certificate in PEM, written to disk for servers.
	CertFile string
}

// CertPair names a PEM certificate and key on disk.
type CertPair struct {
	CertFile string
	KeyFile  string
}

// NewCA generates a CA and writes its certificate into dir.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testenv: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubeboot-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testenv: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der), CertFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(ca.CertFile, ca.certPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// CertPool returns a pool holding only this CA.
func (ca *CA) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// PEM returns the CA certificate in PEM form.
func (ca *CA) PEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Issue signs a certificate usable for both serving and client auth on
// 127.0.0.1 and localhost, with the given common name and organizations,
// and writes it to dir/<base>.crt and dir/<base>.key.
func (ca *CA) Issue(dir, base, commonName string, orgs ...string) (CertPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return CertPair{}, fmt.Errorf("testenv: certificate %s: %w", base, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CertPair{}, err
	}
	pair := CertPair{CertFile: filepath.Join(dir, base+".crt"), KeyFile: filepath.Join(dir, base+".key")}
	if err := os.WriteFile(pair.CertFile, pemBlock("CERTIFICATE", der), 0o600); err != nil {
		return CertPair{}, err
	}
	if err := os.WriteFile(pair.KeyFile, pemBlock("EC PRIVATE KEY", keyDER), 0o600); err != nil {
		return CertPair{}, err
	}
	return pair, nil
}

// ClientTLS returns a client *tls.Config trusting this CA and presenting pair
// (pass an empty CertPair for a client without a certificate).
func (ca *CA) ClientTLS(pair CertPair) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}
	if pair.CertFile != "" {
		c, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("testenv: client certificate %s: %w", pair.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// writeRSAKeyPair writes an RSA private key and its public key in PEM, as the
// kube-apiserver wants for service-account token signing.
func writeRSAKeyPair(keyFile, pubFile string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubFile, pemBlock("PUBLIC KEY", pub), 0o600)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}
