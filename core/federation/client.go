package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/signing"
)

// Config is the federation settings.
type Config struct {
	// SkipVerify turns off TLS certificate checks of other servers
	// (loopback tests with self-signed certificates only).
	SkipVerify bool
	// RootCAs, if set, replaces the system roots for other servers'
	// certificates (infra/fedtls.TrustWith: the system roots plus a
	// deployment's own CA).
	RootCAs *x509.CertPool
	// AllowPrivate lets outbound requests reach loopback, private and
	// link-local addresses (loopback tests only; off, such addresses are
	// refused whatever a server name resolves to).
	AllowPrivate bool
	// RequestTimeout bounds one outbound request (default 60 s).
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the sender's retry delay for a
	// destination that fails (defaults 5 s and 1 h).
	MinBackoff, MaxBackoff time.Duration
}

// MaxResponseBytes bounds a response from another server (send_join of a
// large room is the biggest).
const MaxResponseBytes = 64 << 20

// NewClient builds the outbound federation client: requests signed with
// X-Matrix, server names resolved per spec (cached in the table), TLS
// verified (unless SkipVerify), connections to non-public addresses refused
// (unless AllowPrivate), and bounded in time and size.
func NewClient(serverName string, key *signing.Key, cache mfed.ResolutionCache, cfg Config) *mfed.Client {
	timeout := cfg.RequestTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	settings := exhttp.SensibleClientSettings.
		WithGlobalTimeout(timeout).
		WithResponseHeaderTimeout(timeout).
		WithTLSHandshakeTimeout(10 * time.Second)
	settings.InsecureTLS = cfg.SkipVerify
	if cfg.RootCAs != nil {
		settings = settings.WithTLSConfig(&tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12})
	}
	c := mfed.NewClient(serverName, key, cache, settings)
	c.UserAgent = "Cirrus"
	c.ResponseSizeLimit = MaxResponseBytes
	if cfg.AllowPrivate {
		c.AllowIP = func(net.IP) bool { return true }
	} else {
		c.AllowIP = publicIP
	}
	if srt, ok := c.HTTP.Transport.(*mfed.ServerResolvingTransport); ok {
		// .well-known lookups go through the same guarded dialer.
		srt.ResolveOpts = &mfed.ResolveServerNameOpts{HTTPClient: c.ExtHTTP}
	}
	return c
}

// publicIP refuses loopback, private, link-local, multicast and
// unspecified addresses.
func publicIP(ip net.IP) bool {
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast()
}

// remoteError turns an error from another server into one for our client:
// the remote Matrix error when there is one, else 502.
func remoteError(server string, err error) error {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil && he.Response != nil {
		status := he.Response.StatusCode
		if status < 400 || status >= 500 {
			status = http.StatusBadGateway
		}
		return &httpapi.Error{Status: status, Code: he.RespError.ErrCode, Message: fmt.Sprintf("%s: %s", server, he.RespError.Err)}
	}
	return &httpapi.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: fmt.Sprintf("could not reach %s: %v", server, err)}
}

// remoteStatus returns the HTTP status another server answered with (0 if
// it did not answer).
func remoteStatus(err error) int {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode
	}
	return 0
}

// keyFunc returns the key lookup for event signatures: our own key, a
// stored key, or one fetched from its server.
func (s *Service) keyFunc(ctx context.Context) pdu.GetKeyFunc {
	return func(server string, kid id.KeyID, minValid time.Time) (id.SigningKey, time.Time, error) {
		if server == s.ServerName {
			if kid == s.Key.ID {
				return s.Key.Pub, s.now().Add(keyValidity), nil
			}
			// One of our retired keys (keys.go: RotateKey).
			old, ok, err := ownOldKey(ctx, s.T, kid)
			if err != nil || !ok {
				return "", time.Time{}, err
			}
			return old.Key, time.UnixMilli(old.ExpiredTS), nil
		}
		key, valid, ok, err := s.Keys.VerifyKey(ctx, server, kid)
		if err != nil {
			return "", time.Time{}, err
		}
		if ok && !valid.Before(minValid) {
			return key, valid, nil
		}
		if err := s.fetchKeys(ctx, server); err != nil {
			if ok {
				return key, valid, nil
			}
			return "", time.Time{}, err
		}
		key, valid, _, err = s.Keys.VerifyKey(ctx, server, kid)
		return key, valid, err
	}
}

// fetchKeys fetches a server's keys from it (at most once a minute when
// it keeps failing) and stores them.
func (s *Service) fetchKeys(ctx context.Context, server string) error {
	cached, err := s.Keys.LoadKeys(ctx, server, time.Minute)
	if err != nil {
		return err
	}
	// Re-fetching for a key id the cached response lacks is rationed, and
	// held back while the last fetch failure's backoff runs; a first fetch
	// is not rationed (and does not use up the ration).
	if cached != nil {
		if err := s.Keys.RecentFailure(ctx, server, time.Minute); err != nil {
			return err
		}
		if ok, err := s.Keys.ShouldReQuery(ctx, server); err != nil || !ok {
			return err
		}
	}
	ctx = withKeysFor(ctx, server)
	resp, err := s.Client.ServerKeys(ctx, server)
	if err == nil {
		err = s.Keys.StoreKeys(ctx, resp)
	}
	if err != nil {
		_ = s.Keys.StoreFetchError(ctx, server, err)
	}
	return err
}
