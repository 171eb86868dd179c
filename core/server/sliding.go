package server

import "github.com/cirrus-matrix/cirrus/core/slidingsync"

// withSlidingSync adds simplified sliding sync (MSC4186, the sync Element X
// uses) over the /sync service's streams, wake-ups and counts.
func (s *Server) withSlidingSync() *Server {
	svc := s.syncAPI.Service
	s.sliding = &slidingsync.Service{T: s.deps.Table, Sync: svc, Rooms: s.rooms, UserData: svc.UserData,
		Ephemeral: svc.Ephemeral, Log: s.deps.Log, Now: s.deps.Now}
	return s
}
