package rooms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	jsonv2 "encoding/json/v2"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Room versions 1 and 2 use the original event format: the event id is
// chosen by the sending server and carried in the event ("event_id"), and
// prev_events/auth_events are [event id, {"sha256": reference hash}]
// pairs. mautrix-go models that format as pdu.RoomV1PDU, while the rest of
// the engine (and mautrix's eventauth) works on pdu.PDU. So a v1/v2 event is
// converted to a pdu.PDU with plain id lists, its event id in
// InternalMeta.EventID and the original kept in InternalMeta.Extra, and
// converted back (EncodePDU) when it is stored or sent.

// v1Original is the InternalMeta.Extra key holding the *pdu.RoomV1PDU a
// pdu.PDU was converted from.
const v1Original = "cirrus.v1"

func init() {
	// eventauth asks the create event for its id (the first join of the
	// creator); v1/v2 ids cannot be computed, so every GetEventID must use
	// the id we set. All our PDUs with InternalMeta.EventID set carry their
	// true id (parsed events compute it first), so this is safe for v3+.
	pdu.UseInternalMetaForGetEventID = true
}

// LegacyEventFormat reports whether a room version uses server-chosen event
// ids and reference pairs (versions 1 and 2).
func LegacyEventFormat(rv id.RoomVersion) bool {
	return rv.IsKnown() && rv.EventIDFormat() == id.EventIDFormatCustom
}

// ParsePDU parses a stored or received PDU of any room version. A v1/v2
// event comes back as a pdu.PDU with its id in InternalMeta.EventID.
func ParsePDU(raw []byte) (*pdu.PDU, error) {
	if v := parseV1(raw); v != nil {
		return fromV1(v), nil
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("PDU: %w", err)
	}
	return &p, nil
}

// parseV1 returns the event as a v1/v2 PDU if it is in that format: a
// top-level event_id and reference pairs (a v3+ event fails to decode as
// one, its references being plain strings).
func parseV1(raw []byte) *pdu.RoomV1PDU {
	if !bytes.Contains(raw, []byte(`"event_id"`)) {
		return nil
	}
	var v pdu.RoomV1PDU
	if err := jsonv2.Unmarshal(raw, &v); err != nil || v.EventID == "" {
		return nil
	}
	return &v
}

func fromV1(v *pdu.RoomV1PDU) *pdu.PDU {
	ids := func(refs []pdu.V1EventReference) []id.EventID {
		out := make([]id.EventID, len(refs))
		for i, r := range refs {
			out[i] = r.ID
		}
		return out
	}
	p := &pdu.PDU{
		AuthEvents: ids(v.AuthEvents), Content: v.Content, Depth: v.Depth, Hashes: v.Hashes,
		OriginServerTS: v.OriginServerTS, PrevEvents: ids(v.PrevEvents), Redacts: v.Redacts,
		RoomID: v.RoomID, Sender: v.Sender, Signatures: v.Signatures, StateKey: v.StateKey,
		Sticky: v.Sticky, Type: v.Type, Unsigned: v.Unsigned, Unknown: v.Unknown,
		DeprecatedPrevState: v.DeprecatedPrevState, DeprecatedOrigin: v.DeprecatedOrigin,
		DeprecatedMembership: v.DeprecatedMembership,
	}
	p.InternalMeta.EventID = v.EventID
	p.InternalMeta.Extra = map[string]any{v1Original: v}
	return p
}

// AsV1 returns the v1/v2 form of a PDU converted by ParsePDU, with the
// PDU's current fields (a redaction or a new signature shows), or nil for
// a v3+ PDU.
func AsV1(p *pdu.PDU) *pdu.RoomV1PDU {
	orig, _ := p.InternalMeta.Extra[v1Original].(*pdu.RoomV1PDU)
	if orig == nil {
		return nil
	}
	hashes := map[id.EventID]pdu.Hashes{}
	for _, r := range append(slices.Clone(orig.AuthEvents), orig.PrevEvents...) {
		hashes[r.ID] = r.Hashes
	}
	refs := func(ids []id.EventID) []pdu.V1EventReference {
		out := make([]pdu.V1EventReference, len(ids))
		for i, e := range ids {
			out[i] = pdu.V1EventReference{ID: e, Hashes: hashes[e]}
		}
		return out
	}
	return &pdu.RoomV1PDU{
		AuthEvents: refs(p.AuthEvents), Content: p.Content, Depth: p.Depth, EventID: p.InternalMeta.EventID,
		Hashes: p.Hashes, OriginServerTS: p.OriginServerTS, PrevEvents: refs(p.PrevEvents), Redacts: p.Redacts,
		RoomID: p.RoomID, Sender: p.Sender, Signatures: p.Signatures, StateKey: p.StateKey, Sticky: p.Sticky,
		Type: p.Type, Unsigned: p.Unsigned, Unknown: p.Unknown, DeprecatedPrevState: p.DeprecatedPrevState,
		DeprecatedOrigin: p.DeprecatedOrigin, DeprecatedMembership: p.DeprecatedMembership,
	}
}

