package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/internal/testenv"
)

// testCA writes a CA certificate and key as PEM files and returns their paths.
func testCA(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestFederationCAMintedCertificates: servers that mint their federation
// certificates from one CA (CIRRUS_FEDERATION_TLS_CA_CERT/KEY) federate
// with full certificate checks; a server whose certificate comes from
// another CA is not trusted.
func TestFederationCAMintedCertificates(t *testing.T) {
	ctx := context.Background()
	cert, key := testCA(t, "cirrus test federation CA")
	vars := map[string]string{"CIRRUS_FEDERATION_TLS_SKIP_VERIFY": "false",
		"CIRRUS_FEDERATION_TLS_CA_CERT": cert, "CIRRUS_FEDERATION_TLS_CA_KEY": key}
	srv := testenv.StartFederation(t, 2, vars)
	a, b := srv[0], srv[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	room := sharedRoom(t, a, b, alice, bob, 1)
	if _, err := bob.SendText(ctx, room, "verified both ways"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "alice gets bob's message", func() error { return hasBody(ctx, alice, room, "verified both ways") })

	otherCert, otherKey := testCA(t, "some other CA")
	other := testenv.StartFederation(t, 1, map[string]string{"CIRRUS_FEDERATION_TLS_SKIP_VERIFY": "false",
		"CIRRUS_FEDERATION_TLS_CA_CERT": otherCert, "CIRRUS_FEDERATION_TLS_CA_KEY": otherKey})[0]
	carol := fedUser(t, other, "carol")
	// carol's server cannot verify a's certificate: the join fails.
	_, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Name}})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server with an untrusted certificate took part in federation: %v", err)
	}
}
