package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runDaemon starts a daemon with cfg and runs it until the test ends,
// failing the test if it cannot start or its Run returns an error.
func runDaemon(t *testing.T, cfg daemon.Config) *daemon.Daemon {
	t.Helper()
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return d
}

// An in-process daemon: start, serve requests, shut down on cancel with
// nothing left running.
func TestDaemonInProcess(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sock")
	d, err := daemon.New(daemon.Config{
		Socket:   sock,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Builtins: defaults.Sources,
		Boot:     defaults.Boot(),
		Mounts:   defaults.Mounts(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	call := func(req *control.Request) (json.RawMessage, error) {
		return control.Call(context.Background(), sock, req, nil)
	}
	if _, err := call(&control.Request{Op: "probe", Name: "hello_consumer"}); err != nil {
		t.Fatal(err)
	}
	_, err = call(&control.Request{Op: "unload", Name: "hello"})
	var we *control.Error
	if !errors.Is(err, raceless.ErrBusy) || !errors.As(err, &we) || len(we.Holders) != 1 || we.Holders[0] != "hello_consumer" {
		t.Fatalf("unload hello: %v", err)
	}
	data, err := call(&control.Request{Op: "list"})
	var mods []daemon.ModuleStatus
	if err != nil || json.Unmarshal(data, &mods) != nil || len(mods) != 4 {
		t.Fatalf("list: %s %v", data, err)
	}
	if _, err := call(&control.Request{Op: "bogus"}); err == nil {
		t.Fatal("unknown op accepted")
	}
	host := d.Host()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(host.Modules()); n != 0 {
		t.Fatalf("%d modules left after shutdown", n)
	}
}
