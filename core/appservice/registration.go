// Package appservice is the application service API: registrations read
// from the standard YAML files, their namespaces, identity assertion with
// an as_token, and delivery of events to application services in
// transactions (an outbox in the table drained through a FIFO queue, one
// message group per application service), plus the homeserver's queries
// to them (users, aliases, third-party networks, ping).
package appservice

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

// Namespace is one entry of a registration's users, aliases or rooms list.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive" json:"exclusive"`
	Regex     string `yaml:"regex" json:"regex"`
	re        *regexp.Regexp
}

// Namespaces are the three namespace lists of a registration.
type Namespaces struct {
	Users   []Namespace `yaml:"users" json:"users"`
	Aliases []Namespace `yaml:"aliases" json:"aliases"`
	Rooms   []Namespace `yaml:"rooms" json:"rooms"`
}

// Registration is one application service, as the spec's registration
// file describes it.
type Registration struct {
	ID string `yaml:"id"`
	// URL is where the homeserver reaches the service; nil (YAML null)
	// means the service only uses the client API and gets no pushes.
	URL             *string    `yaml:"url"`
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	// RateLimited defaults to true; false exempts the service's requests
	// from the rate limits.
	RateLimited      *bool    `yaml:"rate_limited"`
	Protocols        []string `yaml:"protocols"`
	ReceiveEphemeral bool     `yaml:"receive_ephemeral"`
	// PushEphemeral is the unstable (MSC2409) name of ReceiveEphemeral,
	// still written by some bridges.
	PushEphemeral bool `yaml:"de.sorunome.msc2409.push_ephemeral"`

	sender id.UserID
}

// Sender is the user id of the service's own user (sender_localpart).
func (r *Registration) Sender() id.UserID { return r.sender }

// BaseURL is the service's URL without a trailing slash ("" when null).
func (r *Registration) BaseURL() string {
	if r.URL == nil {
		return ""
	}
	return strings.TrimRight(*r.URL, "/")
}

// Limited reports whether rate limits apply to the service.
func (r *Registration) Limited() bool { return r.RateLimited == nil || *r.RateLimited }

// Ephemeral reports whether the service asked for ephemeral data.
func (r *Registration) Ephemeral() bool { return r.ReceiveEphemeral || r.PushEphemeral }

func match(list []Namespace, s string, exclusiveOnly bool) bool {
	for _, ns := range list {
		if (!exclusiveOnly || ns.Exclusive) && ns.re.MatchString(s) {
			return true
		}
	}
	return false
}

// OwnsUser reports whether u is the service's sender or in one of its
// user namespaces (exclusive or not): the users it may act as.
func (r *Registration) OwnsUser(u id.UserID) bool {
	return u == r.sender || match(r.Namespaces.Users, string(u), false)
}

// UserExclusive reports whether u is in one of its exclusive user namespaces.
func (r *Registration) UserExclusive(u id.UserID) bool {
	return match(r.Namespaces.Users, string(u), true)
}

// MatchesAlias reports whether an alias is in its alias namespaces.
func (r *Registration) MatchesAlias(a id.RoomAlias) bool {
	return match(r.Namespaces.Aliases, string(a), false)
}

// AliasExclusive reports whether an alias is in its exclusive alias namespaces.
func (r *Registration) AliasExclusive(a id.RoomAlias) bool {
	return match(r.Namespaces.Aliases, string(a), true)
}

// MatchesRoom reports whether a room id is in its room namespaces.
func (r *Registration) MatchesRoom(room id.RoomID) bool {
	return match(r.Namespaces.Rooms, string(room), false)
}

// HasProtocol reports whether the service declared a third-party protocol.
func (r *Registration) HasProtocol(p string) bool {
	for _, q := range r.Protocols {
		if q == p {
			return true
		}
	}
	return false
}

// Parse reads registrations from YAML: one document, or several separated
// by "---" (so one environment variable can hold them all on Lambda).
func Parse(data []byte) ([]*Registration, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Registration
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("registration YAML: %w", err)
		}
		var raw map[string]any
		if err := doc.Decode(&raw); err != nil {
			return nil, fmt.Errorf("registration YAML: %w", err)
		}
		if raw == nil {
			continue // an empty document
		}
		if _, ok := raw["url"]; !ok {
			return nil, fmt.Errorf("registration %v: url is required (null if the service takes no pushes)", raw["id"])
		}
		var reg Registration
		if err := doc.Decode(&reg); err != nil {
			return nil, fmt.Errorf("registration %v: %w", raw["id"], err)
		}
		out = append(out, &reg)
	}
}

