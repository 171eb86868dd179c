// Package server assembles the homeserver from its parts: it owns the route
// table (routes.go), builds the domain services over the storage ports, and
// hands out an http.Handler for the whole server or for one Lambda function.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/cirrus-matrix/cirrus/core/accounts"
	"github.com/cirrus-matrix/cirrus/core/appservice"
	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/fanout"
	"github.com/cirrus-matrix/cirrus/core/federation"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/keys"
	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/core/mediaapi"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/slidingsync"
	"github.com/cirrus-matrix/cirrus/core/table"
	"maunium.net/go/mautrix/id"
)

// Config is the server's settings (infra/config reads them from the environment).
type Config struct {
	Client       clientapi.Config
	MaxBodyBytes int64
	BcryptCost   int
	// Limits are the rate limits per class; nil disables rate limiting.
	Limits map[string]httpapi.Rate
	// SharedLimits counts the limits in the table, shared by every process
	// (httpapi.NewSharedLimiter), rather than per process.
	SharedLimits bool
	// Media is the content repository's settings (its ServerName is filled in).
	Media media.Config
	// Federation is the server-server settings (federation.go).
	Federation federation.Config
	// Sync is the /sync settings (sync.go).
	Sync SyncConfig
	// PushAllowPrivate lets push gateways be on private or loopback
	// addresses (tests only).
	PushAllowPrivate bool
	// Discovery is the settings of the support, TURN and directory endpoints.
	Discovery clientapi.DiscoveryConfig
	// AppServices is the application service settings (appservice.go).
	AppServices AppServiceConfig
	// SSO is the OpenID Connect login settings (sso.go).
	SSO SSOConfig
}

// Deps are the adapters the server runs on.
type Deps struct {
	Table      table.Table
	Blobs      blob.Store
	SigningKey *signing.Key
	Log        *slog.Logger
	Now        func() time.Time
	// FederationQueue carries our events to other servers (nil: none sent).
	FederationQueue queue.Queue
	// FanoutQueue wakes the fan-out worker (core/fanout) after each event
	// (nil: only this process's own Run loop is kicked).
	FanoutQueue queue.Queue
	// AppServiceQueue carries events to application services (nil: none pushed).
	AppServiceQueue queue.Queue
}

// Server is one homeserver.
type Server struct {
	cfg      Config
	deps     Deps
	accounts *accounts.Service
	client   *clientapi.API
	rooms    *rooms.Service
	roomsAPI *clientapi.RoomsAPI
	keys     *keys.Service
	keysAPI  *clientapi.KeysAPI
	// dehydratedAPI serves MSC3814's dehydrated devices (keys.go).
	dehydratedAPI *clientapi.DehydratedAPI
	media         *media.Service
	mediaAPI      *mediaapi.API
	fed           *federation.Service
	// fanout runs the per-event work after persistence (sync.go, push.go).
	fanout *fanout.Worker
	// /sync and user data (sync.go).
	syncAPI     *clientapi.SyncAPI
	userDataAPI *clientapi.UserDataAPI
	// Push rules (push.go).
	pushAPI *clientapi.PushAPI
	// User directory, OpenID, hierarchy, summaries and small discovery endpoints.
	discoveryAPI *clientapi.DiscoveryAPI
	// Server-side search (search.go).
	searchAPI *clientapi.SearchAPI
	// Application services (appservice.go).
	appsvc        *appservice.Service
	asAuth        *appservice.Authenticator
	appServiceAPI *clientapi.AppServiceAPI
	// SSO login (sso.go) and peeking with GET /events (peek.go).
	ssoAPI  *clientapi.SSOAPI
	peekAPI *clientapi.PeekAPI
	// Simplified sliding sync, MSC4186 (sliding.go).
	sliding *slidingsync.Service
}

