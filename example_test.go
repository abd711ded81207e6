package raceless_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/raceless/raceless"
)

// greeter is a native module: it exports one symbol.
type greeter struct{ greeting string }

func (g *greeter) Init(k *raceless.Kernel) error {
	g.greeting = k.Params()["greeting"]
	return k.Export("greet", func(name string) string { return g.greeting + ", " + name })
}

func (g *greeter) Exit() (int, error) { return 0, nil }

var greeterSource = raceless.Native(raceless.Info{
	Name:    "greeter",
	License: "MIT",
	Params:  []raceless.ParamSpec{{Name: "greeting", Type: raceless.ParamString, Default: "hello"}},
}, func() raceless.Module { return &greeter{} })

func Example() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	if _, err := host.Load(ctx, greeterSource, map[string]string{"greeting": "hi"}); err != nil {
		fmt.Println(err)
		return
	}
	// A call through the counting interface: the host holds the module's
	// reference for the duration of the call.
	b, err := host.Acquire(raceless.KindSymbol, "greet")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(b.Value().(func(string) string)("Rusty"))

	// While the binding is held, the module cannot be unloaded.
	err = host.Unload(ctx, "greeter", raceless.UnloadOptions{})
	fmt.Println(errors.Is(err, raceless.ErrBusy), err)

	b.Release()
	fmt.Println(host.Unload(ctx, "greeter", raceless.UnloadOptions{}))
	// Output:
	// hi, Rusty
	// true unload greeter: busy: in use (1 references)
	// <nil>
}

// A Binding holds its owner's reference until it is released: defer the
// Release next to the Acquire. Release drops the reference once; a second
// call does nothing.
func ExampleHost_Acquire() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	m, err := host.Load(ctx, greeterSource, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	greet := func(name string) (string, error) {
		b, err := host.Acquire(raceless.KindSymbol, "greet")
		if err != nil {
			return "", err
		}
		defer b.Release()
		return b.Value().(func(string) string)(name), nil
	}
	fmt.Println(greet("Rusty"))
	fmt.Println(m.Refs()) // the deferred Release ran

	b, err := host.Acquire(raceless.KindSymbol, "greet")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Refs(), b.Owner() == m)
	b.Release()
	b.Release() // a no-op
	fmt.Println(m.Refs(), b.Owner() == nil)

	fmt.Println(host.Unload(ctx, "greeter", raceless.UnloadOptions{}))
	_, err = greet("Rusty")
	fmt.Println(errors.Is(err, raceless.ErrNotFound))
	// Output:
	// hello, Rusty <nil>
	// 0
	// 1 true
	// 0 true
	// <nil>
	// true
}

func ExampleHost_CallHooks() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	audit := raceless.Native(raceless.Info{Name: "audit"}, func() raceless.Module { return &auditor{} })
	if _, err := host.Load(ctx, audit, nil); err != nil {
		fmt.Println(err)
		return
	}
	// Hooks are a non-counting interface: no reference per call; the
	// unload waits a grace period for calls in flight instead.
	fmt.Println(host.CallHooks(ctx, "login", "alice"))
	fmt.Println(host.Unload(ctx, "audit", raceless.UnloadOptions{}))
	// Output:
	// audit: login alice
	// <nil>
	// <nil>
}

type auditor struct{}

func (*auditor) Init(k *raceless.Kernel) error {
	return k.Hook("login", func(_ context.Context, user any) error {
		fmt.Println("audit: login", user)
		return nil
	})
}

func (*auditor) Exit() (int, error) { return 0, nil }

func ExampleHost_Unload_wait() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	m, _ := host.Load(ctx, greeterSource, nil)
	b, _ := host.Acquire(raceless.KindSymbol, "greet") // a reference on greeter
	progress := make(chan raceless.Progress, 1)
	done := make(chan error)
	go func() {
		done <- host.Unload(ctx, "greeter", raceless.UnloadOptions{Wait: true, Progress: func(p raceless.Progress) {
			select {
			case progress <- p:
			default:
			}
		}})
	}()
	p := <-progress
	fmt.Printf("waiting for %d reference(s) on %s\n", p.Refs, p.Module)
	b.Release()
	fmt.Println(<-done, m.State())
	// Output:
	// waiting for 1 reference(s) on greeter
	// <nil> gone
}

// adder is a native module exporting a Func, the language-neutral symbol
// type that wasm modules export too. Like a wasm function it computes in
// the stack it is given: the arguments come in it, the result goes back in
// it.
type adder struct{}

func (adder) Init(k *raceless.Kernel) error {
	return k.Export("add", raceless.Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
		return append(stack[:0], stack[0]+stack[1]), nil
	}))
}

func (adder) Exit() (int, error) { return 0, nil }

// A Handle calls a symbol repeatedly: the name is looked up once, and each
// call takes the owner's reference for its own length only, so the module
// stays unloadable between calls, and the handle follows it across reloads.
func ExampleHandle() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	adderSource := raceless.Native(raceless.Info{Name: "adder"}, func() raceless.Module { return adder{} })

	add := host.Handle("add")
	_, err := add.Call(ctx, []uint64{1, 2})
	fmt.Println(errors.Is(err, raceless.ErrNotFound)) // not loaded yet

	if _, err := host.Load(ctx, adderSource, nil); err != nil {
		fmt.Println(err)
		return
	}
	r, err := add.Call(ctx, []uint64{1, 2})
	fmt.Println(r, err)

	// No reference is held between calls: the module unloads, and loads
	// again, under the same handle.
	fmt.Println(host.Unload(ctx, "adder", raceless.UnloadOptions{}))
	if _, err := host.Load(ctx, adderSource, nil); err != nil {
		fmt.Println(err)
		return
	}
	r, err = add.Call(ctx, []uint64{20, 22})
	fmt.Println(r, err)
	// Output:
	// true
	// [3] <nil>
	// <nil>
	// [42] <nil>
}

