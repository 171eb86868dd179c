package clientapi

// Third-party identifiers (email addresses, phone numbers).
//
// Cirrus sends no email or SMS and talks to no identity server, so it never
// holds a 3PID: every account's list is empty and m.3pid_changes is off.
// The endpoints still exist so clients get a well-formed answer: each one
// validates its request like a supporting server would, then answers with
// the error its own spec text documents for the case "this server cannot do
// that", chosen per endpoint below.

import (
	"net/http"
	"regexp"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// clientSecretRE is the grammar of client_secret and of session ids
// ([0-9a-zA-Z.=_-], 1 to 255 characters).
var clientSecretRE = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

func threepidErr(status int, code, msg string) *httpapi.Error {
	return &httpapi.Error{Status: status, Code: code, Message: msg}
}

// requestTokenBody is request_email_validation / request_msisdn_validation.
type requestTokenBody struct {
	ClientSecret  *string `json:"client_secret"`
	Email         *string `json:"email"`
	Country       *string `json:"country"`
	PhoneNumber   *string `json:"phone_number"`
	SendAttempt   *int64  `json:"send_attempt"`
	NextLink      *string `json:"next_link"`
	IDServer      *string `json:"id_server"`
	IDAccessToken *string `json:"id_access_token"`
}

// decodeRequestToken reads and checks a requestToken body for medium
// ("email" or "msisdn").
func decodeRequestToken(r *httpapi.Request, medium string) error {
	var b requestTokenBody
	if err := r.DecodeJSON(&b); err != nil {
		return err
	}
	if b.ClientSecret == nil {
		return httpapi.MissingParam("client_secret is required")
	}
	if !clientSecretRE.MatchString(*b.ClientSecret) {
		return httpapi.InvalidParam("client_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]")
	}
	if medium == "email" {
		if b.Email == nil || *b.Email == "" {
			return httpapi.MissingParam("email is required")
		}
	} else {
		if b.Country == nil || *b.Country == "" {
			return httpapi.MissingParam("country is required")
		}
		if b.PhoneNumber == nil || *b.PhoneNumber == "" {
			return httpapi.MissingParam("phone_number is required")
		}
	}
	if b.SendAttempt == nil {
		return httpapi.MissingParam("send_attempt is required")
	}
	if b.IDServer != nil && *b.IDServer != "" && (b.IDAccessToken == nil || *b.IDAccessToken == "") {
		return httpapi.MissingParam("id_access_token is required with id_server")
	}
	return nil
}

// RegisterEmailRequestToken serves POST /register/email/requestToken and
// RegisterMSISDNRequestToken POST /register/msisdn/requestToken: 403
// M_THREEPID_DENIED, which the spec documents as "the homeserver does not
// permit the address to be bound" (none is permitted here).
func (a *API) RegisterEmailRequestToken(r *httpapi.Request) (any, error) {
	return nil, registerRequestToken(r, "email")
}

// RegisterMSISDNRequestToken: see RegisterEmailRequestToken.
func (a *API) RegisterMSISDNRequestToken(r *httpapi.Request) (any, error) {
	return nil, registerRequestToken(r, "msisdn")
}

func registerRequestToken(r *httpapi.Request, medium string) error {
	if err := decodeRequestToken(r, medium); err != nil {
		return err
	}
	return threepidErr(http.StatusForbidden, "M_THREEPID_DENIED", "this server does not accept third-party identifiers")
}

// Account3PIDEmailRequestToken serves POST /account/3pid/email/requestToken
// and Account3PIDMSISDNRequestToken POST /account/3pid/msisdn/requestToken:
// 400 M_THREEPID_MEDIUM_NOT_SUPPORTED, which the spec documents for exactly
// this case ("the homeserver does not support adding email addresses" /
// "phone numbers").
func (a *API) Account3PIDEmailRequestToken(r *httpapi.Request) (any, error) {
	return nil, account3PIDRequestToken(r, "email")
}

// Account3PIDMSISDNRequestToken: see Account3PIDEmailRequestToken.
func (a *API) Account3PIDMSISDNRequestToken(r *httpapi.Request) (any, error) {
	return nil, account3PIDRequestToken(r, "msisdn")
}

func account3PIDRequestToken(r *httpapi.Request, medium string) error {
	if err := decodeRequestToken(r, medium); err != nil {
		return err
	}
	return threepidErr(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "this server does not support adding "+mediumName(medium))
}

// PasswordEmailRequestToken serves POST /account/password/email/requestToken
// and PasswordMSISDNRequestToken POST /account/password/msisdn/requestToken:
// the server must check that the address belongs to an account, and none
// does, so the answer is the documented 400 M_THREEPID_NOT_FOUND.
func (a *API) PasswordEmailRequestToken(r *httpapi.Request) (any, error) {
	return nil, passwordRequestToken(r, "email")
}

// PasswordMSISDNRequestToken: see PasswordEmailRequestToken.
func (a *API) PasswordMSISDNRequestToken(r *httpapi.Request) (any, error) {
	return nil, passwordRequestToken(r, "msisdn")
}

func passwordRequestToken(r *httpapi.Request, medium string) error {
	if err := decodeRequestToken(r, medium); err != nil {
		return err
	}
	what := "email address"
	if medium == "msisdn" {
		what = "phone number"
	}
	return httpapi.ThreepidNotFound("no account has this %s", what)
}

func mediumName(medium string) string {
	if medium == "email" {
		return "email addresses"
	}
	return "phone numbers"
}

// ThreePIDs serves GET /account/3pid: always an empty list.
func (a *API) ThreePIDs(r *httpapi.Request) (any, error) {
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return map[string]any{"threepids": []any{}}, nil
}

// threePIDCreds is the identity-server credential object of /account/3pid
// and /account/3pid/bind.
type threePIDCreds struct {
	ClientSecret  *string `json:"client_secret"`
	IDServer      *string `json:"id_server"`
	IDAccessToken *string `json:"id_access_token"`
	SID           *string `json:"sid"`
}

func (c *threePIDCreds) check(prefix string, needIDServer bool) error {
	if c.ClientSecret == nil || *c.ClientSecret == "" {
		return httpapi.MissingParam("%sclient_secret is required", prefix)
	}
	if !clientSecretRE.MatchString(*c.ClientSecret) {
		return httpapi.InvalidParam("%sclient_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]", prefix)
	}
	if c.SID == nil || *c.SID == "" {
		return httpapi.MissingParam("%ssid is required", prefix)
	}
	if !clientSecretRE.MatchString(*c.SID) {
		return httpapi.InvalidParam("%ssid must be 1 to 255 characters of [0-9a-zA-Z.=_-]", prefix)
	}
	if !needIDServer {
		return nil
	}
	if c.IDServer == nil || *c.IDServer == "" {
		return httpapi.MissingParam("%sid_server is required", prefix)
	}
	if c.IDAccessToken == nil || *c.IDAccessToken == "" {
		return httpapi.MissingParam("%sid_access_token is required", prefix)
	}
	return nil
}

// AddThreePIDLegacy serves the deprecated POST /account/3pid: the
// credentials name an identity-server session this server cannot verify,
// which is the documented 403 M_THREEPID_AUTH_FAILED.
func (a *API) AddThreePIDLegacy(r *httpapi.Request) (any, error) {
	var req struct {
		Creds *threePIDCreds `json:"three_pid_creds"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.Creds == nil {
		return nil, httpapi.MissingParam("three_pid_creds is required")
	}
	if err := req.Creds.check("three_pid_creds.", true); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return nil, threepidErr(http.StatusForbidden, "M_THREEPID_AUTH_FAILED", "the third-party credentials could not be verified")
}

// AddThreePID serves POST /account/3pid/add. Its sid must come from one of
// this server's requestToken endpoints, which never issue one, so no sid
// can be valid: 403 M_THREEPID_AUTH_FAILED (the spec's code for "the
// credentials could not be verified"). The password stage is not asked
// for first, since no password could make the request succeed.
func (a *API) AddThreePID(r *httpapi.Request) (any, error) {
	var req struct {
		threePIDCreds
		Auth any `json:"auth"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if err := req.check("", false); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return nil, threepidErr(http.StatusForbidden, "M_THREEPID_AUTH_FAILED", "unknown third-party validation session")
}

// BindThreePID serves POST /account/3pid/bind: binding goes through an
// identity server, and this server trusts none, so the answer is 400
// M_SERVER_NOT_TRUSTED ("the client's request used a third-party server,
// e.g. identity server, that this server does not trust").
func (a *API) BindThreePID(r *httpapi.Request) (any, error) {
	var req threePIDCreds
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if err := req.check("", true); err != nil {
		return nil, err
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return nil, threepidErr(http.StatusBadRequest, "M_SERVER_NOT_TRUSTED", "this server does not use identity servers")
}

// DeleteThreePID serves POST /account/3pid/delete and UnbindThreePID POST
// /account/3pid/unbind. The account holds no such identifier, so there is
// nothing to remove; and the server knows no identity server it was bound
// through, in which case the spec says the answer MUST be
// id_server_unbind_result "no-support".
func (a *API) DeleteThreePID(r *httpapi.Request) (any, error) {
	return unbindThreePID(r)
}

// UnbindThreePID: see DeleteThreePID.
func (a *API) UnbindThreePID(r *httpapi.Request) (any, error) {
	return unbindThreePID(r)
}

func unbindThreePID(r *httpapi.Request) (any, error) {
	var req struct {
		Medium   *string `json:"medium"`
		Address  *string `json:"address"`
		IDServer *string `json:"id_server"`
	}
	if err := r.DecodeJSON(&req); err != nil {
		return nil, err
	}
	if req.Medium == nil || *req.Medium == "" {
		return nil, httpapi.MissingParam("medium is required")
	}
	if *req.Medium != "email" && *req.Medium != "msisdn" {
		return nil, httpapi.InvalidParam("medium must be email or msisdn")
	}
	if req.Address == nil || *req.Address == "" {
		return nil, httpapi.MissingParam("address is required")
	}
	if err := noGuests(r); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}
