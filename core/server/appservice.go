package server

import (
	"context"
	"net/http"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/appservice"
	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/ephemeral"
	h "github.com/cirrus-matrix/cirrus/core/httpapi"
)

// AppServiceConfig is the application service settings.
type AppServiceConfig struct {
	// Registry holds the validated registrations (nil or empty: none).
	Registry *appservice.Registry
	// MinBackoff and MaxBackoff bound the delay between delivery attempts
	// to a failing service.
	MinBackoff, MaxBackoff time.Duration
	// QueryTimeout bounds one user, alias or third-party query and a ping.
	QueryTimeout time.Duration
}

// withAppServices adds the application service support: the as_token
// authenticator in front of the accounts', the client API extensions, the
// alias queries, and the event delivery hook.
func (s *Server) withAppServices() *Server {
	cfg := s.cfg.AppServices
	reg := cfg.Registry
	if reg == nil {
		reg, _ = appservice.NewRegistry(s.cfg.Client.ServerName, nil)
	}
	svc := &appservice.Service{Registry: reg, T: s.deps.Table, Rooms: s.rooms, Q: s.deps.AppServiceQueue,
		HTTP: &http.Client{}, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff,
		QueryTimeout: cfg.QueryTimeout, Log: s.deps.Log, Now: s.deps.Now}
	auth := &appservice.Authenticator{Registry: reg, Next: s.accounts, Accounts: s.accounts}
	s.appsvc, s.asAuth = svc, auth
	api := &clientapi.AppServiceAPI{ServerName: s.cfg.Client.ServerName, Registry: reg, Auth: auth,
		Service: svc, Accounts: s.accounts, Rooms: s.rooms}
	s.appServiceAPI = api
	if len(reg.All()) == 0 {
		return s
	}
	s.client.AppServices = api
	s.roomsAPI.AppServices = api
	s.discoveryAPI.AppServices = api
	// Aliases in a service's namespace that do not exist yet are asked of
	// the service, which may create the room there and then.
	s.rooms.AliasMissing = svc.QueryAlias
	// Every persisted event passes the fan-out worker, which queues it for
	// the interested services.
	s.fanout.Register("appservice", svc.Enqueue)
	s.pushEphemeralToAppServices(svc)
	// The services' own users exist from the start (best effort: a
	// failure here is retried by the next process to start).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range reg.All() {
		ensureUser(ctx, s.accounts, r.Sender())
	}
	return s
}

// ensureUser creates a passwordless account if it does not exist.
func ensureUser(ctx context.Context, acc *accounts.Service, u id.UserID) {
	if ok, err := acc.Available(ctx, u); err != nil || !ok {
		return
	}
	_, _ = acc.CreateAccount(ctx, accounts.NewAccount{UserID: u, InhibitLogin: true})
}

// AppServices returns the application service delivery (its Run is the
// all-in-one's worker; Handle is the AppserviceSender Lambda's).
func (s *Server) AppServices() *appservice.Service { return s.appsvc }

// authenticator is the router's token check: application services' tokens
// first, then the accounts'.
func (s *Server) authenticator() h.Authenticator {
	if s.asAuth == nil {
		return s.accounts
	}
	return s.asAuth
}

// appServiceRoutes are the client API extensions for application services.
func (s *Server) appServiceRoutes() []h.Route {
	x := s.appServiceAPI
	return []h.Route{
		{Method: http.MethodPost, Path: cv1 + "/appservice/{appserviceId}/ping", Function: FnAuth, Auth: h.AuthRequired, Handle: x.Ping},
		{Method: http.MethodPut, Path: cv3 + "/directory/list/appservice/{networkId}/{roomId}", Function: FnRooms, Auth: h.AuthRequired, Handle: x.SetNetworkVisibility},
	}
}

// pushEphemeralToAppServices feeds typing, receipt and presence changes to
// the services that asked for ephemeral data (best effort, like EDUs: a
// change that fails to queue is logged and lost).
func (s *Server) pushEphemeralToAppServices(svc *appservice.Service) {
	if s.syncAPI == nil {
		return
	}
	eph, ud := s.syncAPI.Service.Ephemeral, s.syncAPI.UserData
	logErr := func(what string, err error) {
		if err != nil {
			s.deps.Log.Warn("appservice: queueing ephemeral data", "kind", what, "err", err)
		}
	}
	svc.TypingUsers = eph.TypingUsers
	svc.PresenceOf = func(ctx context.Context, u id.UserID) (any, error) { return ud.Presence(ctx, u) }
	eph.OnTypingChanged = func(ctx context.Context, r id.RoomID) { logErr("typing", svc.TypingChanged(ctx, r)) }
	eph.OnReceipt = func(ctx context.Context, rc ephemeral.Receipt) { logErr("receipt", svc.ReceiptChanged(ctx, rc)) }
	prev := ud.OnPresence
	ud.OnPresence = func(ctx context.Context, u id.UserID) {
		if prev != nil {
			prev(ctx, u)
		}
		logErr("presence", svc.PresenceChanged(ctx, u))
	}
}
