package config

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/infra/fedtls"
)

// loadFederation reads the server-server settings.
func loadFederation(get Getenv, c *Config) error {
	c.FederationListenAddr = get("CIRRUS_FEDERATION_LISTEN_ADDR")
	if c.FederationListenAddr != "" {
		if _, _, err := net.SplitHostPort(c.FederationListenAddr); err != nil {
			return fmt.Errorf("CIRRUS_FEDERATION_LISTEN_ADDR=%q is not host:port", c.FederationListenAddr)
		}
	}
	c.FederationTLSCert, c.FederationTLSKey = get("CIRRUS_FEDERATION_TLS_CERT"), get("CIRRUS_FEDERATION_TLS_KEY")
	if (c.FederationTLSCert == "") != (c.FederationTLSKey == "") {
		return fmt.Errorf("CIRRUS_FEDERATION_TLS_CERT and CIRRUS_FEDERATION_TLS_KEY must be set together (or neither, for a self-signed certificate)")
	}
	c.FederationTLSCACert, c.FederationTLSCAKey = get("CIRRUS_FEDERATION_TLS_CA_CERT"), get("CIRRUS_FEDERATION_TLS_CA_KEY")
	if (c.FederationTLSCACert == "") != (c.FederationTLSCAKey == "") {
		return fmt.Errorf("CIRRUS_FEDERATION_TLS_CA_CERT and CIRRUS_FEDERATION_TLS_CA_KEY must be set together")
	}
	if c.FederationTLSCACert != "" && c.FederationTLSCert != "" {
		return fmt.Errorf("CIRRUS_FEDERATION_TLS_CERT and CIRRUS_FEDERATION_TLS_CA_CERT exclude each other: a certificate, or a CA to mint one from")
	}
	f := &c.Server.Federation
	var err error
	if c.FederationTLSCACert != "" {
		// Other servers' certificates minted by the same CA are trusted too.
		if f.RootCAs, err = fedtls.TrustWith(c.FederationTLSCACert); err != nil {
			return fmt.Errorf("CIRRUS_FEDERATION_TLS_CA_CERT: %w", err)
		}
	}
	if f.SkipVerify, err = boolVar(get, "CIRRUS_FEDERATION_TLS_SKIP_VERIFY", false); err != nil {
		return err
	}
	if f.AllowPrivate, err = boolVar(get, "CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS", false); err != nil {
		return err
	}
	if f.SkipVerify {
		c.FederationWarnings = append(c.FederationWarnings, "CIRRUS_FEDERATION_TLS_SKIP_VERIFY=true: other servers' TLS certificates are NOT checked (loopback tests only)")
	}
	if f.AllowPrivate {
		c.FederationWarnings = append(c.FederationWarnings, "CIRRUS_FEDERATION_ALLOW_PRIVATE_ADDRS=true: federation may connect to loopback and private addresses (loopback tests only)")
	}
	if f.RequestTimeout, err = durationVar(get, "CIRRUS_FEDERATION_REQUEST_TIMEOUT", 60*time.Second); err != nil {
		return err
	}
	if f.MinBackoff, err = durationVar(get, "CIRRUS_FEDERATION_RETRY_MIN", 5*time.Second); err != nil {
		return err
	}
	if f.MaxBackoff, err = durationVar(get, "CIRRUS_FEDERATION_RETRY_MAX", time.Hour); err != nil {
		return err
	}
	if kid := get("CIRRUS_SIGNING_KEY_ROTATE_FROM"); kid != "" {
		if !strings.HasPrefix(kid, "ed25519:") || len(kid) == len("ed25519:") {
			return fmt.Errorf("CIRRUS_SIGNING_KEY_ROTATE_FROM=%q is not a signing key id (ed25519:<version>)", kid)
		}
		c.RotateSigningKeyFrom = kid
	}
	if f.MinBackoff <= 0 || f.MaxBackoff < f.MinBackoff {
		return fmt.Errorf("CIRRUS_FEDERATION_RETRY_MIN=%s must be positive and at most CIRRUS_FEDERATION_RETRY_MAX=%s", f.MinBackoff, f.MaxBackoff)
	}
	return nil
}
