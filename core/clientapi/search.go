package clientapi

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/filter"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
	"github.com/cirrus-matrix/cirrus/core/search"
)

// SearchAPI serves POST /search (the room_events category).
type SearchAPI struct {
	Searcher *search.Searcher
	// Timeline reads the events around a result (event_context).
	Timeline *RoomsAPI
}

// Limits of one search request.
const (
	defaultSearchLimit = 10
	maxSearchLimit     = 100
	defaultContext     = 5
	maxContext         = 100
	maxSearchTermBytes = 1024
)

type searchBody struct {
	Categories *map[string]json.RawMessage `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         *[]string       `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      *string         `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// Search serves POST /search.
func (a *SearchAPI) Search(r *httpapi.Request) (any, error) {
	var body searchBody
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if body.Categories == nil {
		return nil, httpapi.MissingParam("search_categories is required")
	}
	out := map[string]any{}
	for name, raw := range *body.Categories {
		if name != "room_events" {
			return nil, httpapi.InvalidParam("unknown search category %q", name)
		}
		var c roomEventsCriteria
		if err := httpapi.DecodeJSON(raw, &c); err != nil {
			return nil, err
		}
		res, err := a.roomEvents(r, &c)
		if err != nil {
			return nil, err
		}
		out[name] = res
	}
	return map[string]any{"search_categories": out}, nil
}

// roomEvents validates the criteria and runs the search.
func (a *SearchAPI) roomEvents(r *httpapi.Request, c *roomEventsCriteria) (any, error) {
	if c.SearchTerm == nil {
		return nil, httpapi.MissingParam("search_term is required")
	}
	if len(*c.SearchTerm) > maxSearchTermBytes {
		return nil, httpapi.InvalidParam("search_term is over %d bytes", maxSearchTermBytes)
	}
	req := search.Request{User: r.Caller.UserID, Terms: search.QueryTerms(*c.SearchTerm), Order: search.OrderRank, Limit: defaultSearchLimit}
	if c.Keys != nil {
		req.Keys = map[string]bool{}
		for _, k := range *c.Keys {
			if search.EventType[k] == "" {
				return nil, httpapi.InvalidParam("keys: %q is not content.body, content.name or content.topic", k)
			}
			req.Keys[k] = true
		}
	}
	if c.OrderBy != nil {
		switch *c.OrderBy {
		case search.OrderRank, search.OrderRecent:
			req.Order = *c.OrderBy
		default:
			return nil, httpapi.InvalidParam("order_by must be rank or recent")
		}
	}
	if len(c.Filter) > 0 && string(c.Filter) != "null" {
		f, err := filter.ParseRoomEventFilter(c.Filter)
		if err != nil {
			var fe *filter.Error
			if errors.As(err, &fe) && fe.BadJSON {
				return nil, httpapi.BadJSON("filter: %s", fe.Msg)
			}
			return nil, httpapi.InvalidParam("filter: %v", err)
		}
		req.Filter = f
		if f.Limit > 0 {
			req.Limit = min(f.Limit, maxSearchLimit)
		}
	}
	before, after, withProfile := 0, 0, false
	if ec := c.EventContext; ec != nil {
		before, after, withProfile = defaultContext, defaultContext, ec.IncludeProfile
		if ec.BeforeLimit != nil {
			before = *ec.BeforeLimit
		}
		if ec.AfterLimit != nil {
			after = *ec.AfterLimit
		}
		if before < 0 || after < 0 {
			return nil, httpapi.InvalidParam("event_context limits must not be negative")
		}
		before, after = min(before, maxContext), min(after, maxContext)
	}
	groupBy := map[string]bool{}
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return nil, httpapi.InvalidParam("groupings: unknown group key %q", g.Key)
			}
			groupBy[g.Key] = true
		}
	}
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		t, err := search.ParseToken(nb)
		if err != nil {
			return nil, httpapi.InvalidParam("invalid next_batch")
		}
		req.From = t
	}

	ctx, u := r.Ctx(), r.Caller.UserID
	ignored, err := a.Timeline.ignoredBy(ctx, u)
	if err != nil {
		return nil, err
	}
	events := map[id.EventID]*rooms.Event{}
	req.Accept = func(ctx context.Context, hits []search.Hit) ([]bool, error) {
		ids := make([]id.EventID, len(hits))
		for i, h := range hits {
			ids[i] = h.EventID
		}
		evs, err := a.Timeline.Rooms.EventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			events[ev.EventID] = ev
		}
		ok := make([]bool, len(hits))
		for i, h := range hits {
			ev := events[h.EventID]
			ok[i] = ev != nil && ev.RedactedBy == "" && ev.RoomID == h.RoomID && !ignored[ev.Sender]
		}
		return ok, nil
	}
	res, err := a.Searcher.Search(ctx, req)
	if errors.Is(err, search.ErrBadToken) {
		return nil, httpapi.InvalidParam("next_batch does not belong to this search")
	}
	if err != nil {
		return nil, err
	}

	v := viewer(r)
	page := make([]*rooms.Event, len(res.Hits))
	for i, h := range res.Hits {
		page[i] = events[h.EventID]
	}
	formatted, err := a.Timeline.Rooms.Format(ctx, page, v)
	if err != nil {
		return nil, err
	}
	results := make([]map[string]any, len(page))
	termSet := map[string]bool{}
	for _, t := range req.Terms {
		termSet[t] = true
	}
	var highlights []string
	seenWord := map[string]bool{}
	addWords := func(ws []string) {
		for _, w := range ws {
			if !seenWord[w] {
				seenWord[w] = true
				highlights = append(highlights, w)
			}
		}
	}
	addWords(search.Highlights(*c.SearchTerm, termSet))
	for i, ev := range page {
		results[i] = map[string]any{"rank": res.Hits[i].Rank(), "result": formatted[i]}
		if d, ok := search.DocOf(ev); ok {
			addWords(search.Highlights(d.Text, termSet))
		}
		if c.EventContext != nil {
			ctxObj, err := a.eventContext(ctx, r, ev, before, after, withProfile)
			if err != nil {
				return nil, err
			}
			results[i]["context"] = ctxObj
		}
	}
	if highlights == nil {
		highlights = []string{}
	}
	resp := map[string]any{"results": results, "count": res.Count, "highlights": highlights}
	if res.Next != nil {
		resp["next_batch"] = res.Next.String()
	}
	if len(groupBy) > 0 {
		groups := map[string]any{}
		for key, kind := range map[string]byte{"room_id": search.GroupRoom, "sender": search.GroupSender} {
			if !groupBy[key] {
				continue
			}
			g := map[string]map[string]any{}
			for _, h := range res.Hits {
				val := string(h.RoomID)
				if kind == search.GroupSender {
					val = string(h.Sender)
				}
				e := g[val]
				if e == nil {
					e = map[string]any{"order": len(g) + 1, "results": []id.EventID{}}
					if t := res.GroupNext[kind][val]; t != nil {
						e["next_batch"] = t.String()
					}
					g[val] = e
				}
				e["results"] = append(e["results"].([]id.EventID), h.EventID)
			}
			groups[key] = g
		}
		resp["groups"] = groups
	}
	if c.IncludeState {
		state := map[id.RoomID]any{}
		for _, h := range res.Hits {
			if _, done := state[h.RoomID]; done {
				continue
			}
			// Current state only of rooms the user is in now: a room
			// they left may have changed since, out of their sight.
			if m, err := a.Timeline.Rooms.Membership(ctx, h.RoomID, u); err != nil {
				return nil, err
			} else if m != "join" {
				continue
			}
			evs, err := a.Timeline.Rooms.CurrentState(ctx, h.RoomID, "")
			if err != nil {
				return nil, err
			}
			if state[h.RoomID], err = a.Timeline.Rooms.Format(ctx, evs, v); err != nil {
				return nil, err
			}
		}
		resp["state"] = state
	}
	return resp, nil
}

// eventContext is a result's context: the visible events before and after
// it, /messages tokens on both sides, and, if asked, the senders' profiles
// as they were at the result.
func (a *SearchAPI) eventContext(ctx context.Context, r *httpapi.Request, ev *rooms.Event, nBefore, nAfter int, withProfile bool) (map[string]any, error) {
	u := r.Caller.UserID
	before, first, err := a.Timeline.scanTimeline(ctx, u, ev.RoomID, rooms.Backward, ev.Seq, nBefore, nil)
	if err != nil {
		return nil, err
	}
	after, last, err := a.Timeline.scanTimeline(ctx, u, ev.RoomID, rooms.Forward, ev.Seq, nAfter, nil)
	if err != nil {
		return nil, err
	}
	v := viewer(r)
	out := map[string]any{"start": formatToken(first - 1), "end": formatToken(last)}
	for name, evs := range map[string][]*rooms.Event{"events_before": before, "events_after": after} {
		f, err := a.Timeline.Rooms.Format(ctx, evs, v)
		if err != nil {
			return nil, err
		}
		if f == nil {
			f = []rooms.ClientEvent{}
		}
		out[name] = f
	}
	if !withProfile {
		return out, nil
	}
	senders := map[id.UserID]bool{ev.Sender: true}
	for _, e := range append(before, after...) {
		senders[e.Sender] = true
	}
	st, err := a.Timeline.Rooms.StateIDsAt(ctx, ev, false)
	if err != nil {
		return nil, err
	}
	var memberIDs []id.EventID
	for k, e := range st {
		if k.Type == "m.room.member" && senders[id.UserID(k.StateKey)] {
			memberIDs = append(memberIDs, e)
		}
	}
	members, err := a.Timeline.Rooms.EventsByID(ctx, memberIDs)
	if err != nil {
		return nil, err
	}
	profiles := map[id.UserID]map[string]any{}
	for _, m := range members {
		var c struct {
			Displayname *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(m.Content, &c)
		p := map[string]any{}
		if c.Displayname != nil {
			p["displayname"] = *c.Displayname
		}
		if c.AvatarURL != nil && *c.AvatarURL != "" {
			p["avatar_url"] = *c.AvatarURL
		}
		if m.StateKey != nil {
			profiles[id.UserID(*m.StateKey)] = p
		}
	}
	out["profile_info"] = profiles
	return out, nil
}
