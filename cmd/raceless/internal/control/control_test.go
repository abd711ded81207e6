package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, h Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	srv, err := Listen(sock, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock
}

func TestRoundTripAndErrors(t *testing.T) {
	sock := serve(t, func(ctx context.Context, req *Request, progress func(any)) (any, error) {
		switch req.Op {
		case "echo":
			progress(map[string]int{"n": 1})
			return req.Name, nil
		case "busy":
			return nil, &raceless.BusyError{Module: req.Name, Holders: []string{"a", "b"}, Reason: "in use by: a,b"}
		}
		return nil, &raceless.ModuleError{Op: "x", Module: req.Name, Err: raceless.ErrNotFound}
	})
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	var got []string
	data, err := Call(context.Background(), sock, &Request{Op: "echo", Name: "hi", Progress: true}, func(r json.RawMessage) { got = append(got, string(r)) })
	if err != nil || string(data) != `"hi"` || len(got) != 1 || got[0] != `{"n":1}` {
		t.Fatalf("echo: %s %v %v", data, err, got)
	}
	_, err = Call(context.Background(), sock, &Request{Op: "busy", Name: "m"}, nil)
	var we *Error
	if !errors.Is(err, raceless.ErrBusy) || !errors.As(err, &we) || we.Module != "m" || strings.Join(we.Holders, ",") != "a,b" {
		t.Fatalf("busy: %#v", err)
	}
	if _, err = Call(context.Background(), sock, &Request{Op: "nf", Name: "m"}, nil); !errors.Is(err, raceless.ErrNotFound) {
		t.Fatalf("notfound: %v", err)
	}
	if _, err := Listen(sock, nil, nil); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: %v", err)
	}
	if _, err := Call(context.Background(), filepath.Join(t.TempDir(), "none"), &Request{Op: "x"}, nil); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("no daemon: %v", err)
	}
}

// The peer-credential check, on an accepted connection: the peer's uid is
// read from the kernel (SO_PEERCRED), and a uid other than the owner's is
// refused with ErrPermission.
func TestCheckPeer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uid, err := PeerUID(c)
	if err != nil || uid != os.Getuid() {
		t.Fatalf("PeerUID = %d, %v; want %d", uid, err, os.Getuid())
	}
	if err := CheckPeer(c, os.Getuid()); err != nil {
		t.Fatalf("owner refused: %v", err)
	}
	err = CheckPeer(c, os.Getuid()+1)
	if !errors.Is(err, raceless.ErrPermission) || !strings.Contains(err.Error(), "is not the daemon's owner") {
		t.Fatalf("other uid: %v", err)
	}
}
