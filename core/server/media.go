package server

import (
	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/core/mediaapi"
)

// withMedia adds the content repository: media metadata in the table,
// bytes in the blob store (Deps.Blobs).
func (s *Server) withMedia() *Server {
	cfg := s.cfg.Media
	cfg.ServerName = s.cfg.Client.ServerName
	s.media = media.New(cfg, s.deps.Table, s.deps.Blobs, s.deps.Log, s.deps.Now)
	s.mediaAPI = &mediaapi.API{Media: s.media, Log: s.deps.Log}
	return s
}

// Media is the content repository (for tests and admin tools).
func (s *Server) Media() *media.Service { return s.media }
