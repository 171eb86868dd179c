// Package httpapi is the HTTP plumbing every endpoint shares: the Matrix
// error body, JSON request decoding with the spec's errors, the route type,
// the router built from a route table (404/405 M_UNRECOGNIZED), and the
// middleware (panic recovery, CORS, body limits, request ids, logging).
package httpapi

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a Matrix error answer: {"errcode": Code, "error": Message} with
// an HTTP status. Extra fields (retry_after_ms, soft_logout, …) go in Extra.
type Error struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any
	// Headers are set on the response (e.g. Retry-After).
	Headers map[string]string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// Body is the JSON body of the error.
func (e *Error) Body() map[string]any {
	b := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		b[k] = v
	}
	b["errcode"] = e.Code
	b["error"] = e.Message
	return b
}

// With returns a copy with one extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

func newErr(status int, code string) func(format string, args ...any) *Error {
	return func(format string, args ...any) *Error {
		return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
	}
}

// Constructors for the spec's common errors, with their usual HTTP status.
var (
	Forbidden        = newErr(http.StatusForbidden, "M_FORBIDDEN")
	UnknownToken     = newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	MissingToken     = newErr(http.StatusUnauthorized, "M_MISSING_TOKEN")
	BadJSON          = newErr(http.StatusBadRequest, "M_BAD_JSON")
	NotJSON          = newErr(http.StatusBadRequest, "M_NOT_JSON")
	NotFound         = newErr(http.StatusNotFound, "M_NOT_FOUND")
	MissingParam     = newErr(http.StatusBadRequest, "M_MISSING_PARAM")
	InvalidParam     = newErr(http.StatusBadRequest, "M_INVALID_PARAM")
	TooLarge         = newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	Unrecognized     = newErr(http.StatusNotFound, "M_UNRECOGNIZED")
	UserInUse        = newErr(http.StatusBadRequest, "M_USER_IN_USE")
	InvalidUsername  = newErr(http.StatusBadRequest, "M_INVALID_USERNAME")
	Exclusive        = newErr(http.StatusBadRequest, "M_EXCLUSIVE")
	UserDeactivated  = newErr(http.StatusForbidden, "M_USER_DEACTIVATED")
	Unknown          = newErr(http.StatusInternalServerError, "M_UNKNOWN")
	BadRequest       = newErr(http.StatusBadRequest, "M_UNKNOWN")
	Unauthorized     = newErr(http.StatusUnauthorized, "M_UNAUTHORIZED")
	ThreepidDenied   = newErr(http.StatusForbidden, "M_THREEPID_DENIED")
	ThreepidNotFound = newErr(http.StatusBadRequest, "M_THREEPID_NOT_FOUND")
	Unsupported      = newErr(http.StatusBadRequest, "M_UNRECOGNIZED")
)

// MethodNotAllowed is the answer for a known path with a method it lacks.
func MethodNotAllowed(method string) *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Code: "M_UNRECOGNIZED", Message: "method " + method + " not allowed on this endpoint"}
}

// LimitExceeded is the rate-limit answer with the time to wait.
func LimitExceeded(retryAfterMS int64) *Error {
	e := &Error{Status: http.StatusTooManyRequests, Code: "M_LIMIT_EXCEEDED", Message: "too many requests",
		Extra:   map[string]any{"retry_after_ms": retryAfterMS},
		Headers: map[string]string{"Retry-After": fmt.Sprint((retryAfterMS + 999) / 1000)}}
	return e
}

// AsError converts any error into a Matrix error; errors that are not
// *Error become 500 M_UNKNOWN with a generic message (details are logged, not
// shown to clients).
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return Unknown("internal server error"), false
}
