package httpbench

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

// The rpc_plugin row's handler runs in another process, reached through
// go-plugin's net/rpc, and answers the benchmark's body; killing the
// plugin makes the front end answer 502, never hang.
func TestPluginIsAnotherProcess(t *testing.T) {
	h, kill, err := startPlugin()
	if err != nil {
		t.Fatal(err)
	}
	defer kill()
	var pid int
	if err := h.(*pluginFront).c.Call("Plugin.Pid", struct{}{}, &pid); err != nil {
		t.Fatal(err)
	}
	if pid == 0 || pid == os.Getpid() {
		t.Fatalf("plugin pid %d, this process %d: not another process", pid, os.Getpid())
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != string(body) || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("plugin answered %d %q %v", resp.StatusCode, b, resp.Header)
	}
	kill()
	resp, err = http.Get(srv.URL + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("after the plugin was killed: %d, want 502", resp.StatusCode)
	}
}
