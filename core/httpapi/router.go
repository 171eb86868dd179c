package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"time"
)

// DefaultMaxBody is the request body limit when none is configured.
const DefaultMaxBody = 1 << 20

// AuthMode says what authentication a route needs.
type AuthMode uint8

// Authentication modes.
const (
	AuthNone     AuthMode = iota // no token looked at
	AuthRequired                 // a valid access token (M_MISSING_TOKEN / M_UNKNOWN_TOKEN otherwise)
	AuthOptional                 // a token is checked if given
	// AuthFederation needs a valid X-Matrix signature from another server
	// (401 M_UNAUTHORIZED otherwise); Request.Origin names that server.
	AuthFederation
)

// ServerVerifier checks the X-Matrix authorization of a server-server
// request. It returns the request to continue with (its body may have been
// read and replaced) and the origin server, or an *Error.
type ServerVerifier interface {
	VerifyServer(r *http.Request, maxBody int64) (*http.Request, string, error)
}

// Route is one row of the route table.
type Route struct {
	Method string
	// Path is a net/http ServeMux pattern path: literal segments and
	// {name} or {name...} wildcards, read with Request.PathValue.
	Path string
	// Function is the Lambda function that serves the route.
	Function string
	Auth     AuthMode
	// Limit is the rate-limit class ("" for none).
	Limit string
	// MaxBody overrides Options.MaxBody for this route (0 = the default).
	MaxBody int64
	Handle  Handler
	// Raw, when set instead of Handle, writes the response itself (media).
	Raw func(w http.ResponseWriter, r *Request)
	// A route with neither Handle nor Raw only makes its path known: this
	// router answers it 405 (another function serves its methods).
}

// Authenticator resolves access tokens.
type Authenticator interface {
	// Authenticate returns the caller or an *Error (M_UNKNOWN_TOKEN, …).
	Authenticate(ctx context.Context, token string) (*Caller, error)
}

// RequestAuthenticator is an Authenticator that also sees the request: an
// application service's token names the user to act as in the query
// (user_id, device_id). The router prefers it when Auth implements it.
type RequestAuthenticator interface {
	AuthenticateRequest(r *http.Request, token string) (*Caller, error)
}

// LimitExempter, when Auth implements it, exempts the holders of some
// tokens (application services with rate_limited: false) from rate limits.
type LimitExempter interface {
	ExemptFromLimits(token string) bool
}

// Limiter decides whether a request of a rate-limit class may proceed.
type Limiter interface {
	// Allow returns 0 if allowed, else how long to wait.
	Allow(ctx context.Context, class, key string) time.Duration
}

// Options configure a router.
type Options struct {
	Auth Authenticator
	// Federation verifies requests on AuthFederation routes.
	Federation ServerVerifier
	Limiter    Limiter
	MaxBody    int64
	Log        *slog.Logger
	// Clock is used for logging durations (tests may fix it).
	Now func() time.Time
}

// NewRouter mounts routes on a ServeMux: each path pattern once, dispatching
// on method (405 M_UNRECOGNIZED for a method it lacks), with every other path
// answered 404 M_UNRECOGNIZED, all behind the shared middleware.
func NewRouter(routes []Route, opt Options) http.Handler {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxBody <= 0 {
		opt.MaxBody = DefaultMaxBody
	}
	byPath := map[string]map[string]Route{}
	var order []string
	for _, rt := range routes {
		m, ok := byPath[rt.Path]
		if !ok {
			m = map[string]Route{}
			byPath[rt.Path] = m
			order = append(order, rt.Path)
		}
		if _, dup := m[rt.Method]; dup {
			panic(fmt.Sprintf("httpapi: route %s %s declared twice", rt.Method, rt.Path))
		}
		m[rt.Method] = rt
	}
	mux := http.NewServeMux()
	for _, path := range order {
		methods := byPath[path]
		mux.Handle(path, &dispatcher{methods: methods, allow: allowHeader(methods), opt: &opt})
	}
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path))
	}))
	return middleware(mux, &opt)
}

func allowHeader(methods map[string]Route) string {
	ms := make([]string, 0, len(methods)+1)
	for m, rt := range methods {
		if rt.Handle != nil || rt.Raw != nil {
			ms = append(ms, m)
		}
	}
	ms = append(ms, http.MethodOptions)
	sort.Strings(ms)
	return strings.Join(ms, ", ")
}

type dispatcher struct {
	methods map[string]Route
	allow   string
	opt     *Options
}

