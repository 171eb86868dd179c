package clientapi

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/appservice"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// LoginTypeAppService is the registration and login type of application
// services.
const LoginTypeAppService = "m.login.application_service"

// AppServiceAPI serves the application service extensions of the client
// API (spec "Client-Server API Extensions"): ping, network directories,
// passwordless registration and login in a service's namespace, and the
// exclusivity of namespaces for everyone else. A nil *AppServiceAPI means
// no application service is configured: every check passes.
type AppServiceAPI struct {
	ServerName string
	Registry   *appservice.Registry
	Auth       *appservice.Authenticator
	Service    *appservice.Service
	Accounts   *accounts.Service
	Rooms      *rooms.Service
}

func (x *AppServiceAPI) configured() bool { return x != nil && len(x.Registry.All()) > 0 }

// callerService is the application service that made the request (M_FORBIDDEN
// for anyone else).
func (x *AppServiceAPI) callerService(r *httpapi.Request) (*appservice.Registration, error) {
	if x == nil || r.Caller == nil || r.Caller.AppService == "" {
		return nil, httpapi.Forbidden("only application services may use this endpoint")
	}
	reg := x.Registry.ByID(r.Caller.AppService)
	if reg == nil {
		return nil, httpapi.Forbidden("only application services may use this endpoint")
	}
	return reg, nil
}

