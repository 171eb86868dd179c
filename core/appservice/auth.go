package appservice

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Authenticator is the router's authenticator: an application service's
// as_token authenticates the service, acting as its sender or, with
// ?user_id=, as a user of its namespaces (spec "Identity assertion");
// every other token goes to the accounts service.
type Authenticator struct {
	Registry *Registry
	Next     httpapi.Authenticator
	Accounts *accounts.Service
}

// byToken compares the token with every as_token in constant time (the
// map lookup alone could leak, through timing, how close a guess is).
func (a *Authenticator) byToken(tok string) *Registration {
	var found *Registration
	for _, r := range a.Registry.All() {
		if subtle.ConstantTimeCompare([]byte(r.ASToken), []byte(tok)) == 1 {
			found = r
		}
	}
	return found
}

// Service returns the application service of an as_token (nil if none).
func (a *Authenticator) Service(tok string) *Registration { return a.byToken(tok) }

// Authenticate implements httpapi.Authenticator (no identity assertion:
// an as_token acts as the service's sender).
func (a *Authenticator) Authenticate(ctx context.Context, tok string) (*httpapi.Caller, error) {
	if reg := a.byToken(tok); reg != nil {
		return &httpapi.Caller{UserID: reg.Sender(), AppService: reg.ID, TokenKey: "as#" + reg.ID}, nil
	}
	return a.Next.Authenticate(ctx, tok)
}

// AuthenticateRequest implements httpapi.RequestAuthenticator: user_id and
// device_id in the query choose whom an application service acts as.
func (a *Authenticator) AuthenticateRequest(r *http.Request, tok string) (*httpapi.Caller, error) {
	reg := a.byToken(tok)
	if reg == nil {
		return a.Next.Authenticate(r.Context(), tok)
	}
	q := r.URL.Query()
	c, err := a.Assert(r.Context(), reg, id.UserID(q.Get("user_id")), id.DeviceID(q.Get("device_id")))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Assert builds the caller for an application service acting as user
// (its sender when empty) on device (none when empty).
func (a *Authenticator) Assert(ctx context.Context, reg *Registration, user id.UserID, device id.DeviceID) (*httpapi.Caller, error) {
	c := &httpapi.Caller{UserID: reg.Sender(), AppService: reg.ID, TokenKey: "as#" + reg.ID}
	if user != "" && user != reg.Sender() {
		if _, server, err := user.Parse(); err != nil || server != a.Accounts.ServerName {
			return nil, httpapi.Forbidden("application services can only act as local users")
		}
		if !reg.OwnsUser(user) {
			return nil, httpapi.Forbidden("user %s is not in the application service's namespaces", user)
		}
		acct, err := a.Accounts.GetAccount(ctx, user)
		if err != nil {
			if _, ok := err.(*httpapi.Error); ok {
				return nil, httpapi.Forbidden("application service has not registered user %s", user)
			}
			return nil, err
		}
		if acct.Deactivated {
			return nil, httpapi.UserDeactivated("user %s is deactivated", user)
		}
		c.UserID = user
	}
	if device != "" {
		if _, err := a.Accounts.GetDevice(ctx, c.UserID, device); err != nil {
			if !errors.Is(err, table.ErrNotFound) {
				return nil, err
			}
			return nil, &httpapi.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN_DEVICE",
				Message: "device " + string(device) + " does not belong to " + string(c.UserID)}
		}
		c.DeviceID = device
	}
	return c, nil
}

// ExemptFromLimits implements httpapi.LimitExempter.
func (a *Authenticator) ExemptFromLimits(tok string) bool {
	reg := a.byToken(tok)
	return reg != nil && !reg.Limited()
}
