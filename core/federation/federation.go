// Package federation is the server-server API: signing keys and the key
// notary, X-Matrix request authentication, receiving transactions (the
// checks performed on receipt of a PDU), serving events and state to other
// servers, joins, leaves and invites in both directions, directory and
// profile queries, and the federation sender that delivers our events to
// every server in a room through the FederationQueue.
//
// It leans on mautrix-go for the protocol's mechanics (signed requests,
// server discovery, hashes, signatures, redaction, event ids, the auth
// rules) and on the room engine (core/rooms) for storage.
package federation

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Service is the federation side of one server.
type Service struct {
	ServerName string
	Key        *signing.Key
	T          table.Table
	Rooms      *rooms.Service
	Keys       *KeyStore
	Client     *mfed.Client
	Auth       *mfed.ServerAuth
	Sender     *Sender
	Log        *slog.Logger
	Now        func() time.Time
	// Profile returns a local user's public profile fields (nil if the
	// user does not exist), for /query/profile.
	Profile func(ctx context.Context, u id.UserID) (map[string]any, error)
	// Directory answers a /publicRooms query from our room directory
	// (publicrooms.go).
	Directory func(ctx context.Context, q DirectoryQuery) (any, error)
	// SpaceHierarchy answers a /hierarchy request of server origin
	// (hierarchy.go).
	SpaceHierarchy func(ctx context.Context, origin string, room id.RoomID, suggestedOnly bool) (*SpaceHierarchy, error)
	Cfg            Config

	edus  eduHandlers
	dests destCache // RoomDestinations' cache (edu_destinations.go)
}

// MaxSendBody bounds a /send request: 50 PDUs and 100 EDUs of 64 KiB.
const MaxSendBody = 16 << 20

// New builds the federation service and hooks it into the room engine
// (remote joins, invites and leaves; queuing events for other servers).
// q is the FederationQueue (nil: events are not sent anywhere).
func New(cfg Config, serverName string, key *signing.Key, t table.Table, rs *rooms.Service, q queue.Queue, log *slog.Logger, now func() time.Time) *Service {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	ks := &KeyStore{T: t, Now: now}
	client := NewClient(serverName, key, ks, cfg)
	s := &Service{ServerName: serverName, Key: key, T: t, Rooms: rs, Keys: ks, Client: client,
		Log: log, Now: now, Cfg: cfg}
	s.Auth = mfed.NewServerAuth(client, ks, func(mfed.XMatrixAuth) string { return serverName })
	s.Auth.MaxBodySize = MaxSendBody
	s.Sender = &Sender{Fed: s, Q: q, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff}
	if rs != nil {
		rs.Remote = s
		prev := rs.OnPersist
		rs.OnPersist = func(ev *rooms.Event) {
			if prev != nil {
				prev(ev)
			}
			s.Sender.OnPersist(ev)
		}
	}
	return s
}

func (s *Service) now() time.Time { return s.Now() }

// VerifyServer implements httpapi.ServerVerifier: the X-Matrix signature
// of the request, checked with the origin's keys (fetched and cached).
func (s *Service) VerifyServer(r *http.Request, maxBody int64) (*http.Request, string, error) {
	if maxBody > 0 && r.ContentLength > maxBody {
		return nil, "", httpapi.TooLarge("request body is over %d bytes", maxBody)
	}
	xm := mfed.ParseXMatrixAuth(r.Header.Get("Authorization"))
	if xm.Origin != "" {
		if !id.ValidateServerName(xm.Origin) {
			return nil, "", httpapi.Unauthorized("invalid origin in X-Matrix authorization")
		}
		r = r.WithContext(withKeysFor(r.Context(), xm.Origin))
	}
	nr, rerr := s.Auth.Authenticate(r)
	if rerr != nil {
		return nil, "", respError(rerr)
	}
	origin := mfed.OriginServerNameFromRequest(nr)
	if origin == "" {
		return nil, "", httpapi.Unauthorized("no origin")
	}
	s.Sender.Nudge(nr.Context(), origin) // it is up: retry what is waiting for it now
	return nr, origin, nil
}

func respError(e *mautrix.RespError) *httpapi.Error {
	status := e.StatusCode
	if status == 0 {
		status = http.StatusUnauthorized
	}
	return &httpapi.Error{Status: status, Code: e.ErrCode, Message: e.Err}
}

// aclAllows applies a room's m.room.server_acl to a server name.
func (s *Service) aclAllows(ctx context.Context, r id.RoomID, server string) (bool, error) {
	ev, err := s.Rooms.CurrentStateEvent(ctx, r, "m.room.server_acl", "")
	if err != nil || ev == nil {
		return true, err
	}
	return ACLAllows(ev.Content, server), nil
}

// ACLAllows evaluates server ACL content for a server name (spec: ports
// are ignored; IP literals denied unless allow_ip_literals; deny wins over
// allow; a missing allow list allows nobody).
func ACLAllows(content json.RawMessage, server string) bool {
	var c struct {
		Allow           []string `json:"allow"`
		Deny            []string `json:"deny"`
		AllowIPLiterals *bool    `json:"allow_ip_literals"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return true
	}
	host, _, ok := mfed.ParseServerName(server)
	if !ok {
		host = server
	}
	host = strings.ToLower(host)
	isIP := net.ParseIP(strings.Trim(host, "[]")) != nil
	if isIP && c.AllowIPLiterals != nil && !*c.AllowIPLiterals {
		return false
	}
	for _, d := range c.Deny {
		if globMatch(strings.ToLower(d), host) {
			return false
		}
	}
	for _, a := range c.Allow {
		if globMatch(strings.ToLower(a), host) {
			return true
		}
	}
	return false
}

// globMatch matches * (any run) and ? (one character). path.Match also
// treats [ and \ specially, so those are escaped first (host names have
// no /, the one character its * does not cross).
func globMatch(pattern, name string) bool {
	esc := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(pattern)
	ok, err := path.Match(esc, name)
	return err == nil && ok
}

// checkACL is the 403 of an ACL'd server.
func (s *Service) checkACL(ctx context.Context, r id.RoomID, origin string) error {
	ok, err := s.aclAllows(ctx, r, origin)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.Forbidden("server %s is denied by the room's server ACL", origin)
	}
	return nil
}

// serverOf returns the server part of a user id.
func serverOf(u id.UserID) string {
	_, server, err := u.Parse()
	if err != nil {
		return ""
	}
	return server
}

func (s *Service) isLocal(u id.UserID) bool { return serverOf(u) == s.ServerName }