// Ping serves POST /_matrix/client/v1/appservice/{appserviceId}/ping: only
// the service itself may ask the homeserver to ping it.
func (x *AppServiceAPI) Ping(r *httpapi.Request) (any, error) {
	var body struct {
		TransactionID *string `json:"transaction_id"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	reg, err := x.callerService(r)
	if err != nil {
		return nil, err
	}
	if reg.ID != r.PathValue("appserviceId") {
		return nil, httpapi.Forbidden("the access token is not the as_token of application service %q", r.PathValue("appserviceId"))
	}
	txn := ""
	if body.TransactionID != nil {
		txn = *body.TransactionID
	}
	took, err := x.Service.Ping(r.Ctx(), reg, txn)
	if err != nil {
		return nil, err
	}
	return map[string]int64{"duration_ms": took.Milliseconds()}, nil
}

// SetNetworkVisibility serves PUT
// /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}: an
// application service publishes a room in (or removes it from) the
// directory of one of its networks.
func (x *AppServiceAPI) SetNetworkVisibility(r *httpapi.Request) (any, error) {
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if _, err := x.callerService(r); err != nil {
		return nil, err
	}
	network := r.PathValue("networkId")
	if network == "" || len(network) > 255 || strings.ContainsAny(network, "\x00\x1f") {
		return nil, httpapi.InvalidParam("invalid network id %q", network)
	}
	room, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if body.Visibility == nil {
		return nil, httpapi.MissingParam("visibility is required")
	}
	if *body.Visibility != "public" && *body.Visibility != "private" {
		return nil, httpapi.InvalidParam("visibility must be public or private")
	}
	if _, err := x.Rooms.RoomVersion(r.Ctx(), room); err != nil {
		return nil, httpapi.NotFound("room %s not found", room)
	}
	if err := x.Rooms.SetNetworkVisibility(r.Ctx(), network, room, *body.Visibility == "public"); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// exclusiveUser refuses a user id that an application service holds
// exclusively, unless that service is the one asking (M_EXCLUSIVE).
func (x *AppServiceAPI) exclusiveUser(u id.UserID, asking string) error {
	if !x.configured() {
		return nil
	}
	if reg := x.Registry.ExclusiveUser(u); reg != nil && reg.ID != asking {
		return httpapi.Exclusive("user ID %s is reserved by an application service", u)
	}
	return nil
}

// exclusiveAlias refuses to create an alias outside the asking service's
// namespaces, or, for anyone else, inside an exclusive one (M_EXCLUSIVE).
func (x *AppServiceAPI) exclusiveAlias(a id.RoomAlias, c *httpapi.Caller) error {
	if !x.configured() {
		return nil
	}
	if c != nil && c.AppService != "" {
		if reg := x.Registry.ByID(c.AppService); reg != nil && !reg.MatchesAlias(a) {
			return httpapi.Exclusive("alias %s is outside the application service's namespaces", a)
		}
		if reg := x.Registry.ExclusiveAlias(a); reg != nil && reg.ID != c.AppService {
			return httpapi.Exclusive("alias %s is reserved by another application service", a)
		}
		return nil
	}
	if x.Registry.ExclusiveAlias(a) != nil {
		return httpapi.Exclusive("alias %s is reserved by an application service", a)
	}
	return nil
}

// massagedTS is the ts query parameter of an application service's send
// or state request (spec "Timestamp massaging"): the event's
// origin_server_ts. 0 when absent or when the caller is not a service
// (others' ts is ignored); M_INVALID_PARAM when it is no valid timestamp.
func massagedTS(r *httpapi.Request) (int64, error) {
	v := r.URL.Query().Get("ts")
	if v == "" || r.Caller == nil || r.Caller.AppService == "" {
		return 0, nil
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ts <= 0 || ts > 1<<53-1 {
		return 0, httpapi.InvalidParam("ts must be a timestamp in milliseconds")
	}
	return ts, nil
}

// createAppServiceDevice is PUT /devices/{deviceId} by an application
// service for a device its user does not have: the device is created,
// without an access token (spec "Device management"). created is false
// when the caller is not a service or the device exists (then the
// ordinary update applies).
func (a *API) createAppServiceDevice(r *httpapi.Request, dev id.DeviceID, name *string) (created bool, err error) {
	if r.Caller == nil || r.Caller.AppService == "" {
		return false, nil
	}
	if !validDeviceID(dev) {
		return false, httpapi.InvalidParam("invalid device ID")
	}
	ok, err := a.Accounts.DeviceExists(r.Ctx(), r.Caller.UserID, dev)
	if err != nil || ok {
		return false, err
	}
	display := ""
	if name != nil {
		if len(*name) > maxDeviceNameBytes {
			return false, httpapi.InvalidParam("display_name is longer than %d bytes", maxDeviceNameBytes)
		}
		display = *name
	}
	err = a.Accounts.T.Transact(r.Ctx(), a.Accounts.NewDeviceOps(r.Caller.UserID, dev, display))
	var txe *table.TxError
	if errors.As(err, &txe) || errors.Is(err, table.ErrConditionFailed) {
		return false, nil // created meanwhile: update it instead
	}
	return err == nil, err
}

// queryUser asks the services whose user namespaces hold u, a local user
// that does not exist, whether it does (they create it if so).
func (x *AppServiceAPI) queryUser(ctx context.Context, u id.UserID) bool {
	return x.configured() && x.Service.QueryUser(ctx, u)
}

// service returns the application service whose as_token the request
// carries: M_MISSING_TOKEN or M_UNKNOWN_TOKEN (401) otherwise, as the spec
// asks of /register and /login with m.login.application_service.
func (x *AppServiceAPI) service(r *httpapi.Request) (*appservice.Registration, error) {
	tok, err := httpapi.AccessToken(r.Request)
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, httpapi.MissingToken("m.login.application_service needs the as_token")
	}
	if x == nil {
		return nil, httpapi.UnknownToken("no application service is configured")
	}
	reg := x.Auth.Service(tok)
	if reg == nil {
		return nil, httpapi.UnknownToken("the access token is not an application service's as_token")
	}
	return reg, nil
}

// ownUser checks that a service may create or log in as u (M_EXCLUSIVE).
func (x *AppServiceAPI) ownUser(reg *appservice.Registration, u id.UserID) error {
	if !reg.OwnsUser(u) {
		return httpapi.Exclusive("user ID %s is outside the application service's namespaces", u)
	}
	if other := x.Registry.ExclusiveUser(u); other != nil && other.ID != reg.ID {
		return httpapi.Exclusive("user ID %s is reserved by another application service", u)
	}
	return nil
}

// registerAppService is POST /register with type m.login.application_service:
// a passwordless account in the service's namespace, no user-interactive
// authentication.
func (a *API) registerAppService(r *httpapi.Request, req registerRequest) (any, error) {
	reg, err := a.AppServices.service(r)
	if err != nil {
		return nil, err
	}
	if req.Username == "" {
		return nil, httpapi.MissingParam("username is required")
	}
	uid, err := a.Accounts.UserID(req.Username)
	if err != nil {
		return nil, err
	}
	if err := a.AppServices.ownUser(reg, uid); err != nil {
		return nil, err
	}
	s, err := a.Accounts.Register(r.Ctx(), uid, "", false, req.InhibitLogin,
		a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, httpapi.ClientIP(r.Request), req.RefreshToken))
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// loginAppService is POST /login with type m.login.application_service: a
// service logs in as one of its users without a password.
func (a *API) loginAppService(r *httpapi.Request, req *loginRequest) (any, error) {
	reg, err := a.AppServices.service(r)
	if err != nil {
		return nil, err
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, httpapi.BadRequest("unsupported identifier type %q", req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	if user == "" {
		return nil, httpapi.MissingParam("identifier.user is required")
	}
	if req.DeviceID != "" && !validDeviceID(req.DeviceID) {
		return nil, httpapi.InvalidParam("invalid device_id")
	}
	uid, err := a.Accounts.ResolveUser(user)
	if err != nil {
		return nil, err
	}
	if err := a.AppServices.ownUser(reg, uid); err != nil {
		return nil, err
	}
	acct, err := a.Accounts.GetAccount(r.Ctx(), uid)
	if err != nil {
		if _, ok := err.(*httpapi.Error); ok {
			return nil, httpapi.Forbidden("user %s does not exist", uid)
		}
		return nil, err
	}
	if acct.Deactivated {
		return nil, httpapi.UserDeactivated("this account has been deactivated")
	}
	s, err := a.Accounts.Login(r.Ctx(), uid, false, a.loginOptions(req.DeviceID, req.InitialDeviceDisplayName, httpapi.ClientIP(r.Request), req.RefreshToken))
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// thirdParty proxies the client's third-party lookups to the application
// services that declared the protocol (nil, nil when none answered). kind
// is protocols, protocol, location or user (with a protocol), or
// location-alias or user-id (asked of every service with a protocol).
func (x *AppServiceAPI) thirdParty(ctx context.Context, kind, protocol string, q url.Values) (any, error) {
	if !x.configured() {
		return nil, nil
	}
	q = cleanQuery(q)
	switch kind {
	case "protocols":
		out := map[string]any{}
		for _, reg := range x.Registry.All() {
			for _, p := range reg.Protocols {
				if _, done := out[p]; done {
					continue
				}
				v, err := x.Service.ThirdParty(ctx, x.Registry.WithProtocol(p), "protocol/"+url.PathEscape(p), nil)
				if err == nil && v != nil {
					out[p] = v
				}
			}
		}
		return out, nil
	case "protocol", "location", "user":
		return x.Service.ThirdParty(ctx, x.Registry.WithProtocol(protocol), kind+"/"+url.PathEscape(protocol), q)
	case "location-alias", "user-id":
		var regs []*appservice.Registration
		for _, reg := range x.Registry.All() {
			if len(reg.Protocols) > 0 {
				regs = append(regs, reg)
			}
		}
		path := "location"
		if kind == "user-id" {
			path = "user"
		}
		return x.Service.ThirdParty(ctx, regs, path, q)
	}
	return nil, nil
}

// cleanQuery drops the client's credentials and identity assertion from
// a query passed on to an application service.
func cleanQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		switch k {
		case "access_token", "user_id", "device_id":
			continue
		}
		out[k] = v
	}
	return out
}
