package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// AliasInfo is a local alias mapping as stored, with the item's version so
// that a later change can be made conditional on nothing having moved since.
type AliasInfo struct {
	Alias   id.RoomAlias
	RoomID  id.RoomID
	Creator id.UserID
	version int64
}

// LookupAlias reads an alias mapping (M_NOT_FOUND if there is none).
func (s *Service) LookupAlias(ctx context.Context, a id.RoomAlias) (*AliasInfo, error) {
	it, err := s.T.Get(ctx, aliasKey(a))
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.NotFound("room alias %s not found", a)
	}
	if err != nil {
		return nil, err
	}
	var rec aliasRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, err
	}
	return &AliasInfo{Alias: a, RoomID: rec.RoomID, Creator: rec.Creator, version: it.Version}, nil
}

// RemoveAlias deletes the mapping read as ai, unless it changed in between
// (then M_NOT_FOUND: the alias the caller was allowed to delete is gone).
func (s *Service) RemoveAlias(ctx context.Context, ai *AliasInfo) error {
	err := s.T.Transact(ctx, []table.Op{
		table.Delete(aliasKey(ai.Alias), table.IfVersion(ai.version)),
		table.Delete(table.Key{PK: roomPK(ai.RoomID), SK: "alias#" + string(ai.Alias)}, table.Cond{}),
	})
	if errors.Is(err, table.ErrConditionFailed) {
		return httpapi.NotFound("room alias %s not found", ai.Alias)
	}
	return err
}

// repointAlias moves a local alias from one room to another, keeping its
// creator, if it still points where it did when read.
func (s *Service) repointAlias(ctx context.Context, ai *AliasInfo, to id.RoomID) error {
	d, _ := json.Marshal(aliasRecord{RoomID: to, Creator: ai.Creator})
	k := aliasKey(ai.Alias)
	return s.T.Transact(ctx, []table.Op{
		table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d, Version: ai.version + 1}, table.IfVersion(ai.version)),
		table.Delete(table.Key{PK: roomPK(ai.RoomID), SK: "alias#" + string(ai.Alias)}, table.Cond{}),
		table.Put(table.Item{PK: roomPK(to), SK: "alias#" + string(ai.Alias), Data: []byte(ai.Alias)}, table.Cond{}),
	})
}

// RoomServers lists the servers of a room's joined members, this server
// first (the "servers" of an alias lookup).
func (s *Service) RoomServers(ctx context.Context, r id.RoomID) ([]string, error) {
	out := []string{s.ServerName}
	seen := map[string]bool{s.ServerName: true}
	q := table.Query{PK: roomPK(r), Prefix: stateSK("m.room.member", "")}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			var se stateEntry
			if json.Unmarshal(it.Data, &se) != nil || se.Membership != "join" {
				continue
			}
			_, skey := splitStateSK(it.SK)
			if _, server, err := id.UserID(skey).Parse(); err == nil && !seen[server] {
				seen[server] = true
				out = append(out, server)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// JoinedCount counts a room's joined members from the current-state items
// alone (their membership is kept beside the event id).
func (s *Service) JoinedCount(ctx context.Context, r id.RoomID) (int, error) {
	n := 0
	q := table.Query{PK: roomPK(r), Prefix: stateSK("m.room.member", "")}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return 0, err
		}
		for _, it := range page.Items {
			var se stateEntry
			if json.Unmarshal(it.Data, &se) == nil && se.Membership == "join" {
				n++
			}
		}
		if page.Next == "" {
			return n, nil
		}
		q.Cursor = page.Next
	}
}

// PublicRoom is one entry of the published room directory.
type PublicRoom struct {
	RoomID           id.RoomID    `json:"room_id"`
	Name             string       `json:"name,omitempty"`
	Topic            string       `json:"topic,omitempty"`
	CanonicalAlias   id.RoomAlias `json:"canonical_alias,omitempty"`
	NumJoinedMembers int          `json:"num_joined_members"`
	WorldReadable    bool         `json:"world_readable"`
	GuestCanJoin     bool         `json:"guest_can_join"`
	JoinRule         string       `json:"join_rule,omitempty"`
	AvatarURL        string       `json:"avatar_url,omitempty"`
	RoomType         string       `json:"room_type,omitempty"`
}

// summaryKeys are the state events a directory entry is made of.
var summaryKeys = pdu.AuthEventSelection{
	{Type: "m.room.create"}, {Type: "m.room.name"}, {Type: "m.room.topic"},
	{Type: "m.room.canonical_alias"}, {Type: "m.room.join_rules"},
	{Type: "m.room.history_visibility"}, {Type: "m.room.guest_access"},
	{Type: "m.room.avatar"},
}

// RoomSummary describes a room for the directory, from its current state.
func (s *Service) RoomSummary(ctx context.Context, r id.RoomID) (*PublicRoom, error) {
	st, err := s.currentStateFor(ctx, r, summaryKeys)
	if err != nil {
		return nil, err
	}
	if st[pdu.StateKey{Type: "m.room.create"}] == nil {
		return nil, ErrNoRoom
	}
	var c summaryContent
	get := func(typ string) bool {
		c = summaryContent{}
		e := st[pdu.StateKey{Type: typ}]
		return e != nil && json.Unmarshal(pduContent(e.PDU), &c) == nil
	}
	pr := &PublicRoom{RoomID: r}
	if get("m.room.create") {
		pr.RoomType = c.Type
	}
	if get("m.room.name") {
		pr.Name = c.Name
	}
	if get("m.room.topic") {
		pr.Topic = plainTopic(c.Topic, c.MTopic)
	}
	if get("m.room.canonical_alias") {
		pr.CanonicalAlias = c.Alias
	}
	// A room without join rules is not joinable without an invite; the
	// directory says so rather than leaving the field out (which means public).
	pr.JoinRule = "invite"
	if get("m.room.join_rules") && c.JoinRule != "" {
		pr.JoinRule = c.JoinRule
	}
	if get("m.room.history_visibility") {
		pr.WorldReadable = c.History == "world_readable"
	}
	if get("m.room.guest_access") {
		pr.GuestCanJoin = c.GuestAccess == "can_join"
	}
	if get("m.room.avatar") {
		pr.AvatarURL = c.URL
	}
	if pr.NumJoinedMembers, err = s.JoinedCount(ctx, r); err != nil {
		return nil, err
	}
	return pr, nil
}