func (d *dispatcher) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	rt, ok := d.methods[hr.Method]
	if !ok && hr.Method == http.MethodHead {
		rt, ok = d.methods[http.MethodGet]
	}
	if !ok || (rt.Handle == nil && rt.Raw == nil) {
		w.Header().Set("Allow", d.allow)
		writeError(w, MethodNotAllowed(hr.Method))
		return
	}
	r := &Request{Request: hr, maxBody: d.opt.MaxBody}
	if rt.MaxBody > 0 {
		r.maxBody = rt.MaxBody
	}
	if err := d.authenticate(r, rt.Auth); err != nil {
		writeError(w, err)
		return
	}
	if rt.Limit != "" && d.opt.Limiter != nil && !d.exempt(r) {
		key := clientIP(hr)
		if r.Caller != nil {
			key = string(r.Caller.UserID)
		} else if r.Origin != "" {
			key = "server:" + r.Origin
		}
		if wait := d.opt.Limiter.Allow(hr.Context(), rt.Limit, key); wait > 0 {
			writeError(w, LimitExceeded(wait.Milliseconds()))
			return
		}
	}
	if rt.Raw != nil {
		rt.Raw(w, r)
		return
	}
	out, err := rt.Handle(r)
	if err != nil {
		d.fail(w, hr, err)
		return
	}
	writeResult(w, out)
}

func (d *dispatcher) authenticate(r *Request, mode AuthMode) error {
	if mode == AuthNone {
		return nil
	}
	if mode == AuthFederation {
		if d.opt.Federation == nil {
			return Unauthorized("this server does not accept federation requests")
		}
		nr, origin, err := d.opt.Federation.VerifyServer(r.Request, r.maxBody)
		if err != nil {
			return err
		}
		r.Request, r.Origin = nr, origin
		return nil
	}
	tok, err := accessToken(r.Request)
	if err != nil {
		return err
	}
	if tok == "" {
		if mode == AuthOptional {
			return nil
		}
		return MissingToken("missing access token")
	}
	if d.opt.Auth == nil {
		return UnknownToken("no authenticator configured")
	}
	var c *Caller
	if ra, ok := d.opt.Auth.(RequestAuthenticator); ok {
		c, err = ra.AuthenticateRequest(r.Request, tok)
	} else {
		c, err = d.opt.Auth.Authenticate(r.Context(), tok)
	}
	if err != nil {
		return err
	}
	r.Caller, r.AccessToken = c, tok
	return nil
}

// exempt reports whether the request's token is exempt from rate limits
// (it is looked at even on routes without authentication, such as
// /register for application services).
func (d *dispatcher) exempt(r *Request) bool {
	le, ok := d.opt.Auth.(LimitExempter)
	if !ok {
		return false
	}
	tok := r.AccessToken
	if tok == "" {
		tok, _ = accessToken(r.Request)
	}
	return tok != "" && le.ExemptFromLimits(tok)
}

// AccessToken reads the access token of a request (Authorization header
// or access_token parameter), for handlers of routes without
// authentication that accept one anyway: "" when none is given.
func AccessToken(r *http.Request) (string, error) { return accessToken(r) }

// accessToken reads the token from the Authorization header or, as the spec
// still allows (deprecated), the access_token query parameter.
func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", MissingToken("Authorization header must be 'Bearer <token>'")
		}
		return strings.TrimSpace(tok), nil
	}
	return r.URL.Query().Get("access_token"), nil
}

func (d *dispatcher) fail(w http.ResponseWriter, r *http.Request, err error) {
	e, known := AsError(err)
	if !known {
		d.opt.Log.Error("handler failed", "method", r.Method, "path", r.URL.Path, "request_id", RequestID(r.Context()), "err", err)
	}
	writeError(w, e)
}

func writeResult(w http.ResponseWriter, out any) {
	switch v := out.(type) {
	case *Response:
		for k, hv := range v.Headers {
			w.Header().Set(k, hv)
		}
		writeJSON(w, v.Status, v.Body)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

func writeError(w http.ResponseWriter, err error) {
	e, _ := AsError(err)
	for k, v := range e.Headers {
		w.Header().Set(k, v)
	}
	writeJSON(w, e.Status, e.Body())
}

// WriteError writes err as a Matrix error (for Raw handlers).
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// WriteJSON writes a JSON body with a status (for Raw handlers).
func WriteJSON(w http.ResponseWriter, status int, body any) { writeJSON(w, status, body) }

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"errcode":"M_UNKNOWN","error":"could not encode response"}`)
	}
	if body == nil {
		b = []byte("{}")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type ctxKey int

const requestIDKey ctxKey = 1

// RequestID returns the id the middleware gave this request.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// statusWriter remembers the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes through so streaming handlers work.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// middleware adds a request id, CORS headers (the spec asks for them on every
// response so browser clients work), OPTIONS preflight answers, panic
// recovery and an access log line.
func middleware(next http.Handler, opt *Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := opt.Now()
		rid := newRequestID()
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, rid))
		h := w.Header()
		h.Set("X-Request-Id", rid)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				opt.Log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "request_id", rid, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !sw.wrote {
					writeError(sw, Unknown("internal server error"))
				}
			}
			opt.Log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "ms", opt.Now().Sub(start).Milliseconds(), "request_id", rid)
		}()
		if r.Method == http.MethodOptions {
			sw.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func clientIP(r *http.Request) string {
	if xf := r.Header.Get("X-Forwarded-For"); xf != "" {
		ip, _, _ := strings.Cut(xf, ",")
		return strings.TrimSpace(ip)
	}
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return host
}

// ClientIP returns the address the request came from (X-Forwarded-For first,
// as set by API Gateway and reverse proxies).
func ClientIP(r *http.Request) string { return clientIP(r) }