// Registry is the validated set of registrations of a server.
type Registry struct {
	all     []*Registration
	byToken map[string]*Registration
	byID    map[string]*Registration
}

// NewRegistry validates the registrations for serverName: required fields,
// unique ids and tokens (the spec requires the homeserver to enforce it),
// URLs, and regexes that compile. Each regex must match a whole id.
func NewRegistry(serverName string, regs []*Registration) (*Registry, error) {
	g := &Registry{byToken: map[string]*Registration{}, byID: map[string]*Registration{}}
	hsTokens := map[string]bool{}
	for i, r := range regs {
		name := r.ID
		if name == "" {
			return nil, fmt.Errorf("application service #%d: id is required", i+1)
		}
		if r.ASToken == "" || r.HSToken == "" {
			return nil, fmt.Errorf("application service %q: as_token and hs_token are required", name)
		}
		if r.ASToken == r.HSToken {
			return nil, fmt.Errorf("application service %q: as_token and hs_token must differ", name)
		}
		if g.byID[name] != nil {
			return nil, fmt.Errorf("application service %q: id used twice", name)
		}
		if g.byToken[r.ASToken] != nil {
			return nil, fmt.Errorf("application service %q: as_token is also used by %q", name, g.byToken[r.ASToken].ID)
		}
		if hsTokens[r.HSToken] {
			return nil, fmt.Errorf("application service %q: hs_token is used twice", name)
		}
		if r.URL != nil && *r.URL != "" {
			u, err := url.Parse(*r.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("application service %q: url %q must be an http(s) URL", name, *r.URL)
			}
		}
		if r.SenderLocalpart == "" {
			return nil, fmt.Errorf("application service %q: sender_localpart is required", name)
		}
		if err := id.ValidateUserLocalpart(r.SenderLocalpart); err != nil {
			return nil, fmt.Errorf("application service %q: sender_localpart %q: %v", name, r.SenderLocalpart, err)
		}
		r.sender = id.NewUserID(r.SenderLocalpart, serverName)
		for kind, list := range map[string][]Namespace{"users": r.Namespaces.Users, "aliases": r.Namespaces.Aliases, "rooms": r.Namespaces.Rooms} {
			for j := range list {
				if list[j].Regex == "" {
					return nil, fmt.Errorf("application service %q: namespaces.%s[%d]: regex is required", name, kind, j)
				}
				re, err := regexp.Compile("^(?:" + list[j].Regex + ")$")
				if err != nil {
					return nil, fmt.Errorf("application service %q: namespaces.%s[%d]: %v", name, kind, j, err)
				}
				list[j].re = re
			}
		}
		for _, p := range r.Protocols {
			if p == "" || strings.ContainsAny(p, "/?#") {
				return nil, fmt.Errorf("application service %q: protocol %q is not a valid name", name, p)
			}
		}
		g.all = append(g.all, r)
		g.byID[name] = r
		g.byToken[r.ASToken] = r
		hsTokens[r.HSToken] = true
	}
	return g, nil
}

// All lists the registrations (nil-safe).
func (g *Registry) All() []*Registration {
	if g == nil {
		return nil
	}
	return g.all
}

// ByToken returns the service whose as_token this is (nil if none).
func (g *Registry) ByToken(tok string) *Registration {
	if g == nil {
		return nil
	}
	return g.byToken[tok]
}

// ByID returns the service with this id (nil if none).
func (g *Registry) ByID(name string) *Registration {
	if g == nil {
		return nil
	}
	return g.byID[name]
}

// ExclusiveUser returns the service holding u in an exclusive namespace (or
// as its sender), nil if none.
func (g *Registry) ExclusiveUser(u id.UserID) *Registration {
	for _, r := range g.All() {
		if u == r.sender || r.UserExclusive(u) {
			return r
		}
	}
	return nil
}

// ExclusiveAlias returns the service holding an alias exclusively (nil if none).
func (g *Registry) ExclusiveAlias(a id.RoomAlias) *Registration {
	for _, r := range g.All() {
		if r.AliasExclusive(a) {
			return r
		}
	}
	return nil
}

// WithProtocol lists the services that declared protocol p.
func (g *Registry) WithProtocol(p string) []*Registration {
	var out []*Registration
	for _, r := range g.All() {
		if r.HasProtocol(p) {
			out = append(out, r)
		}
	}
	return out
}
