package slidingsync

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Connection state lives in the table, one immutable item per position:
//
//	sliding#<@u>\x1f<device>\x1f<conn_id> / counter      n = last position allocated (Add)
//	sliding#<@u>\x1f<device>\x1f<conn_id> / pos#<%016d>  d = the state after that response; ttl
//
// A response allocates a new position with one Add and writes its state
// with IfNotExists, so concurrent requests on one connection (retries, a
// cancelled request still running on another Lambda instance) each write
// their own position and never overwrite each other's. A request naming
// position P deletes the state P was derived from (the client has moved
// past it: MSC4186 lets the server drop state from before a position it
// has seen). Positions not used again expire with their TTL.

// DefaultConnTTL is how long an unused position stays valid.
const DefaultConnTTL = 7 * 24 * time.Hour

// maxStateBytes keeps the stored state under DynamoDB's item limit.
const maxStateBytes = 350 * 1024

// ErrUnknownPos is the answer for a position this connection does not have
// (MSC4186: the client starts a new connection).
func errUnknownPos() error {
	return &httpapi.Error{Status: 400, Code: "M_UNKNOWN_POS", Message: "unknown or expired pos: start again without one"}
}

// connState is what a connection remembers after a response.
type connState struct {
	// Prev is the position this state followed (deleted once the client
	// uses this one).
	Prev int64 `json:"prev,omitempty"`
	// Tok is the stream positions everything before which was looked at.
	Tok clientsync.Token `json:"tok"`
	// Rooms are the rooms the connection has looked at.
	Rooms map[id.RoomID]*roomState `json:"rooms"`
	// Lists are the counts last sent per list.
	Lists map[string]int `json:"lists,omitempty"`
}

// roomState is what a connection knows about one room.
type roomState struct {
	// M is the membership last seen.
	M string `json:"m"`
	// Facts says Bump, Last, Type and Enc have been computed.
	Facts bool    `json:"f,omitempty"`
	Last  int64   `json:"l,omitempty"` // stream position of the newest event seen
	Bump  int64   `json:"b,omitempty"`
	Type  *string `json:"t,omitempty"`
	Enc   bool    `json:"e,omitempty"`
	// InvDM is an invite's is_direct.
	InvDM bool `json:"id,omitempty"`
	// Kicked is a leave or ban by someone else after a join.
	Kicked bool `json:"k,omitempty"`
	// What was last sent: Sent at all, when the event stream had been read
	// up to SentPos, up to room sequence SentSeq, with membership SentM,
	// config hash Cfg, is_dm DM.
	Sent    bool   `json:"s,omitempty"`
	SentPos int64  `json:"sp,omitempty"`
	SentSeq int64  `json:"sq,omitempty"`
	SentM   string `json:"sm,omitempty"`
	Cfg     string `json:"c,omitempty"`
	DM      bool   `json:"dm,omitempty"`
	// Unread says the unread counts changed since the room was sent.
	Unread bool `json:"u,omitempty"`
}

func connPK(u id.UserID, d id.DeviceID, conn string) string {
	return "sliding#" + string(u) + "\x1f" + string(d) + "\x1f" + conn
}

func posSK(p int64) string { return fmt.Sprintf("pos#%016d", p) }

// parsePos reads a position token.
func parsePos(s string) (int64, bool) {
	if s == "" || len(s) > 18 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// load reads the state of a position (M_UNKNOWN_POS when there is none).
func (s *Service) load(ctx context.Context, pk string, pos int64) (*connState, error) {
	it, err := s.T.Get(ctx, table.Key{PK: pk, SK: posSK(pos)})
	if errors.Is(err, table.ErrNotFound) {
		return nil, errUnknownPos()
	}
	if err != nil {
		return nil, err
	}
	data := it.Data
	if len(data) > 0 && data[0] == 0x1f { // gzip
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, errUnknownPos()
		}
		if data, err = io.ReadAll(io.LimitReader(zr, 64<<20)); err != nil {
			return nil, errUnknownPos()
		}
	}
	var st connState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, errUnknownPos()
	}
	if st.Rooms == nil {
		st.Rooms = map[id.RoomID]*roomState{}
	}
	return &st, nil
}

// encode is the stored form of st: JSON, gzipped when large.
func encode(st *connState) ([]byte, error) {
	data, err := json.Marshal(st)
	if err != nil || len(data) <= 32*1024 {
		return data, err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return buf.Bytes(), nil
}

// save stores st under a new position and returns it.
func (s *Service) save(ctx context.Context, pk string, st *connState) (int64, error) {
	data, err := encode(st)
	if err != nil {
		return 0, err
	}
	if len(data) > maxStateBytes {
		// Forget rooms never sent: they are looked at again when needed.
		for r, rs := range st.Rooms {
			if !rs.Sent {
				delete(st.Rooms, r)
			}
		}
		if data, err = encode(st); err != nil {
			return 0, err
		}
		if len(data) > maxStateBytes {
			return 0, fmt.Errorf("sliding sync: connection state of %d bytes is too large", len(data))
		}
	}
	pos, err := s.T.Add(ctx, table.Key{PK: pk, SK: "counter"}, 1)
	if err != nil {
		return 0, err
	}
	it := table.Item{PK: pk, SK: posSK(pos), Data: data, TTL: s.now().Add(s.connTTL()).Unix()}
	if err := s.T.Put(ctx, it, table.IfNotExists()); err != nil {
		return 0, err
	}
	return pos, nil
}

// forget deletes a position the client has moved past (best effort).
func (s *Service) forget(ctx context.Context, pk string, pos int64) {
	if pos <= 0 {
		return
	}
	if err := s.T.Delete(ctx, table.Key{PK: pk, SK: posSK(pos)}, table.Cond{}); err != nil {
		s.log().Warn("sliding sync: deleting an old position", "err", err)
	}
}

func (s *Service) connTTL() time.Duration {
	if s.ConnTTL > 0 {
		return s.ConnTTL
	}
	return DefaultConnTTL
}
