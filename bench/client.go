package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// client is the few client-server API calls the harness makes, over plain
// net/http so that what is timed is the server and one loopback round trip.
type client struct {
	base string
	http *http.Client
}

func newClient(base string, conns int) *client {
	tr := &http.Transport{
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &client{base: base, http: &http.Client{Transport: tr}}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// matrixError is a non-2xx answer.
type matrixError struct {
	Status  int
	Code    string `json:"errcode"`
	Message string `json:"error"`
	Body    string
}

func (e *matrixError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %.200s", e.Status, e.Body)
}

// do sends a request and decodes a 2xx JSON answer into out (if not nil). It
// returns the size of the response body.
func (c *client) do(ctx context.Context, method, path, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return len(raw), err
	}
	if resp.StatusCode/100 != 2 {
		me := &matrixError{Status: resp.StatusCode, Body: string(raw)}
		_ = json.Unmarshal(raw, me)
		return len(raw), me
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return len(raw), fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return len(raw), nil
}

type session struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// register creates an account with user-interactive auth (m.login.dummy).
func (c *client) register(ctx context.Context, user, password string) (*session, error) {
	req := map[string]any{"username": user, "password": password, "initial_device_display_name": "bench"}
	var s session
	_, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", "", req, &s)
	if me, ok := err.(*matrixError); ok && me.Status == http.StatusUnauthorized {
		var uia struct {
			Session string `json:"session"`
		}
		_ = json.Unmarshal([]byte(me.Body), &uia)
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		_, err = c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", "", req, &s)
	}
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", user, err)
	}
	return &s, nil
}

func (c *client) login(ctx context.Context, user, password string) (*session, error) {
	req := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user}, "password": password}
	var s session
	if _, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/login", "", req, &s); err != nil {
		return nil, fmt.Errorf("login %s: %w", user, err)
	}
	return &s, nil
}

func (c *client) createRoom(ctx context.Context, token, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	req := map[string]any{"preset": "public_chat", "name": name}
	if _, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", token, req, &out); err != nil {
		return "", fmt.Errorf("createRoom: %w", err)
	}
	return out.RoomID, nil
}

func (c *client) join(ctx context.Context, token, room string) error {
	if _, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room), token, map[string]any{}, nil); err != nil {
		return fmt.Errorf("join %s: %w", room, err)
	}
	return nil
}

// send sends one m.room.message and returns its event id.
func (c *client) send(ctx context.Context, token, room, txn, body string) (string, error) {
	var out struct {
		EventID string `json:"event_id"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/send/m.room.message/" + url.PathEscape(txn)
	if _, err := c.do(ctx, http.MethodPut, path, token, map[string]string{"msgtype": "m.text", "body": body}, &out); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	if out.EventID == "" {
		return "", fmt.Errorf("send: no event_id in the answer")
	}
	return out.EventID, nil
}

// messagesBack reads one backward page of /messages from the room's end and
// returns how many events it held.
func (c *client) messagesBack(ctx context.Context, token, room string, limit int) (int, error) {
	var out struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=%d", url.PathEscape(room), limit)
	if _, err := c.do(ctx, http.MethodGet, path, token, nil, &out); err != nil {
		return 0, fmt.Errorf("messages: %w", err)
	}
	return len(out.Chunk), nil
}

func (c *client) whoami(ctx context.Context, token string) error {
	_, err := c.do(ctx, http.MethodGet, "/_matrix/client/v3/account/whoami", token, nil, nil)
	return err
}

// ready polls /versions until it answers 200 (or ctx ends), as fast as the
// loopback allows: it is how cold starts of the all-in-one are timed.
func (c *client) ready(ctx context.Context) error {
	var err error
	for range maxReadyAttempts {
		var req *http.Request
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/_matrix/client/versions", nil)
		var resp *http.Response
		resp, err = c.http.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Microsecond):
		}
	}
	return fmt.Errorf("server not ready after %d attempts (last error: %v)", maxReadyAttempts, err)
}

// maxReadyAttempts bounds ready's polling (the context's deadline usually
// ends it first).
const maxReadyAttempts = 200_000
