package push

import (
	"context"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Pusher is one pusher as the client set it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// Key layout: the pusher lives in its user's partition; a second item per
// (app id, pushkey) lists the users that have it, so a set without
// append removes the others' pushers of that pushkey.
func pusherSK(appID, pushKey string) string { return "pusher#" + appID + "\x1f" + pushKey }
func pushKeyPK(appID, pushKey string) string {
	return "pushkey#" + appID + "\x1f" + pushKey
}

// Pushers keeps users' pushers.
type Pushers struct {
	T table.Table
}

// List returns u's pushers.
func (s *Pushers) List(ctx context.Context, u id.UserID) ([]Pusher, error) {
	out := []Pusher{}
	q := table.Query{PK: userPK(u), Prefix: "pusher#"}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var p Pusher
			if json.Unmarshal(it.Data, &p) == nil {
				out = append(out, p)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// Set adds or replaces u's pusher p. Without appendToOthers, the same app
// id and pushkey is removed from every other user.
func (s *Pushers) Set(ctx context.Context, u id.UserID, p Pusher, appendToOthers bool) error {
	data, _ := json.Marshal(p)
	ops := []table.Op{
		table.Put(table.Item{PK: userPK(u), SK: pusherSK(p.AppID, p.PushKey), Data: data}, table.Cond{}),
		table.Put(table.Item{PK: pushKeyPK(p.AppID, p.PushKey), SK: string(u)}, table.Cond{}),
	}
	if !appendToOthers {
		others, err := s.holders(ctx, p.AppID, p.PushKey)
		if err != nil {
			return err
		}
		for _, o := range others {
			if o == u {
				continue
			}
			ops = append(ops,
				table.Delete(table.Key{PK: userPK(o), SK: pusherSK(p.AppID, p.PushKey)}, table.Cond{}),
				table.Delete(table.Key{PK: pushKeyPK(p.AppID, p.PushKey), SK: string(o)}, table.Cond{}))
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), table.MaxTxItems)
		if err := s.T.Transact(ctx, ops[:n]); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// Delete removes u's pusher of that app id and pushkey (no error if none).
func (s *Pushers) Delete(ctx context.Context, u id.UserID, appID, pushKey string) error {
	return s.T.Transact(ctx, []table.Op{
		table.Delete(table.Key{PK: userPK(u), SK: pusherSK(appID, pushKey)}, table.Cond{}),
		table.Delete(table.Key{PK: pushKeyPK(appID, pushKey), SK: string(u)}, table.Cond{}),
	})
}

func (s *Pushers) holders(ctx context.Context, appID, pushKey string) ([]id.UserID, error) {
	var out []id.UserID
	q := table.Query{PK: pushKeyPK(appID, pushKey)}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			out = append(out, id.UserID(it.SK))
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// ValidPushURL reports whether u is an http(s) URL whose path is the push
// gateway's notify endpoint.
func ValidPushURL(u string) bool {
	rest, ok := strings.CutPrefix(u, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(u, "http://")
	}
	if !ok {
		return false
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || host == "" {
		return false
	}
	path, _, _ = strings.Cut(path, "?")
	return "/"+path == "/_matrix/push/v1/notify"
}
