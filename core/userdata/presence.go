package userdata

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Presence states.
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// Presence is kept minimally in this version: the state a user (or their
// syncing clients) last set, an optional status message and the last time
// they were active. It is not pushed through /sync yet.
const (
	// idleAfter turns "online" into "unavailable" when reading.
	idleAfter = 5 * time.Minute
	// touchEvery bounds how often syncing refreshes last_active (one write
	// per user per interval at most).
	touchEvery = time.Minute
	// activeWithin is how recent activity must be for currently_active.
	activeWithin = time.Minute
	// reannounceEvery is how often the presence of a user who stays
	// online or unavailable is reported again (to other servers, above
	// all): Synapse takes a remote user it has heard nothing of for 30
	// minutes to be offline, and repeats its own users' every 25.
	reannounceEvery = 25 * time.Minute
)

// ValidPresence reports whether p is one of the three states.
func ValidPresence(p string) bool {
	return p == PresenceOnline || p == PresenceUnavailable || p == PresenceOffline
}

func presenceKey(u id.UserID) table.Key { return table.Key{PK: userPK(u), SK: "presence"} }

type presenceRecord struct {
	Presence   string  `json:"presence"`
	StatusMsg  *string `json:"status_msg,omitempty"`
	LastActive int64   `json:"last_active"` // Unix ms
	// Announced is when a local user's presence was last reported to
	// OnPresence (Unix ms).
	Announced int64 `json:"announced,omitempty"`
}

// PresenceStatus is what GET /presence/{userId}/status answers.
type PresenceStatus struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

func (s *Service) getPresence(ctx context.Context, u id.UserID) (*presenceRecord, error) {
	it, err := s.T.Get(ctx, presenceKey(u))
	if errors.Is(err, table.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r presenceRecord
	if err := json.Unmarshal(it.Data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SetPresence stores an explicit presence state (PUT /presence/…/status).
// statusMsg nil keeps the current message; "" clears it.
func (s *Service) SetPresence(ctx context.Context, u id.UserID, state string, statusMsg *string) error {
	cur, err := s.getPresence(ctx, u)
	if err != nil {
		return err
	}
	r := presenceRecord{Presence: state, LastActive: s.now().UnixMilli()}
	r.Announced = r.LastActive
	if cur != nil {
		r.StatusMsg = cur.StatusMsg
	}
	if statusMsg != nil {
		r.StatusMsg = statusMsg
		if *statusMsg == "" {
			r.StatusMsg = nil
		}
	}
	d, _ := json.Marshal(r)
	k := presenceKey(u)
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}); err != nil {
		return err
	}
	s.presenceChanged(ctx, u)
	return nil
}

// TouchPresence records that a client synced with set_presence=state. It
// writes only when the state changes or last_active is older than a minute,
// and reports the presence to OnPresence when the state changed or, for a
// user who stays online or unavailable, every reannounceEvery.
func (s *Service) TouchPresence(ctx context.Context, u id.UserID, state string) error {
	cur, err := s.getPresence(ctx, u)
	if err != nil {
		return err
	}
	now := s.now().UnixMilli()
	if cur != nil && cur.Presence == state && now-cur.LastActive < touchEvery.Milliseconds() {
		return nil
	}
	if cur != nil && state == PresenceOffline && cur.Presence == PresenceOffline {
		return nil
	}
	r := presenceRecord{Presence: state, LastActive: now}
	if cur != nil {
		r.StatusMsg, r.Announced = cur.StatusMsg, cur.Announced
		if state == PresenceOffline {
			r.LastActive = cur.LastActive // being offline is not activity
		}
	}
	announce := cur == nil || cur.Presence != state ||
		(state != PresenceOffline && now-cur.Announced >= reannounceEvery.Milliseconds())
	if announce {
		r.Announced = now
	}
	d, _ := json.Marshal(r)
	k := presenceKey(u)
	if err := s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: d}, table.Cond{}); err != nil {
		return err
	}
	if announce {
		s.presenceChanged(ctx, u)
	}
	return nil
}

// Presence returns a user's presence as others see it: "online" decays to
// "unavailable" after five idle minutes; no record means offline.
func (s *Service) Presence(ctx context.Context, u id.UserID) (*PresenceStatus, error) {
	r, err := s.getPresence(ctx, u)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return &PresenceStatus{Presence: PresenceOffline}, nil
	}
	ago := max(s.now().UnixMilli()-r.LastActive, 0)
	st := &PresenceStatus{Presence: r.Presence, StatusMsg: r.StatusMsg, LastActiveAgo: &ago}
	if st.Presence == PresenceOnline && time.Duration(ago)*time.Millisecond > idleAfter {
		st.Presence = PresenceUnavailable
	}
	if st.Presence == PresenceOnline {
		active := time.Duration(ago)*time.Millisecond < activeWithin
		st.CurrentlyActive = &active
	}
	return st, nil
}