// summaryContent holds the fields of every state event a summary reads.
type summaryContent struct {
	Type        string       `json:"type"`
	Name        string       `json:"name"`
	Topic       string       `json:"topic"`
	MTopic      *topicBlocks `json:"m.topic"`
	Alias       id.RoomAlias `json:"alias"`
	JoinRule    string       `json:"join_rule"`
	History     string       `json:"history_visibility"`
	GuestAccess string       `json:"guest_access"`
	URL         string       `json:"url"`
}

// topicBlocks is the m.topic field of m.room.topic (v1.15): text in several
// mimetypes.
type topicBlocks struct {
	Text []struct {
		Body     string `json:"body"`
		MimeType string `json:"mimetype"`
	} `json:"m.text"`
}

// plainTopic is the text/plain form of a topic (a block without a mimetype
// is plain text), or the legacy topic field.
func plainTopic(legacy string, t *topicBlocks) string {
	if t != nil {
		for _, b := range t.Text {
			if b.MimeType == "" || b.MimeType == "text/plain" {
				return b.Body
			}
		}
	}
	return legacy
}

// PublishedRooms lists the rooms in the directory, sorted by room id. The
// index is eventually consistent on DynamoDB, so every room it names is
// checked against its (strongly consistent) directory item: a room that was
// just unpublished never shows; one just published may take a moment.
func (s *Service) PublishedRooms(ctx context.Context) ([]id.RoomID, error) {
	var ids []id.RoomID
	q := table.Query{Index: table.IndexName, PK: PublicRoomsIndex}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			ids = append(ids, id.RoomID(it.GSK))
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	keys := make([]table.Key, len(ids))
	for i, r := range ids {
		keys[i] = directoryKey(r)
	}
	out := make([]id.RoomID, 0, len(ids))
	for start := 0; start < len(keys); start += table.MaxBatchGet {
		items, err := s.T.GetMany(ctx, keys[start:min(start+table.MaxBatchGet, len(keys))])
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out = append(out, id.RoomID(strings.TrimPrefix(it.PK, "room#")))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Application service network directories: a room published by an
// application service under one of its networks (third-party protocol
// instances) is the item room#<!id> / netdir#<network>, listed in the
// index under "publicnets" with gsk = network + "\x1f" + room id.
const publicNetsIndex = "publicnets"

func networkDirKey(r id.RoomID, network string) table.Key {
	return table.Key{PK: roomPK(r), SK: "netdir#" + network}
}

// SetNetworkVisibility publishes a room in (or removes it from) a network's
// directory.
func (s *Service) SetNetworkVisibility(ctx context.Context, network string, r id.RoomID, public bool) error {
	k := networkDirKey(r, network)
	if !public {
		return s.T.Delete(ctx, k, table.Cond{})
	}
	return s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, GPK: publicNetsIndex, GSK: network + "\x1f" + string(r),
		Data: []byte(network)}, table.Cond{})
}

// NetworkRooms lists the rooms published in a network's directory, or in
// every network's when network is "", sorted by room id and each once. Like
// PublishedRooms it confirms the index's answer with the items themselves.
func (s *Service) NetworkRooms(ctx context.Context, network string) ([]id.RoomID, error) {
	q := table.Query{Index: table.IndexName, PK: publicNetsIndex}
	if network != "" {
		q.Prefix = network + "\x1f"
	}
	var keys []table.Key
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			if net, room, ok := strings.Cut(it.GSK, "\x1f"); ok {
				keys = append(keys, networkDirKey(id.RoomID(room), net))
			}
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	seen := map[id.RoomID]bool{}
	var out []id.RoomID
	for start := 0; start < len(keys); start += table.MaxBatchGet {
		items, err := s.T.GetMany(ctx, keys[start:min(start+table.MaxBatchGet, len(keys))])
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			r := id.RoomID(strings.TrimPrefix(it.PK, "room#"))
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// PublicRoomsQuery is a /publicRooms request: the GET parameters or the
// POST body, the same shape in the client-server and server-server APIs.
type PublicRoomsQuery struct {
	Limit              *int64 `json:"limit,omitempty"`
	Since              string `json:"since,omitempty"`
	IncludeAllNetworks bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstance string `json:"third_party_instance_id,omitempty"`
	Filter             *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter,omitempty"`
}

// PublicRoomsQueryOf reads a GET /publicRooms request's parameters.
func PublicRoomsQueryOf(r *httpapi.Request) (PublicRoomsQuery, error) {
	qv := r.URL.Query()
	var q PublicRoomsQuery
	if qv.Has("limit") {
		n, err := r.QueryInt("limit", 0, 0, 1<<31)
		if err != nil {
			return q, err
		}
		q.Limit = &n
	}
	q.Since = qv.Get("since")
	switch v := qv.Get("include_all_networks"); v {
	case "", "false":
	case "true":
		q.IncludeAllNetworks = true
	default:
		return q, httpapi.InvalidParam("include_all_networks must be true or false")
	}
	q.ThirdPartyInstance = qv.Get("third_party_instance_id")
	return q, nil
}
