package rooms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
)

// Content reports live in one partition, newest last by sort key, for the
// server's admins to read: reports / <%016d received ms>#<random id>.
const reportsPK = "reports"

// Report is one report of a room, an event or a user.
type Report struct {
	ID         string     `json:"id"`
	RoomID     id.RoomID  `json:"room_id"`
	EventID    id.EventID `json:"event_id,omitempty"`
	Reporter   id.UserID  `json:"user_id"`
	Reason     string     `json:"reason,omitempty"`
	Score      *int       `json:"score,omitempty"`
	ReceivedTS int64      `json:"received_ts"`
	// Sender is who sent the reported event (so admins need not look it up).
	Sender id.UserID `json:"sender,omitempty"`
	// ReportedUser is the user a user report is about (no room, no event).
	ReportedUser id.UserID `json:"reported_user_id,omitempty"`
}

// AddReport stores a report.
func (s *Service) AddReport(ctx context.Context, rep Report) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	rep.ReceivedTS = s.Now().UnixMilli()
	rep.ID = fmt.Sprintf("%016d#%s", rep.ReceivedTS, hex.EncodeToString(b[:]))
	d, _ := json.Marshal(rep)
	return rep.ID, s.T.Put(ctx, table.Item{PK: reportsPK, SK: rep.ID, Data: d}, table.IfNotExists())
}

// Reports lists stored reports, newest first, one page at a time (cursor ""
// to start; the returned cursor is "" at the end).
func (s *Service) Reports(ctx context.Context, cursor string, limit int) ([]Report, string, error) {
	page, err := s.T.Query(ctx, table.Query{PK: reportsPK, Reverse: true, Limit: limit, Cursor: cursor})
	if err != nil {
		return nil, "", err
	}
	out := make([]Report, 0, len(page.Items))
	for _, it := range page.Items {
		var r Report
		if err := json.Unmarshal(it.Data, &r); err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	return out, page.Next, nil
}
