package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Profile fields the spec defines, and its limits.
const (
	FieldDisplayName = "displayname"
	FieldAvatarURL   = "avatar_url"
	FieldTimeZone    = "m.tz"
	// MaxProfileBytes is the spec's limit on a whole profile ("MUST be under
	// 64 KiB"), measured as its JSON encoding.
	MaxProfileBytes = 64 * 1024
	// MaxProfileKeyBytes is the longest field name (M_KEY_TOO_LARGE above).
	MaxProfileKeyBytes = 255
)

// Profile is a user's profile: field name → JSON value.
type Profile map[string]json.RawMessage

// String returns a field that holds a string ("" if absent or not a string).
func (p Profile) String(key string) string {
	var s string
	if raw, ok := p[key]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// Size is the length of the profile's JSON encoding.
func (p Profile) Size() int {
	b, _ := json.Marshal(p)
	return len(b)
}

func profileKey(u id.UserID) table.Key { return table.Key{PK: userPK(u), SK: "profile"} }

func profileItem(u id.UserID, p Profile, version int64) table.Item {
	if p == nil {
		p = Profile{}
	}
	k := profileKey(u)
	data, _ := json.Marshal(p)
	return table.Item{PK: k.PK, SK: k.SK, Data: data, Version: version}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// ProfileTooLarge is the spec's answer when a change would take a profile
// over MaxProfileBytes.
func ProfileTooLarge() *httpapi.Error {
	return &httpapi.Error{Status: http.StatusBadRequest, Code: "M_PROFILE_TOO_LARGE",
		Message: fmt.Sprintf("the profile would be over %d bytes", MaxProfileBytes)}
}

// UserProfile is what a profile lookup finds.
type UserProfile struct {
	// Exists is false when there is no such account.
	Exists      bool
	Deactivated bool
	Fields      Profile
}

// GetProfile reads an account and its profile in one round trip.
func (s *Service) GetProfile(ctx context.Context, u id.UserID) (*UserProfile, error) {
	items, err := s.T.GetMany(ctx, []table.Key{accountKey(u), profileKey(u)})
	if err != nil {
		return nil, err
	}
	out := &UserProfile{Fields: Profile{}}
	for _, it := range items {
		switch it.SK {
		case "account":
			var a Account
			if err := json.Unmarshal(it.Data, &a); err != nil {
				return nil, fmt.Errorf("account %s: %w", u, err)
			}
			out.Exists, out.Deactivated = true, a.Deactivated
		case "profile":
			if err := json.Unmarshal(it.Data, &out.Fields); err != nil {
				return nil, fmt.Errorf("profile %s: %w", u, err)
			}
		}
	}
	return out, nil
}

// UpdateProfile applies change to the user's profile with a conditional
// write (re-reading and retrying when another writer got there first) and
// returns the profile as written. A result over MaxProfileBytes is
// M_PROFILE_TOO_LARGE; errors from change are returned as they are. The
// user's directory entries (directory.go) change in the same transaction.
func (s *Service) UpdateProfile(ctx context.Context, u id.UserID, change func(Profile) error) (Profile, error) {
	for range maxAttempts {
		a, av, old, pv, err := readAccountProfile(ctx, s.T, u)
		if err != nil {
			return nil, err
		}
		p := Profile{}
		for k, v := range old {
			p[k] = v
		}
		if err := change(p); err != nil {
			return nil, err
		}
		if p.Size() > MaxProfileBytes {
			return nil, ProfileTooLarge()
		}
		ops := []table.Op{table.Put(profileItem(u, p, pv+1), profileCond(pv)), accountCheck(u, a, av)}
		ops = append(ops, directoryOps(u, old, true, p, listed(a))...)
		err = s.T.Transact(ctx, ops)
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, table.ErrConflict
}

// DeleteProfile erases the user's whole profile (and, with it, the display
// name and avatar of the user's directory entries).
func (s *Service) DeleteProfile(ctx context.Context, u id.UserID) error {
	for range maxAttempts {
		a, av, old, pv, err := readAccountProfile(ctx, s.T, u)
		if err != nil {
			return err
		}
		if pv == 0 {
			return nil
		}
		ops := []table.Op{table.Delete(profileKey(u), table.IfVersion(pv)), accountCheck(u, a, av)}
		ops = append(ops, directoryOps(u, old, true, Profile{}, listed(a))...)
		err = s.T.Transact(ctx, ops)
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}
