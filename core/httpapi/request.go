package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"maunium.net/go/mautrix/id"
)

// Caller is who made an authenticated client request.
type Caller struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	IsGuest  bool
	// TokenKey identifies the access token (a hash, never the token itself).
	TokenKey string
	// AppService is the id of the application service whose as_token
	// authenticated the request ("" for ordinary users).
	AppService string
	// Suspended and Locked are the account's moderation state (the server
	// answers M_USER_SUSPENDED or M_USER_LOCKED; core/server/moderation.go).
	Suspended, Locked bool
}

// Request is what a Handler receives.
type Request struct {
	*http.Request
	// Caller is set on routes with AuthRequired (and on AuthOptional when a
	// token was given).
	Caller *Caller
	// AccessToken is the raw token the client sent, if any.
	AccessToken string
	// Origin is the requesting server on AuthFederation routes.
	Origin   string
	maxBody  int64
	body     []byte
	bodyRead bool
}

// Ctx is the request's context.
func (r *Request) Ctx() context.Context { return r.Request.Context() }

// Body reads the whole body once, enforcing the size limit (413 M_TOO_LARGE).
func (r *Request) Body() ([]byte, error) {
	if r.bodyRead {
		return r.body, nil
	}
	r.bodyRead = true
	if r.Request.Body == nil {
		return nil, nil
	}
	limit := r.maxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if r.ContentLength > limit {
		return nil, TooLarge("request body is over %d bytes", limit)
	}
	b, err := io.ReadAll(io.LimitReader(r.Request.Body, limit+1))
	if err != nil {
		return nil, BadRequest("could not read request body")
	}
	if int64(len(b)) > limit {
		return nil, TooLarge("request body is over %d bytes", limit)
	}
	r.body = b
	return b, nil
}

// DecodeJSON decodes the body (a JSON object) into v: a body that is not
// JSON, or not an object, is M_NOT_JSON; JSON of the wrong shape is M_BAD_JSON.
func (r *Request) DecodeJSON(v any) error {
	b, err := r.Body()
	if err != nil {
		return err
	}
	return DecodeJSON(b, v)
}

// DecodeJSON is Request.DecodeJSON for a byte slice.
func DecodeJSON(b []byte, v any) error {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return NotJSON("request body is empty, expected a JSON object")
	}
	if !json.Valid(trimmed) {
		return NotJSON("request body is not valid JSON")
	}
	if trimmed[0] != '{' {
		return NotJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return BadJSON("field %q has the wrong type", te.Field)
		}
		return BadJSON("request body has the wrong shape: %v", err)
	}
	return nil
}

// DecodeOptionalJSON is DecodeJSON but accepts an empty body (v unchanged).
func (r *Request) DecodeOptionalJSON(v any) error {
	b, err := r.Body()
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return DecodeJSON(b, v)
}

// QueryInt parses an optional integer query parameter (M_INVALID_PARAM when
// malformed or outside [min, max]).
func (r *Request) QueryInt(name string, def, min, max int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < min || n > max {
		return 0, InvalidParam("query parameter %s must be an integer in [%d, %d]", name, min, max)
	}
	return n, nil
}

// Response lets a handler choose the status code and headers.
type Response struct {
	Status  int
	Body    any
	Headers map[string]string
}

// Handler serves one route: it returns a value to send as JSON with 200, a
// *Response, or an error (a *Error goes to the client as is; anything else
// becomes 500 M_UNKNOWN and is logged).
type Handler func(r *Request) (any, error)

// Empty is the `{}` body many endpoints answer with.
type Empty struct{}
