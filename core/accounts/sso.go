package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// SSOSessionLifetime is how long a user has to finish signing in at the
// identity provider after /login/sso/redirect.
const SSOSessionLifetime = 10 * time.Minute

// SSOSession is an SSO login in flight, between the redirect to the
// identity provider and its callback. It is stored under the OAuth state
// value, so whichever process receives the callback can finish the flow.
type SSOSession struct {
	Provider    string `json:"idp"`
	RedirectURL string `json:"redirect_url"`
	Nonce       string `json:"nonce"`
	// Verifier is the PKCE code verifier (RFC 7636).
	Verifier  string `json:"verifier"`
	ExpiresMS int64  `json:"expires_ts"`
	// UIASession, when set, makes this flow complete the m.login.sso stage
	// of that user-interactive auth session for UIAUser (the fallback
	// page) instead of logging in.
	UIASession string    `json:"uia_session,omitempty"`
	UIAUser    id.UserID `json:"uia_user,omitempty"`
}

func ssoSessionKey(state string) table.Key {
	return table.Key{PK: "ssosession#" + HashToken(state), SK: "ssosession"}
}

func ssoMappingKey(provider, subject string) table.Key {
	return table.Key{PK: "ssomap#" + provider + "\x1f" + subject, SK: "ssomap"}
}

// PutSSOSession stores a login in flight under its state value (hashed),
// with a TTL.
func (s *Service) PutSSOSession(ctx context.Context, state string, sess SSOSession) error {
	exp := s.now().Add(SSOSessionLifetime)
	sess.ExpiresMS = exp.UnixMilli()
	data, _ := json.Marshal(sess)
	k := ssoSessionKey(state)
	return s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data, TTL: ttlAfter(exp)}, table.IfNotExists())
}

// TakeSSOSession returns and spends the login in flight for state. An
// unknown, expired or already used state is 403 M_FORBIDDEN; of two
// callbacks with the same state only one gets the session (conditional
// delete).
func (s *Service) TakeSSOSession(ctx context.Context, state string) (*SSOSession, error) {
	invalid := httpapi.Forbidden("unknown or expired SSO session")
	if state == "" || len(state) > 512 {
		return nil, invalid
	}
	k := ssoSessionKey(state)
	it, err := s.T.Get(ctx, k)
	if errors.Is(err, table.ErrNotFound) {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	var sess SSOSession
	if err := json.Unmarshal(it.Data, &sess); err != nil {
		return nil, err
	}
	if err := s.T.Delete(ctx, k, table.IfExists()); err != nil {
		if errors.Is(err, table.ErrConditionFailed) {
			return nil, invalid
		}
		return nil, err
	}
	if sess.ExpiresMS <= s.now().UnixMilli() {
		return nil, invalid
	}
	return &sess, nil
}

type ssoMapping struct {
	UserID id.UserID `json:"user_id"`
}

// SSOUser returns the Matrix user an identity provider's subject is mapped
// to ("" when the subject has not logged in before).
func (s *Service) SSOUser(ctx context.Context, provider, subject string) (id.UserID, error) {
	it, err := s.T.Get(ctx, ssoMappingKey(provider, subject))
	if errors.Is(err, table.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var m ssoMapping
	if err := json.Unmarshal(it.Data, &m); err != nil {
		return "", err
	}
	return m.UserID, nil
}

// invalidLocalpartChars are the characters a user ID localpart may not hold.
var invalidLocalpartChars = regexp.MustCompile(`[^a-z0-9._=/+-]+`)

// SSOLocalpart turns a claim (a preferred username, an email address) into
// a valid localpart: lower-cased, the part before an "@", other characters
// replaced by "_", trimmed to a sane length. Empty if nothing usable is left.
func SSOLocalpart(claim string) string {
	claim = strings.ToLower(strings.TrimSpace(claim))
	if i := strings.IndexByte(claim, '@'); i > 0 {
		claim = claim[:i]
	}
	claim = strings.Trim(invalidLocalpartChars.ReplaceAllString(claim, "_"), "_")
	if len(claim) > 64 {
		claim = claim[:64]
	}
	return claim
}

// ProvisionSSOUser maps a provider's subject to a Matrix user, creating the
// account on the first login: its localpart comes from localpartHint (made
// valid with SSOLocalpart), with a number appended while it is taken, or a
// generated one. The mapping is written with a conditional put, so two
// concurrent first logins of one subject end on the same user (the loser's
// freshly created account stays unused). displayName sets the new
// account's display name when not empty. A candidate for which reserved
// (may be nil) answers true is skipped like a taken one: application
// services' exclusive namespaces are not handed out to SSO users.
func (s *Service) ProvisionSSOUser(ctx context.Context, provider, subject, localpartHint, displayName string, reserved func(id.UserID) bool) (id.UserID, error) {
	if u, err := s.SSOUser(ctx, provider, subject); err != nil || u != "" {
		return u, err
	}
	base := SSOLocalpart(localpartHint)
	if base == "" {
		base = "user"
	}
	var uid id.UserID
	for i := 0; ; i++ {
		if i >= 20 {
			return "", httpapi.Unknown("could not allocate a user ID for this SSO login")
		}
		lp := base
		if i > 0 {
			lp = fmt.Sprintf("%s%d", base, i+1)
		}
		if i >= 10 {
			lp = fmt.Sprintf("%s%s", base, strings.ToLower(NewToken("")[:8]))
		}
		cand, err := s.UserID(lp)
		if err != nil {
			continue
		}
		if reserved != nil && reserved(cand) {
			// Namespaces are usually prefixes, so numbered variants of a
			// reserved name are reserved too: fall back to "user" once.
			if base != "user" {
				base, i = "user", -1
			}
			continue
		}
		_, err = s.CreateAccount(ctx, NewAccount{UserID: cand, DisplayName: displayName, InhibitLogin: true})
		if he, ok := err.(*httpapi.Error); ok && he.Code == "M_USER_IN_USE" {
			continue
		}
		if err != nil {
			return "", err
		}
		uid = cand
		break
	}
	data, _ := json.Marshal(ssoMapping{UserID: uid})
	k := ssoMappingKey(provider, subject)
	err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data}, table.IfNotExists())
	if errors.Is(err, table.ErrConditionFailed) {
		return s.SSOUser(ctx, provider, subject)
	}
	if err != nil {
		return "", err
	}
	return uid, nil
}

