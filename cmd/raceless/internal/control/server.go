package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handler serves one request. progress, when the request asked for it,
// sends a progress line to the client; it is safe to call until the handler
// returns. The returned value is marshalled as the response's Data.
type Handler func(ctx context.Context, req *Request, progress func(any)) (any, error)

// Server accepts connections on a unix socket and serves one request per
// connection. Its methods are safe for concurrent use.
type Server struct {
	ln      *net.UnixListener
	path    string
	handler Handler
	log     *slog.Logger
	uid     int

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // one per connection being served
}

// DefaultSocketPath returns where the daemon listens when neither --socket
// nor RACELESS_SOCKET says otherwise: $XDG_RUNTIME_DIR/raceless.sock, else
// /run/user/UID/raceless.sock when that directory exists, else
// os.TempDir()/raceless-UID.sock.
func DefaultSocketPath() string {
	if p := os.Getenv("RACELESS_SOCKET"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "raceless.sock")
	}
	d := fmt.Sprintf("/run/user/%d", os.Getuid())
	if st, err := os.Stat(d); err == nil && st.IsDir() {
		return filepath.Join(d, "raceless.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("raceless-%d.sock", os.Getuid()))
}

// Listen creates the socket at path with mode 0600. A stale socket file
// (one nobody listens on) is removed first; a live one is ErrInUse;
// anything else at path (a regular file, a directory, a link) is left
// alone and refused with ErrNotSocket.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, &notSocketError{path: path, kind: fileKind(st.Mode())}
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		os.Remove(path) // stale: nobody listens on it
	}
	// The umask makes the socket 0600 from its creation: no window in which
	// another user could connect.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return &Server{ln: ln, path: path, handler: h, log: log, uid: os.Geteuid(), conns: make(map[net.Conn]struct{})}, nil
}

// RequestTimeout bounds how long a connected client may take to send its
// request line.
const RequestTimeout = 10 * time.Second

// ErrInUse is returned by Listen when a daemon already listens on the path.
var ErrInUse = errors.New("a daemon is already listening on this socket")

// ErrNotSocket is matched (errors.Is) by Listen's error when something
// other than a socket is at the path, as is syscall.EEXIST (exit status 4).
var ErrNotSocket = errors.New("exists and is not a socket")

// notSocketError is "PATH exists and is not a socket (a regular file)".
type notSocketError struct{ path, kind string }

func (e *notSocketError) Error() string {
	return fmt.Sprintf("%s %s (%s)", e.path, ErrNotSocket, e.kind)
}

func (e *notSocketError) Is(target error) bool {
	return target == ErrNotSocket || target == syscall.EEXIST
}

// fileKind names a file's type as ls -l's first letter would tell it.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file"
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close; each is served in its own
// goroutine with ctx.
func (s *Server) Serve(ctx context.Context) error {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// StopAccepting closes the listener and removes the socket file; requests
// in flight go on.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.ln.Close() // also unlinks the socket file
	}
}

// Close stops accepting, closes every connection (cancelling their
// requests) and waits for their handlers to return.
func (s *Server) Close() error {
	s.StopAccepting()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// CheckPeer refuses a peer whose uid is not owner's: only the daemon's
// owner may use it (as only CAP_SYS_MODULE may load modules). A peer whose
// credentials cannot be read is refused too (see PeerUID: on a platform
// without a peer-credential call every connection is refused).
func CheckPeer(c *net.UnixConn, owner int) error {
	uid, err := PeerUID(c)
	if err != nil {
		return fmt.Errorf("reading peer credentials: %w", err)
	}
	if uid != owner {
		return &Error{Code: CodePermission, Message: fmt.Sprintf("permission denied: peer uid %d is not the daemon's owner (uid %d)", uid, owner)}
	}
	return nil
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	enc := json.NewEncoder(c)
	var wmu sync.Mutex // guards enc and final
	final := false
	send := func(r Response) {
		wmu.Lock()
		defer wmu.Unlock()
		if final {
			return
		}
		final = r.Final
		_ = enc.Encode(r)
	}
	fail := func(e *Error) { send(Response{Final: true, Error: e}) }

	if err := CheckPeer(c, s.uid); err != nil {
		s.log.Warn("control: peer refused", "err", err)
		fail(ErrorOf(err))
		return
	}
	// A client has RequestTimeout to send its request line; the request
	// itself may then run as long as it needs.
	_ = c.SetReadDeadline(time.Now().Add(RequestTimeout))
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	if !sc.Scan() {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
		fail(&Error{Code: CodeUsage, Message: "malformed request: " + err.Error()})
		return
	}
	if err := req.CheckNames(); err != nil {
		fail(&Error{Code: CodeInvalid, Message: err.Error()})
		return
	}
	// The request is done when the handler returns or the client goes
	// away (a waiting rmmod interrupted with ^C cancels its wait).
	rctx, cancel := context.WithCancel(ctx)
	watcher := make(chan struct{})
	go func() {
		defer close(watcher)
		var b [1]byte
		c.Read(b[:]) // returns at EOF or when c is closed
		cancel()
	}()
	defer func() {
		c.Close()
		<-watcher
		cancel()
	}()
	progress := func(p any) {
		if !req.Progress {
			return
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return
		}
		send(Response{Progress: raw})
	}
	data, err := s.handler(rctx, &req, progress)
	if err != nil {
		s.log.Debug("control: request failed", "op", req.Op, "err", err)
		fail(ErrorOf(err))
		return
	}
	raw, err := json.Marshal(data)
	if err != nil {
		fail(&Error{Code: CodeFailed, Message: "encoding response: " + err.Error()})
		return
	}
	send(Response{Final: true, OK: true, Data: raw})
}