// A worker goroutine that calls a symbol many times holds the owner's
// reference in its own Caller for each call: plain stores rather than two
// atomic operations on the module's counter. Between calls it holds
// nothing, so the module unloads as usual. Reusing one stack with room for
// the results, its calls allocate nothing.
func ExampleCaller() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	adderSource := raceless.Native(raceless.Info{Name: "adder"}, func() raceless.Module { return adder{} })
	if _, err := host.Load(ctx, adderSource, nil); err != nil {
		fmt.Println(err)
		return
	}
	add := host.Handle("add")

	jobs := make(chan uint64)
	sums := make(chan uint64)
	go func() {
		c := host.NewCaller() // one per goroutine
		defer c.Close()
		var total uint64
		stack := make([]uint64, 2) // the arguments, then the result
		for n := range jobs {
			stack[0], stack[1] = total, n
			r, err := c.Call(ctx, add, stack)
			if err != nil {
				fmt.Println(err) // and go on draining jobs
				continue
			}
			total = r[0]
		}
		sums <- total
	}()
	for n := uint64(1); n <= 100; n++ {
		jobs <- n
	}
	close(jobs)
	fmt.Println(<-sums)
	fmt.Println(host.Unload(ctx, "adder", raceless.UnloadOptions{}))
	// Output:
	// 5050
	// <nil>
}

// A goroutine that calls hooks many times enters the read section through
// its own Caller: a store to its own slot rather than atomic operations on
// the host's shared counters. As with Host.CallHooks, the unload of a
// hooking module waits a grace period for such calls in flight.
func ExampleCaller_CallHooks() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	audit := raceless.Native(raceless.Info{Name: "audit"}, func() raceless.Module { return &auditor{} })
	if _, err := host.Load(ctx, audit, nil); err != nil {
		fmt.Println(err)
		return
	}
	c := host.NewCaller() // one per goroutine
	for _, user := range []string{"alice", "bob"} {
		if err := c.CallHooks(ctx, "login", user); err != nil {
			fmt.Println(err)
		}
	}
	c.Close()
	fmt.Println(host.Unload(ctx, "audit", raceless.UnloadOptions{}))
	// Output:
	// audit: login alice
	// audit: login bob
	// <nil>
}

// versionedAdder exports add, returning a+b+bias, and declares its type
// (Signer), as a wasm module's exports always do.
type versionedAdder struct{ bias uint64 }

func (a versionedAdder) Init(k *raceless.Kernel) error {
	return k.Export("add", raceless.Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
		return append(stack[:0], stack[0]+stack[1]+a.bias), nil
	}))
}

func (versionedAdder) Exit() (int, error) { return 0, nil }

func (versionedAdder) Signature(symbol string) (raceless.Signature, bool) {
	i64 := raceless.ValueTypeI64
	return raceless.Signature{Params: []raceless.ValueType{i64, i64}, Results: []raceless.ValueType{i64}}, symbol == "add"
}

// sum imports add in its Init and keeps the Func.
type sum struct{ add raceless.Func }

func (s *sum) Init(k *raceless.Kernel) error {
	v, err := k.Import(context.Background(), "add")
	if err != nil {
		return err
	}
	s.add = v.(raceless.Func)
	return nil
}

func (*sum) Exit() (int, error) { return 0, nil }

// A module that others import is replaced in one step: the importer's Func
// calls the new version from then on, and the importer now depends on it.
// A replacement that does not export what the importers hold is refused,
// naming the symbol, and the old version goes on serving.
func ExampleHost_Replace() {
	ctx := context.Background()
	host := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	version := func(bias uint64) raceless.Source {
		return raceless.Native(raceless.Info{Name: "adder", Version: fmt.Sprint(bias)}, func() raceless.Module { return versionedAdder{bias} })
	}
	if _, err := host.Load(ctx, version(0), nil); err != nil {
		fmt.Println(err)
		return
	}
	s := &sum{}
	if _, err := host.Load(ctx, raceless.Native(raceless.Info{Name: "sum"}, func() raceless.Module { return s }), nil); err != nil {
		fmt.Println(err)
		return
	}
	r, _ := s.add(ctx, []uint64{1, 2})
	fmt.Println("v0:", r)

	adder, err := host.Replace(ctx, "adder", version(100), nil, raceless.ReplaceOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	r, _ = s.add(ctx, []uint64{1, 2})
	fmt.Println("v100:", r, adder.Holders())

	empty := raceless.Native(raceless.Info{Name: "adder"}, func() raceless.Module { return raceless.Legacy(nothing{}) })
	_, err = host.Replace(ctx, "adder", empty, nil, raceless.ReplaceOptions{Force: true})
	fmt.Println(errors.Is(err, raceless.ErrBusy), err)
	r, _ = s.add(ctx, []uint64{1, 2})
	fmt.Println("still v100:", r)
	// Output:
	// v0: [3]
	// v100: [103] [sum]
	// true replace adder: busy: the replacement does not serve its importers: add (imported by sum) is missing
	// still v100: [103]
}

// nothing is a module that exports nothing.
type nothing struct{}

func (nothing) Init(*raceless.Kernel) error { return nil }
func (nothing) Cleanup()                    {}
