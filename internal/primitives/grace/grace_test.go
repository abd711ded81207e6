package grace

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCtx is a deadline that fails loudly instead of hanging.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSynchronizeIdle(t *testing.T) {
	d := New()
	for i := 0; i < 100; i++ {
		if err := d.Synchronize(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// A reader blocked inside a section holds Synchronize until it leaves; a
// section that begins after Synchronize started does not delay it.
func TestBlockedReaderHoldsSynchronize(t *testing.T) {
	for _, anon := range []bool{false, true} {
		name := map[bool]string{false: "reader", true: "anonymous"}[anon]
		t.Run(name, func(t *testing.T) {
			d := New()
			r := d.Register()
			defer closeReader(r)
			var tok Token
			enter := func() {
				if anon {
					tok = d.Lock()
				} else {
					r.Lock()
				}
			}
			leave := func() {
				if anon {
					d.Unlock(tok)
				} else {
					r.Unlock()
				}
			}
			enter()

			// While the old section is held, Synchronize cannot finish: a
			// short deadline must expire, never a nil return.
			short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := d.Synchronize(short)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Synchronize with a reader inside returned %v, want DeadlineExceeded", err)
			}

			// Start a grace period; once it is waiting (hook), a new section
			// begins on another handle and stays open.
			waiting := make(chan struct{}, 4)
			testHookWaiting = func(*Domain) { waiting <- struct{}{} }
			defer func() { testHookWaiting = nil }()
			done := make(chan error, 1)
			go func() { done <- d.Synchronize(testCtx(t)) }()
			<-waiting
			late := d.Register()
			defer closeReader(late)
			late.Lock()
			lateTok := d.Lock()
			select {
			case err := <-done:
				t.Fatalf("Synchronize returned (%v) while an older section was held", err)
			default:
			}
			leave()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The late sections are still open: they did not delay it.
			d.Unlock(lateTok)
			late.Unlock()
		})
	}
}

// closeReader closes r, leaving its section first if a failed test left it
// inside one (Close inside a section panics, which would hide the failure
// and stop every later test).
func closeReader(r *Reader) {
	if r.ctr != 0 {
		r.Unlock()
	}
	r.Close()
}

func TestSynchronizeCancelWhileQueued(t *testing.T) {
	d := New()
	tok := d.Lock()
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	waiting := make(chan struct{}, 4)
	testHookWaiting = func(*Domain) { waiting <- struct{}{} }
	defer func() { testHookWaiting = nil }()
	go func() { first <- d.Synchronize(ctx1) }()
	<-waiting
	// A second caller queues behind the first; cancelling it returns at once.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := d.Synchronize(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("queued Synchronize: %v, want Canceled", err)
	}
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Synchronize: %v, want Canceled", err)
	}
	d.Unlock(tok)
	testHookWaiting = nil
	if err := d.Synchronize(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestMisuse(t *testing.T) {
	d := New()
	r := d.Register()
	mustPanic(t, "Unlock outside", r.Unlock)
	r.Lock()
	mustPanic(t, "nested Lock", r.Lock)
	mustPanic(t, "Close inside", r.Close)
	r.Unlock()
	r.Close()
	r.Close() // idempotent
	mustPanic(t, "zero Token", func() { d.Unlock(Token{}) })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

// obj is an object protected by the domain; writers poison it after a grace
// period, readers must never see the poison.
type obj struct {
	a, b int64
	_    [6]int64 // the rest of a cache line
}

const poison = -0x5a5a5a5a

// TestTorture is rcutorture in miniature: readers (registered and anonymous,
// some blocking inside sections) dereference the current object while writers
// replace it, wait for a grace period and poison the old one.
func TestTorture(t *testing.T) {
	reads := int64(10_000_000)
	if testing.Short() || raceOn {
		reads = 100_000
	}
	d := New()
	var cur atomic.Pointer[obj]
	cur.Store(&obj{a: 1, b: 1})
	var (
		total, bad atomic.Int64
		stop       atomic.Bool
		wg         sync.WaitGroup
	)
	nReaders := max(2, runtime.GOMAXPROCS(0))
	per := reads / int64(nReaders)
	check := func(p *obj) {
		if p.a == poison || p.b == poison || p.a != p.b {
			bad.Add(1)
		}
	}
	for g := 0; g < nReaders; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := d.Register()
			defer r.Close()
			var n int64
			for n < per {
				switch {
				case g%2 == 0:
					r.Lock()
					p := cur.Load()
					check(p)
					if n%4096 == 0 {
						runtime.Gosched() // block inside the section
					}
					check(p)
					r.Unlock()
				default:
					tok := d.Lock()
					p := cur.Load()
					check(p)
					if n%4096 == 0 {
						runtime.Gosched()
					}
					check(p)
					d.Unlock(tok)
				}
				n++
			}
			total.Add(n)
		}(g)
	}
	var wwg sync.WaitGroup
	var gps atomic.Int64
	for w := 0; w < 2; w++ {
		wwg.Add(1)
		go func(w int) {
			defer wwg.Done()
			ctx := testCtx(t)
			for v := int64(2); !stop.Load(); v++ {
				nw := &obj{a: v, b: v}
				old := cur.Swap(nw)
				if err := d.Synchronize(ctx); err != nil {
					t.Error(err)
					return
				}
				gps.Add(1)
				old.a, old.b = poison, poison // plain writes: -race checks the happens-before edge
			}
		}(w)
	}
	wg.Wait()
	stop.Store(true)
	wwg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d poisoned reads out of %d", bad.Load(), total.Load())
	}
	if gps.Load() == 0 {
		t.Fatal("no grace period completed")
	}
	t.Logf("%d reads, %d grace periods, light=%v", total.Load(), gps.Load(), lightForTest())
}

func BenchmarkReader(b *testing.B) {
	d := New()
	b.RunParallel(func(pb *testing.PB) {
		r := d.Register()
		defer r.Close()
		for pb.Next() {
			r.Lock()
			//lint:ignore SA2001 the cost of an empty read section is what is measured
			r.Unlock()
		}
	})
}

func BenchmarkAnonymous(b *testing.B) {
	d := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Unlock(d.Lock())
		}
	})
}

func BenchmarkSynchronizeIdle(b *testing.B) {
	d := New()
	ctx := context.Background()
	for b.Loop() {
		if err := d.Synchronize(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnonymousSerial(b *testing.B) {
	d := New()
	for i := 0; i < b.N; i++ {
		d.Unlock(d.Lock())
	}
}

// A stale anonymous reader (its add lands after a flip) moves to the new
// phase: relock leaves the old phase balanced and the Token names the new one.
func TestRelock(t *testing.T) {
	d := New()
	k := uint32(len(d.slots) - 1)
	i := d.idx.Load() % phases
	atomic.AddUint64(&d.slots[k].n[i], 1) // Lock's add to the phase it loaded...
	d.idx.Add(1)                          // ...after a grace period flipped it
	tok := d.relock(k, i)
	if tok.slot != k || uint32(tok.phase-1) != (i+1)%phases {
		t.Fatalf("relock returned %+v, want slot %d phase %d", tok, k, (i+1)%phases+1)
	}
	if !d.drained(1 << i) {
		t.Fatal("old phase not balanced after relock")
	}
	if d.drained(1 << ((i + 1) % phases)) {
		t.Fatal("new phase does not hold the section")
	}
	d.Unlock(tok)
	if !d.drained(1<<phases - 1) {
		t.Fatal("not drained after Unlock")
	}
	if err := d.Synchronize(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}
