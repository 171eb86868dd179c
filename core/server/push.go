package server

import (
	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/push"
)

// withPush adds the push rules endpoints. It runs after withSync: the
// rules live in the account data that service keeps (and /sync shows).
func (s *Server) withPush() *Server {
	s.pushAPI = &clientapi.PushAPI{Rules: &push.Rules{UserData: s.userDataAPI.UserData}}
	return s
}
