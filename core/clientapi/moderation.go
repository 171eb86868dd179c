package clientapi

import (
	"errors"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/rooms"
)

// ReportUser serves POST /_matrix/client/v3/users/{userId}/report. The
// report is stored with the room and event reports for the server's
// admins. The spec lets a server hide whether the user exists: Cirrus
// answers 200 for any well-formed user id, and stores reports only about
// users that exist here or live on another server (whose existence it
// cannot know).
func (a *DiscoveryAPI) ReportUser(r *httpapi.Request) (any, error) {
	u, err := parseUserID(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var body reportBody
	if err := r.DecodeJSON(&body); err != nil {
		return nil, err
	}
	if err := body.validate(true); err != nil {
		return nil, err
	}
	ctx := r.Ctx()
	if u.Homeserver() == a.ServerName {
		if _, err := a.Accounts.GetAccount(ctx, u); err != nil {
			var he *httpapi.Error
			if errors.As(err, &he) && he.Code == "M_NOT_FOUND" {
				return httpapi.Empty{}, nil
			}
			return nil, err
		}
	}
	if _, err := a.Rooms.AddReport(ctx, rooms.Report{ReportedUser: u, Reporter: r.Caller.UserID, Reason: body.reason()}); err != nil {
		return nil, err
	}
	return httpapi.Empty{}, nil
}

// PolicyServer serves GET /.well-known/matrix/policy_server: the public
// keys of the policy server this deployment names (a separate service;
// Cirrus is not one), or 404 when none is configured.
func (a *DiscoveryAPI) PolicyServer(r *httpapi.Request) (any, error) {
	if a.Cfg.PolicyServerKeys["ed25519"] == "" {
		return nil, httpapi.NotFound("no policy server is configured")
	}
	return map[string]any{"public_keys": a.Cfg.PolicyServerKeys}, nil
}
