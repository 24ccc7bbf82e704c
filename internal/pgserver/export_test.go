package pgserver

// BaseDir exposes the server's temporary directory to tests.
func (s *Server) BaseDir() string { return s.baseDir }
