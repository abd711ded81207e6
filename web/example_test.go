package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/web"
)

// greeter is a native module with one route.
type greeter struct{}

func (greeter) Init(k *raceless.Kernel) error {
	return web.Register(k, "GET /hello/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s\n", r.PathValue("name"))
	}))
}
func (greeter) Exit() (int, error) { return 0, nil }

// The router serves the routes of the host's modules; the server gives it
// ConnContext, so that a forced unload can end a request through its
// connection's context.
func ExampleNew() {
	ctx := context.Background()
	host := raceless.New()
	defer host.Shutdown(ctx)
	rt := web.New(host, web.Config{})
	defer rt.Close()

	src := raceless.Native(raceless.Info{Name: "greeter", License: "MIT"}, func() raceless.Module { return greeter{} })
	if _, err := host.Load(ctx, src, nil); err != nil {
		fmt.Println(err)
		return
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: rt, ConnContext: web.ConnContext}
	go srv.Serve(ln)
	defer srv.Close()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/hello/gopher")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, ": ", string(body))
	// Output: 200 OK: hello, gopher
}
