package httpbench

// The rpc_plugin row: the benchmark's handler in a process-based plugin
// with github.com/hashicorp/go-plugin, over its net/rpc transport (net/rpc
// with encoding/gob, multiplexed by yamux on one Unix socket between the
// two processes). The plugin is a separate process: the binary that
// links this package, run again (os.Executable) with go-plugin's
// handshake cookie in its environment; this package's init sees the
// cookie and serves the plugin instead of running the program. The HTTP
// front end, in the benchmark's process, makes one RPC per request.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/rpc"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// handshake is go-plugin's: the child serves only when it finds the
// cookie in its environment (go-plugin's client puts it there).
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "RACELESS_HTTPBENCH_PLUGIN",
	MagicCookieValue: "rpc_plugin-hello-handler",
}

const pluginName = "handler"

// init turns a child started by startPlugin into the plugin: it serves
// the handler and exits, never returning to the program. Without the
// cookie (every ordinary run) it does nothing.
func init() {
	if os.Getenv(handshake.MagicCookieKey) != handshake.MagicCookieValue {
		return
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{pluginName: handlerPlugin{}},
		Logger:          hclog.NewNullLogger(),
	})
	os.Exit(0) // plugin.Serve exits itself; never run the program
}

// PluginRequest is what the front end sends per request.
type PluginRequest struct {
	Method, URI string
	Header      http.Header
	Body        []byte
}

// PluginResponse is what the plugin answers.
type PluginResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// PluginServer is the plugin side: the benchmark's handler behind
// net/rpc.
type PluginServer struct{}

// Serve runs the handler on one request.
func (PluginServer) Serve(req PluginRequest, resp *PluginResponse) error {
	r, err := http.NewRequest(req.Method, req.URI, bytes.NewReader(req.Body))
	if err != nil {
		return err
	}
	r.Header = req.Header
	rec := &recorder{header: http.Header{}}
	handler().ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	*resp = PluginResponse{Status: rec.status, Header: rec.header, Body: rec.body}
	return nil
}

// Pid answers the plugin process's id (the tests check that it is
// another process).
func (PluginServer) Pid(_ struct{}, pid *int) error {
	*pid = os.Getpid()
	return nil
}

type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// handlerPlugin is the go-plugin Plugin (net/rpc).
type handlerPlugin struct{}

func (handlerPlugin) Server(*plugin.MuxBroker) (any, error) { return PluginServer{}, nil }
func (handlerPlugin) Client(_ *plugin.MuxBroker, c *rpc.Client) (any, error) {
	return &pluginFront{c: c}, nil
}

// pluginFront is the front end's http.Handler: one RPC per request.
type pluginFront struct{ c *rpc.Client }

func (f *pluginFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			http.Error(w, "bad request body", http.StatusBadRequest)
			return
		}
	}
	var resp PluginResponse
	if err := f.c.Call("Plugin.Serve", PluginRequest{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header, Body: body}, &resp); err != nil {
		http.Error(w, "bad gateway: plugin: "+err.Error(), http.StatusBadGateway)
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	w.WriteHeader(resp.Status)
	w.Write(resp.Body)
}

// startPlugin starts the plugin process (this binary, run again) and
// returns its handler and a function that kills it and waits for it.
func startPlugin() (http.Handler, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("rpc_plugin: %w", err)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{pluginName: handlerPlugin{}},
		Cmd:              exec.Command(exe),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolNetRPC},
		Logger:           hclog.NewNullLogger(),
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, fmt.Errorf("rpc_plugin: starting the plugin process %s: %w", exe, err)
	}
	raw, err := rpcClient.Dispense(pluginName)
	if err != nil {
		client.Kill()
		return nil, nil, fmt.Errorf("rpc_plugin: %w", err)
	}
	return raw.(http.Handler), client.Kill, nil
}
