package percpu

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStoreBufferLitmus is the store-buffering (SB, Dekker) litmus test of
// the asymmetric barrier, shaped as grace and ref use it:
//
//	light side (a reader)          heavy side (Synchronize, Kill)
//	Store64(&x, i)                 atomic store y = i
//	r := atomic load y             Heavy()
//	                               w := atomic load x
//
// Forbidden: r < i and w < i (each side misses the other's store). With
// Light, the reader's store is a plain MOV that may sit in its CPU's store
// buffer while its load runs, and x86-TSO allows exactly this outcome unless
// something fences the reader between the two: Heavy (membarrier) is that
// fence. Without Light, Store64 is a sequentially consistent atomic and the
// outcome is forbidden by Go's memory model alone; the test then checks
// that setting (Heavy is a no-op there, so under -race and
// raceless_portable it cannot tell a missing membarrier: only the light
// mode can, and CI runs the package without -race for this).
//
// A "control" run, alternating with the real one, does the same with no
// barrier at all: its forbidden outcomes are what make a pass of the real
// run mean something on the machine at hand (docs/fastpaths.md, "Mutation
// testing": a membarrier that does nothing is caught by this test).
func TestStoreBufferLitmus(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("GOMAXPROCS < 2: the two sides never run at the same time")
	}
	// Slices of the real run (Heavy) alternate with slices of a control run
	// (no barrier at all), each until the first forbidden outcome or the
	// slice's end. When the two sides run at the same time, a missing
	// barrier shows within microseconds; on a loaded machine they often do
	// not, so the test goes on until the control has shown store buffering
	// in controlHits slices (proof that the real slices, run at the same
	// times, could have seen it) or the budget ends.
	const slice, controlHits = 250 * time.Millisecond, 3
	budget := 6 * time.Second
	if !Light() {
		budget = time.Second // no control run: nothing to calibrate
	}
	if raceEnabled || testing.Short() {
		budget = 300 * time.Millisecond
	}
	if s := os.Getenv("RACELESS_LITMUS_SECONDS"); s != "" { // longer runs by hand
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
			budget = time.Duration(f * float64(time.Second))
		}
	}
	start := time.Now()
	var trials, ctrials, hits int
	for time.Since(start) < budget && hits < controlHits {
		n, bad := storeBuffer(Heavy, math.MaxInt, min(slice, budget), true)
		trials += n
		if bad != 0 {
			t.Fatalf("store buffering observed across Heavy: a trial saw neither store, after %d trials (light=%v)", trials, Light())
		}
		if !Light() {
			continue // no plain stores: nothing for a control run to show
		}
		n, bad = storeBuffer(func() {}, math.MaxInt, slice, true)
		ctrials += n
		if bad != 0 {
			hits++
		}
	}
	t.Logf("light=%v: %d trials with Heavy in %v, none forbidden; control without a barrier: forbidden outcome seen in %d slices (%d trials)",
		Light(), trials, time.Since(start).Round(time.Millisecond), hits, ctrials)
	if trials < 10*sbBurst {
		t.Fatalf("only %d trials in %v: the test did not run", trials, budget)
	}
	if Light() && hits == 0 {
		// Not a failure of the code under test, but then this run proved
		// little: say so, so that a missed mutation can be explained.
		t.Logf("control: no store buffering seen without a barrier: the two sides did not run at the same time, this run shows nothing about Heavy")
	}
}

// sbBurst is the number of SB trials run back to back between two
// handshakes, each on its own pair of lines.
const sbBurst = 32

type sbLine struct {
	v uint64
	_ [CacheLine/2 - 8]byte
}

// sbVars holds the trial locations, on separate lines, and the handshake.
type sbVars struct {
	x      [sbBurst]sbLine    // the reader's slots (Store64)
	y      [sbBurst]sbLine    // the heavy side's flags (atomic)
	resR   [2][sbBurst]uint64 // the reader's loads in even and odd bursts; the heavy side reads burst i-1's during burst i
	readyR atomic.Int64       // burst the reader is ready for (it has finished the one before)
	_      [CacheLine - 8]byte
	readyW atomic.Int64
	_      [CacheLine - 8]byte
	stop   atomic.Bool
}

// storeBuffer runs the SB test with barrier on the heavy side for up to
// iters trials or budget, whichever ends first (or until the first
// forbidden outcome, when stopAtFirst), and returns the trials run and the
// forbidden outcomes seen.
//
// Trials run in bursts of sbBurst, each on fresh lines, between handshakes
// (each side announces the burst it is ready for and waits for the other),
// after which each side waits a pseudo-random few nanoseconds so that, over
// many bursts, the two sides start at every relative offset. Within a burst
// the reader's plain stores queue up in its store buffer (each needs the
// line back from the heavy side, which just read it), so its loads run
// ahead of its stores' visibility: the widest window x86 offers.
func storeBuffer(barrier func(), iters int, budget time.Duration, stopAtFirst bool) (n, bad int) {
	v := new(sbVars)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the light side
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := int64(1); ; i++ {
			v.readyR.Store(i) // after resR of burst i-1
			for spins := 0; v.readyW.Load() < i; spins++ {
				if v.stop.Load() {
					return
				}
				if spins&(1<<20-1) == 1<<20-1 {
					runtime.Gosched()
				}
			}
			spin(delay(i, 0x9E3779B97F4A7C15))
			for k := range sbBurst {
				Store64(&v.x[k].v, uint64(i))
				v.resR[i&1][k] = atomic.LoadUint64(&v.y[k].v)
			}
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	deadline := time.Now().Add(budget)
	var w [sbBurst]uint64 // the heavy side's loads in the previous burst
	for i := int64(1); ; i++ {
		v.readyW.Store(i)
		for spins := 0; v.readyR.Load() < i; spins++ {
			if spins&(1<<20-1) == 1<<20-1 {
				runtime.Gosched()
			}
		}
		if i > 1 { // the reader has finished burst i-1
			for k := range sbBurst {
				n++
				if v.resR[(i-1)&1][k] < uint64(i-1) && w[k] < uint64(i-1) {
					bad++
				}
			}
		}
		if n >= iters || (stopAtFirst && bad > 0) || (i&15 == 0 && time.Now().After(deadline)) {
			break
		}
		spin(delay(i, 0xC2B2AE3D27D4EB4F))
		for k := range sbBurst {
			atomic.StoreUint64(&v.y[k].v, uint64(i))
			barrier()
			w[k] = atomic.LoadUint64(&v.x[k].v)
		}
	}
	v.stop.Store(true)
	wg.Wait()
	return n, bad
}

// delay is a pseudo-random spin count in [0, 64) from the burst number.
func delay(i int64, k uint64) int { return int(uint64(i) * k >> 58) }

var spinSink uint64

// spin burns about n short steps without touching shared memory.
//
//go:noinline
func spin(n int) {
	x := uint64(n)
	for j := 0; j < n; j++ {
		x = x*6364136223846793005 + 1
	}
	if x == 42 {
		spinSink = x
	}
}