// New builds the server.
func New(cfg Config, d Deps) (*Server, error) {
	if d.Table == nil {
		return nil, fmt.Errorf("server: no table")
	}
	if cfg.Client.ServerName == "" {
		return nil, fmt.Errorf("server: no server name")
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.SigningKey == nil {
		return nil, fmt.Errorf("server: no signing key")
	}
	acc := &accounts.Service{T: d.Table, ServerName: cfg.Client.ServerName, BcryptCost: cfg.BcryptCost, Now: d.Now}
	rs := rooms.New(d.Table, cfg.Client.ServerName, d.SigningKey, d.Log, d.Now)
	rs.Profile = func(ctx context.Context, u id.UserID) (string, string) {
		p, err := acc.GetProfile(ctx, u)
		if err != nil || p == nil {
			return "", ""
		}
		return p.Fields.String(accounts.FieldDisplayName), p.Fields.String(accounts.FieldAvatarURL)
	}
	roomsAPI := &clientapi.RoomsAPI{ServerName: cfg.Client.ServerName, Rooms: rs}
	return (&Server{
		fanout:   fanout.New(d.Table, rs, d.FanoutQueue, d.Log, d.Now),
		cfg:      cfg,
		deps:     d,
		accounts: acc,
		client:   &clientapi.API{Cfg: cfg.Client, Accounts: acc, RoomLeaver: rs, ProfileSync: rs},
		rooms:    rs,
		roomsAPI: roomsAPI,
		discoveryAPI: &clientapi.DiscoveryAPI{ServerName: cfg.Client.ServerName, Cfg: cfg.Discovery,
			T: d.Table, Rooms: rs, Accounts: acc, Now: d.Now, RoomsAPI: roomsAPI},
	}).withKeys().withMedia().withFederation().withSync().withPush().withFederatedE2EE().withAppServices().withSearch().withSSO().withPeek().withSlidingSync(), nil
}

// Fanout is the fan-out worker: handlers registered on it run once (at
// least) for every persisted event, in stream order (core/fanout). Run it
// in-process (the all-in-one) or feed it the FanoutQueue (the Lambda).
func (s *Server) Fanout() *fanout.Worker { return s.fanout }

// RouteTable returns the route table without building a server (handlers
// are bound to an empty server and must not be called): for checking the
// deployment template and for documentation.
func RouteTable() []httpapi.Route { return (&Server{}).routes() }

// Functions lists the Lambda functions that serve routes, sorted.
func Functions() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range RouteTable() {
		if !seen[r.Function] {
			seen[r.Function] = true
			out = append(out, r.Function)
		}
	}
	sort.Strings(out)
	return out
}

// Handler serves the routes of the named functions, or every route when
// none is named (the all-in-one).
func (s *Server) Handler(functions ...string) http.Handler {
	want := map[string]bool{}
	for _, f := range functions {
		want[f] = true
	}
	var rs []httpapi.Route
	for _, r := range s.routes() {
		if len(want) == 0 || want[r.Function] {
			rs = append(rs, r)
		} else {
			// Other functions' paths stay known, so a method nobody serves
			// is 405 here rather than 404 (API Gateway sends it to $default).
			rs = append(rs, httpapi.Route{Method: r.Method, Path: r.Path, Function: r.Function})
		}
	}
	rs = s.moderated(rs) // moderation.go: locked and suspended accounts
	var lim httpapi.Limiter
	if s.cfg.Limits != nil && s.cfg.SharedLimits {
		lim = httpapi.NewSharedLimiter(s.deps.Table, s.cfg.Limits, s.deps.Now)
	} else if s.cfg.Limits != nil {
		lim = httpapi.NewLimiter(s.cfg.Limits, s.deps.Now)
	}
	router := httpapi.NewRouter(rs, httpapi.Options{
		Auth:       s.authenticator(),
		Federation: s.serverVerifier(),
		Limiter:    lim,
		MaxBody:    s.cfg.MaxBodyBytes,
		Log:        s.deps.Log,
		Now:        s.deps.Now,
	})
	// The client address and user agent ride in the context so that
	// authentication can record a device's last-seen address.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := accounts.WithUserAgent(accounts.WithClientIP(r.Context(), httpapi.ClientIP(r)), r.UserAgent())
		router.ServeHTTP(w, r.WithContext(ctx))
	})
}
