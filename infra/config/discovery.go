package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
)

// loadDiscovery reads the support contacts, the TURN settings and the user
// directory's scope (CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS).
//
// CIRRUS_SUPPORT_CONTACTS is a comma-separated list of role=address, the
// address a Matrix user ID or an email address; a bare address has the role
// m.role.admin. CIRRUS_TURN_URIS and CIRRUS_TURN_SHARED_SECRET go together.
func loadDiscovery(get Getenv, c *Config) error {
	d := &c.Server.Discovery
	for _, entry := range splitList(get("CIRRUS_SUPPORT_CONTACTS")) {
		role, addr, ok := strings.Cut(entry, "=")
		if !ok {
			role, addr = "m.role.admin", entry
		}
		role, addr = strings.TrimSpace(role), strings.TrimSpace(addr)
		ct := clientapi.SupportContact{Role: role}
		switch {
		case role == "" || addr == "":
			return fmt.Errorf("CIRRUS_SUPPORT_CONTACTS entry %q must be role=address, e.g. m.role.admin=@admin:example.org", entry)
		case strings.HasPrefix(addr, "@"):
			if _, _, err := id.UserID(addr).Parse(); err != nil {
				return fmt.Errorf("CIRRUS_SUPPORT_CONTACTS entry %q: %q is not a Matrix user ID", entry, addr)
			}
			ct.MatrixID = addr
		case strings.Count(addr, "@") == 1 && !strings.HasPrefix(addr, "@") && !strings.HasSuffix(addr, "@"):
			ct.EmailAddress = addr
		default:
			return fmt.Errorf("CIRRUS_SUPPORT_CONTACTS entry %q: %q is neither a Matrix user ID nor an email address", entry, addr)
		}
		d.SupportContacts = append(d.SupportContacts, ct)
	}
	if p := get("CIRRUS_SUPPORT_PAGE"); p != "" {
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("CIRRUS_SUPPORT_PAGE=%q must be an http(s) URL", p)
		}
		d.SupportPage = p
	}

	d.TurnURIs = splitList(get("CIRRUS_TURN_URIS"))
	for _, u := range d.TurnURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			return fmt.Errorf("CIRRUS_TURN_URIS entry %q must start with turn:, turns: or stun:", u)
		}
	}
	// The secret is never echoed in errors.
	d.TurnSharedSecret = get("CIRRUS_TURN_SHARED_SECRET")
	if len(d.TurnURIs) > 0 && d.TurnSharedSecret == "" {
		return fmt.Errorf("CIRRUS_TURN_URIS needs CIRRUS_TURN_SHARED_SECRET (the TURN server's static-auth-secret)")
	}
	if len(d.TurnURIs) == 0 && d.TurnSharedSecret != "" {
		return fmt.Errorf("CIRRUS_TURN_SHARED_SECRET is set but CIRRUS_TURN_URIS is empty")
	}
	ttl, err := durationVar(get, "CIRRUS_TURN_TTL", clientapi.DefaultTurnTTL)
	if err != nil {
		return err
	}
	if ttl < time.Minute {
		return fmt.Errorf("CIRRUS_TURN_TTL=%q must be at least 1m", get("CIRRUS_TURN_TTL"))
	}
	d.TurnTTL = ttl
	if d.SearchAllUsers, err = boolVar(get, "CIRRUS_USER_DIRECTORY_SEARCH_ALL_USERS", false); err != nil {
		return err
	}
	return loadPolicyServer(get, d)
}

// loadPolicyServer reads CIRRUS_POLICY_SERVER_KEYS, the public keys of the
// policy server /.well-known/matrix/policy_server names: a comma-separated
// list of algorithm=key (unpadded base64), ed25519 required.
func loadPolicyServer(get Getenv, d *clientapi.DiscoveryConfig) error {
	v := get("CIRRUS_POLICY_SERVER_KEYS")
	if v == "" {
		return nil
	}
	keys := map[string]string{}
	for _, entry := range splitList(v) {
		alg, key, ok := strings.Cut(entry, "=")
		alg, key = strings.TrimSpace(alg), strings.TrimSpace(key)
		if !ok || alg == "" || key == "" {
			return fmt.Errorf("CIRRUS_POLICY_SERVER_KEYS entry %q must be algorithm=key, e.g. ed25519=<unpadded base64>", entry)
		}
		b, err := base64.RawStdEncoding.DecodeString(key)
		if err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(key); err != nil {
				return fmt.Errorf("CIRRUS_POLICY_SERVER_KEYS: the %s key is not unpadded base64", alg)
			}
		}
		if alg == "ed25519" && len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("CIRRUS_POLICY_SERVER_KEYS: the ed25519 key must be %d bytes, not %d", ed25519.PublicKeySize, len(b))
		}
		keys[alg] = key
	}
	if keys["ed25519"] == "" {
		return fmt.Errorf("CIRRUS_POLICY_SERVER_KEYS must include an ed25519 key")
	}
	d.PolicyServerKeys = keys
	return nil
}