// EncodePDU is the canonical JSON of a PDU in its room version's format.
func EncodePDU(p *pdu.PDU) ([]byte, error) {
	if v := AsV1(p); v != nil {
		return canonicaljson.Marshal(v)
	}
	return canonicaljson.Marshal(p)
}

// VerifySignature checks the signature of a server on a PDU of any room
// version (v1/v2 events are signed in their own format).
func VerifySignature(rv id.RoomVersion, p *pdu.PDU, server string, getKey pdu.GetKeyFunc) error {
	if v := AsV1(p); v != nil {
		return v.VerifySignature(rv, server, getKey)
	}
	return p.VerifySignature(rv, server, getKey)
}

// VerifyContentHash checks a PDU's content hash in its own format.
func VerifyContentHash(p *pdu.PDU) bool {
	if v := AsV1(p); v != nil {
		return v.VerifyContentHash()
	}
	return p.VerifyContentHash()
}

// NewLegacyEventID returns a fresh event id chosen by a server, as room
// versions 1 and 2 want.
func NewLegacyEventID(server string) id.EventID {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return id.EventID("$" + base64.RawURLEncoding.EncodeToString(b[:]) + ":" + server)
}

// SignPDU adds the content hash (when missing) and a server's signature to
// a PDU in its room version's format and returns its canonical JSON. A
// v1/v2 PDU must carry its id and references (ParsePDU, or sealEvent's or
// BuildTemplate's legacy form).
func SignPDU(rv id.RoomVersion, p *pdu.PDU, server string, key *signing.Key) ([]byte, error) {
	if !LegacyEventFormat(rv) {
		if err := p.Sign(rv, server, key.ID, key.Priv); err != nil {
			return nil, err
		}
		return canonicaljson.Marshal(p)
	}
	v := AsV1(p)
	if v == nil {
		return nil, fmt.Errorf("a room v%s event needs its event id and reference pairs", rv)
	}
	if err := v.Sign(rv, server, key.ID, key.Priv); err != nil {
		return nil, err
	}
	p.Hashes, p.Signatures = v.Hashes, v.Signatures
	return canonicaljson.Marshal(v)
}

// sealEvent signs a local event and returns its stored form and id. v3+
// ids are the reference hash; for v1/v2 the server chooses a random id and
// each reference carries the referenced event's reference hash.
func (s *Service) sealEvent(ctx context.Context, rv id.RoomVersion, p *pdu.PDU) ([]byte, id.EventID, error) {
	if LegacyEventFormat(rv) {
		if err := s.legacyForm(ctx, rv, p, NewLegacyEventID(s.ServerName)); err != nil {
			return nil, "", err
		}
	}
	raw, err := SignPDU(rv, p, s.ServerName, s.Key)
	if err != nil {
		return nil, "", httpapi.BadJSON("event content is not valid canonical JSON: %v", err)
	}
	if LegacyEventFormat(rv) {
		return raw, p.InternalMeta.EventID, nil
	}
	eid, err := p.GetEventID(rv)
	return raw, eid, err
}

// legacyForm gives a PDU the v1/v2 form: the event id eid, and references
// carrying the reference hashes of the events they name (read from the
// store).
func (s *Service) legacyForm(ctx context.Context, rv id.RoomVersion, p *pdu.PDU, eid id.EventID) error {
	refs, err := s.referenceHashes(ctx, rv, append(slices.Clone(p.AuthEvents), p.PrevEvents...))
	if err != nil {
		return err
	}
	orig := &pdu.RoomV1PDU{AuthEvents: []pdu.V1EventReference{}, PrevEvents: []pdu.V1EventReference{}}
	for _, e := range p.AuthEvents {
		orig.AuthEvents = append(orig.AuthEvents, pdu.V1EventReference{ID: e, Hashes: refs[e]})
	}
	for _, e := range p.PrevEvents {
		orig.PrevEvents = append(orig.PrevEvents, pdu.V1EventReference{ID: e, Hashes: refs[e]})
	}
	p.InternalMeta.EventID = eid
	p.InternalMeta.Extra = map[string]any{v1Original: orig}
	return nil
}

// referenceHashes reads the given events and returns their reference
// hashes (events not found get none).
func (s *Service) referenceHashes(ctx context.Context, rv id.RoomVersion, ids []id.EventID) (map[id.EventID]pdu.Hashes, error) {
	out := map[id.EventID]pdu.Hashes{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]table.Key, 0, len(ids))
	seen := map[id.EventID]bool{}
	for _, e := range ids {
		if !seen[e] {
			seen[e] = true
			keys = append(keys, eventKey(e))
		}
	}
	items, err := s.T.GetMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		ev, err := decodeEvent(it)
		if err != nil {
			return nil, err
		}
		v := parseV1(ev.PDU)
		if v == nil {
			continue
		}
		h, err := v.GetReferenceHash(rv)
		if err != nil {
			return nil, err
		}
		out[ev.EventID] = pdu.Hashes{SHA256: h[:]}
	}
	return out, nil
}
