package server

import "github.com/cirrus-matrix/cirrus/core/clientapi"

// withPeek adds GET /events (peeking into one room), woken like /sync
// (after withSync).
func (s *Server) withPeek() *Server {
	svc := s.syncAPI.Service
	s.peekAPI = &clientapi.PeekAPI{Rooms: s.rooms, RoomsAPI: s.roomsAPI, Notifier: svc.Notifier,
		Waker: svc.Waker, MaxWait: svc.MaxWait, Now: s.deps.Now}
	return s
}
