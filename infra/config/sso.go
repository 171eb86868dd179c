package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
)

// loadSSO reads the OpenID Connect identity providers.
//
// CIRRUS_OIDC_PROVIDERS is a JSON array of providers, each
// {"id", "name", "issuer", "client_id", "client_secret"} and optionally
// "scopes", "localpart_claim", "displayname_claim", "icon" (mxc://) and
// "brand". CIRRUS_OIDC_TRUSTED_CLIENTS lists client URL prefixes that get
// the login token without a confirmation page. CIRRUS_OIDC_ALLOW_PRIVATE lets issuers be on private or loopback
// addresses (tests, or a provider in the deployment's own network).
func loadSSO(get Getenv, c *Config) error {
	var err error
	if c.Server.SSO.AllowPrivate, err = boolVar(get, "CIRRUS_OIDC_ALLOW_PRIVATE", false); err != nil {
		return err
	}
	for _, p := range splitList(get("CIRRUS_OIDC_TRUSTED_CLIENTS")) {
		u, err := url.Parse(p)
		if err != nil || u.Scheme == "" || (u.Scheme == "http" || u.Scheme == "https") && (u.Host == "" || u.Path == "") {
			return fmt.Errorf("CIRRUS_OIDC_TRUSTED_CLIENTS entry %q must be an absolute URL prefix with a path, e.g. https://app.example.org/", p)
		}
		c.Server.SSO.TrustedClients = append(c.Server.SSO.TrustedClients, p)
	}
	raw := strings.TrimSpace(get("CIRRUS_OIDC_PROVIDERS"))
	if raw == "" {
		return nil
	}
	var ps []clientapi.SSOProvider
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ps); err != nil {
		return fmt.Errorf("CIRRUS_OIDC_PROVIDERS is not a JSON array of providers: %v", err)
	}
	seen := map[string]bool{}
	for i, p := range ps {
		// Secrets are never echoed in errors.
		where := fmt.Sprintf("CIRRUS_OIDC_PROVIDERS[%d]", i)
		switch {
		case p.ID == "" || len(p.ID) > 64 || strings.ContainsAny(p.ID, "/?#% "):
			return fmt.Errorf("%s: id %q must be 1-64 characters without / ? # %% or spaces", where, p.ID)
		case seen[p.ID]:
			return fmt.Errorf("%s: id %q is used twice", where, p.ID)
		case p.ClientID == "":
			return fmt.Errorf("%s (%s): client_id is required", where, p.ID)
		case p.Icon != "" && !strings.HasPrefix(p.Icon, "mxc://"):
			return fmt.Errorf("%s (%s): icon must be an mxc:// URI", where, p.ID)
		}
		u, err := url.Parse(p.Issuer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s (%s): issuer %q must be an http(s) URL", where, p.ID, p.Issuer)
		}
		if p.Name == "" {
			ps[i].Name = p.ID
		}
		seen[p.ID] = true
	}
	c.Server.SSO.Providers = ps
	return nil
}
