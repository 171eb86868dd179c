package server

import (
	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/search"
)

// withSearch adds POST /search and keeps its index: the fan-out worker
// (core/fanout) passes every persisted event to search.Index.OnEvent,
// which indexes messages, names and topics and removes redacted ones.
// Indexing happens after the send returns, so a new message is searchable
// a moment later.
func (s *Server) withSearch() *Server {
	idx := &search.Index{T: s.deps.Table, Rooms: s.rooms}
	s.fanout.Register("search", idx.OnEvent)
	s.searchAPI = &clientapi.SearchAPI{Searcher: search.NewSearcher(idx, s.rooms), Timeline: s.roomsAPI}
	return s
}
