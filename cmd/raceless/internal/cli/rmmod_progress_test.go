package cli

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// fakeDaemon serves h on a socket of its own until the test ends.
func fakeDaemon(t *testing.T, h control.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	srv, err := control.Listen(sock, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(context.Background()); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock
}

// rmmod --wait -v prints a progress line when what it waits for changes
// (and the first one), not every report: the daemon reports ten times a
// second whether anything changed or not.
func TestRmmodProgressOnChange(t *testing.T) {
	var reports []raceless.Progress
	for range 5 { // held unchanged
		reports = append(reports, raceless.Progress{Module: "hello", Refs: 2})
	}
	for range 5 { // one reference goes
		reports = append(reports, raceless.Progress{Module: "hello", Refs: 1})
	}
	for range 3 { // same count, a holder appears
		reports = append(reports, raceless.Progress{Module: "hello", Refs: 1, Holders: []string{"x"}})
	}
	sock := fakeDaemon(t, func(ctx context.Context, req *control.Request, progress func(any)) (any, error) {
		if req.Op != "unload" || !req.Wait || !req.Progress {
			t.Errorf("request %+v", req)
		}
		for _, p := range reports {
			progress(p)
		}
		return nil, nil
	})
	out, errs, code := runMain("raceless", "rmmod", "--socket", sock, "-v", "-w", "hello")
	want := "rmmod: waiting for hello: 2 references\n" +
		"rmmod: waiting for hello: 1 references\n" +
		"rmmod: waiting for hello: 1 references, used by: x\n"
	if code != 0 || out != "" || errs != want {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errs, want)
	}
	if n := strings.Count(errs, "\n"); n != 3 {
		t.Fatalf("%d lines", n)
	}
}
