// Package fedtls gives the federation listener its TLS certificate: the
// configured certificate and key files; or one minted at start from a
// configured CA (servers that share the CA trust each other: a private
// federation, or several local servers tested with full certificate
// checks); or, with neither, a self-signed certificate for local use
// (other servers must then skip verification, which only loopback tests do).
package fedtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	mfed "maunium.net/go/mautrix/federation"
)

// Files names the PEM files of a certificate and key, or of a CA to mint
// one from (Cert/Key and CACert/CAKey exclude each other).
type Files struct {
	Cert, Key     string
	CACert, CAKey string
}

// Config returns the listener's TLS configuration.
func Config(f Files, serverName string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	switch {
	case f.Cert != "" || f.Key != "":
		if cert, err = tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
			return nil, fmt.Errorf("CIRRUS_FEDERATION_TLS_CERT/KEY: %w", err)
		}
	case f.CACert != "" || f.CAKey != "":
		ca, err := tls.LoadX509KeyPair(f.CACert, f.CAKey)
		if err != nil {
			return nil, fmt.Errorf("CIRRUS_FEDERATION_TLS_CA_CERT/KEY: %w", err)
		}
		if cert, err = Minted(serverName, ca); err != nil {
			return nil, fmt.Errorf("minting the federation certificate: %w", err)
		}
	default:
		if cert, err = SelfSigned(serverName); err != nil {
			return nil, err
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// TrustWith returns the system's root certificates plus those in the PEM
// file caFile.
func TrustWith(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in " + caFile)
	}
	return pool, nil
}

// SelfSigned makes a certificate for the server name's host, localhost and
// the loopback addresses, valid for a year.
func SelfSigned(serverName string) (tls.Certificate, error) {
	return Minted(serverName, tls.Certificate{})
}

// Minted makes a certificate for the server name's host, localhost and the
// loopback addresses, valid for a year, signed by ca (self-signed when ca
// holds no certificate).
func Minted(serverName string, ca tls.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _, ok := mfed.ParseServerName(serverName)
	if !ok {
		host = serverName
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	parent, signer := tmpl, any(key)
	if len(ca.Certificate) > 0 {
		if parent, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
		signer = ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
