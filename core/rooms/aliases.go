package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Alias items: alias#<#alias:server>/alias → room and creator; and, in the
// room's partition, alias#<#alias:server> so a room's aliases list in one query.
func aliasKey(a id.RoomAlias) table.Key { return table.Key{PK: "alias#" + string(a), SK: "alias"} }

type aliasRecord struct {
	RoomID  id.RoomID `json:"room_id"`
	Creator id.UserID `json:"creator"`
}

// ValidAlias checks an alias's grammar and that it belongs to this server.
func (s *Service) ValidAlias(a id.RoomAlias) error {
	local, server := splitAlias(a)
	if local == "" || server == "" || len(a) > 255 {
		return httpapi.InvalidParam("invalid room alias %q", a)
	}
	if server != s.ServerName {
		return httpapi.InvalidParam("alias %q does not belong to this server", a)
	}
	return nil
}

func splitAlias(a id.RoomAlias) (local, server string) {
	str := string(a)
	if len(str) < 2 || str[0] != '#' {
		return "", ""
	}
	for i := 1; i < len(str); i++ {
		if str[i] == ':' {
			return str[1:i], str[i+1:]
		}
	}
	return "", ""
}

// CreateAlias maps a local alias to a room (M_ROOM_IN_USE if taken).
func (s *Service) CreateAlias(ctx context.Context, a id.RoomAlias, r id.RoomID, creator id.UserID) error {
	if err := s.ValidAlias(a); err != nil {
		return err
	}
	d, _ := json.Marshal(aliasRecord{RoomID: r, Creator: creator})
	k := aliasKey(a)
	err := s.T.Transact(ctx, []table.Op{
		// A fresh version per mapping: deleting or moving it later is
		// conditional on that version, so a mapping recreated meanwhile is safe.
		table.Put(table.Item{PK: k.PK, SK: k.SK, Data: d, Version: s.Now().UnixNano()}, table.IfNotExists()),
		table.Put(table.Item{PK: roomPK(r), SK: "alias#" + string(a), Data: []byte(a)}, table.Cond{}),
	})
	var txe *table.TxError
	if errors.As(err, &txe) {
		return &httpapi.Error{Status: 409, Code: "M_UNKNOWN", Message: "room alias already exists"}
	}
	return err
}

// ResolveAlias returns the room of a local alias (M_NOT_FOUND if unknown).
func (s *Service) ResolveAlias(ctx context.Context, a id.RoomAlias) (id.RoomID, error) {
	it, err := s.T.Get(ctx, aliasKey(a))
	if errors.Is(err, table.ErrNotFound) && s.AliasMissing != nil && s.AliasMissing(ctx, a) {
		it, err = s.T.Get(ctx, aliasKey(a))
	}
	if errors.Is(err, table.ErrNotFound) {
		return "", httpapi.NotFound("room alias %s not found", a)
	}
	if err != nil {
		return "", err
	}
	var rec aliasRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return "", err
	}
	return rec.RoomID, nil
}

// AliasCreator returns who created an alias.
func (s *Service) AliasCreator(ctx context.Context, a id.RoomAlias) (id.RoomID, id.UserID, error) {
	it, err := s.T.Get(ctx, aliasKey(a))
	if errors.Is(err, table.ErrNotFound) {
		return "", "", httpapi.NotFound("room alias %s not found", a)
	}
	if err != nil {
		return "", "", err
	}
	var rec aliasRecord
	err = json.Unmarshal(it.Data, &rec)
	return rec.RoomID, rec.Creator, err
}

// DeleteAlias removes an alias.
func (s *Service) DeleteAlias(ctx context.Context, a id.RoomAlias) error {
	r, _, err := s.AliasCreator(ctx, a)
	if err != nil {
		return err
	}
	return s.T.Transact(ctx, []table.Op{
		table.Delete(aliasKey(a), table.IfExists()),
		table.Delete(table.Key{PK: roomPK(r), SK: "alias#" + string(a)}, table.Cond{}),
	})
}

// RoomAliases lists a room's local aliases.
func (s *Service) RoomAliases(ctx context.Context, r id.RoomID) ([]id.RoomAlias, error) {
	q := table.Query{PK: roomPK(r), Prefix: "alias#"}
	out := []id.RoomAlias{}
	for {
		page, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			out = append(out, id.RoomAlias(it.Data))
		}
		if page.Next == "" {
			return out, nil
		}
		q.Cursor = page.Next
	}
}

// directoryKey is the room's entry in the public room directory; public
// rooms are in the secondary index under "publicrooms" for listing.
func directoryKey(r id.RoomID) table.Key { return table.Key{PK: roomPK(r), SK: "directory"} }

// PublicRoomsIndex is the index partition that lists published rooms.
const PublicRoomsIndex = "publicrooms"

// SetDirectoryVisibility publishes a room in (or removes it from) the room directory.
func (s *Service) SetDirectoryVisibility(ctx context.Context, r id.RoomID, public bool) error {
	k := directoryKey(r)
	if !public {
		return s.T.Delete(ctx, k, table.Cond{})
	}
	return s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, GPK: PublicRoomsIndex, GSK: string(r), Data: []byte("public")}, table.Cond{})
}

// DirectoryVisibility reports whether a room is published.
func (s *Service) DirectoryVisibility(ctx context.Context, r id.RoomID) (bool, error) {
	_, err := s.T.Get(ctx, directoryKey(r))
	if errors.Is(err, table.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