// StageSSO is the user-interactive auth stage completed by signing in at an
// identity provider through the fallback page.
const StageSSO = "m.login.sso"

// UIASessionUser returns the user a user-interactive auth session was
// started for: 404 M_NOT_FOUND for an unknown or expired session, 403 for
// a session of no particular user (registration), which SSO cannot vouch
// for.
func (s *Service) UIASessionUser(ctx context.Context, session string) (id.UserID, error) {
	rec, _, err := s.uiaRecord(ctx, session)
	if err != nil {
		return "", err
	}
	if rec.User == "" {
		return "", httpapi.Forbidden("this auth session cannot be completed with SSO")
	}
	return rec.User, nil
}

func (s *Service) uiaRecord(ctx context.Context, session string) (*uiaRecord, int64, error) {
	if session == "" || len(session) > 256 {
		return nil, 0, httpapi.NotFound("unknown user-interactive auth session")
	}
	it, err := s.T.Get(ctx, uiaKey(session))
	if errors.Is(err, table.ErrNotFound) {
		return nil, 0, httpapi.NotFound("unknown user-interactive auth session")
	}
	if err != nil {
		return nil, 0, err
	}
	var rec uiaRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, 0, err
	}
	return &rec, it.Version, nil
}

// CompleteUIAStage records stage as done in a user-interactive auth
// session of user u, out of band (the SSO fallback page): the client then
// repeats its request with only the session and RunUIA lets it through.
// The write is conditional on the session's version, like RunUIA's own.
func (s *Service) CompleteUIAStage(ctx context.Context, session string, u id.UserID, stage string) error {
	rec, version, err := s.uiaRecord(ctx, session)
	if err != nil {
		return err
	}
	if rec.User != u {
		return httpapi.Forbidden("auth session belongs to another user")
	}
	if !slices.Contains(rec.Completed, stage) {
		rec.Completed = append(rec.Completed, stage)
	}
	data, _ := json.Marshal(rec)
	err = s.T.Put(ctx, table.Item{PK: uiaKey(session).PK, SK: "uia", Data: data, Version: version + 1,
		TTL: s.now().Add(UIASessionTTL).Unix()}, table.IfVersion(version))
	if errors.Is(err, table.ErrConditionFailed) {
		return httpapi.Forbidden("auth session was used concurrently")
	}
	return err
}
