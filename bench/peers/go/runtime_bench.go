package main

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// ---- yield -----------------------------------------------------------------

// yieldRun runs two goroutines that each call runtime.Gosched n times and
// returns the elapsed time; it makes 2n Gosched calls in all.
func yieldRun(n int) time.Duration {
	var wg sync.WaitGroup
	var startWG sync.WaitGroup
	start := make(chan struct{})
	wg.Add(2)
	startWG.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			defer wg.Done()
			startWG.Done()
			<-start
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
		}()
	}
	startWG.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	return time.Since(t0)
}

func benchYield(procs int) {
	setProcs(procs)
	yieldRun(100000) // warm-up
	n := calibrate(yieldRun, *flagDuration)
	var ds []time.Duration
	for r := 0; r < 3; r++ {
		ds = append(ds, yieldRun(n))
	}
	d := medianDuration(ds)
	logf("yield: %d Gosched calls per run, median of %d runs %v", 2*n, len(ds), d)
	emit("yield", procs, "ns_per_switch", float64(d.Nanoseconds())/float64(2*n), "ns")
}

// ---- spawn_join ------------------------------------------------------------

func spawnJoinRun(n int) time.Duration {
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go wg.Done()
	}
	wg.Wait()
	return time.Since(t0)
}

func benchSpawnJoin(procs int) {
	setProcs(procs)
	n := 1000000
	if *flagN > 0 {
		n = *flagN
	}
	spawnJoinRun(n) // warm-up: grows the heap, fills the free-g lists
	var ds []time.Duration
	for r := 0; r < *flagReps; r++ {
		ds = append(ds, spawnJoinRun(n))
	}
	d := medianDuration(ds)
	logf("spawn_join: %d goroutines, runs %v", n, ds)
	emit("spawn_join", procs, "ns_per_fiber", float64(d.Nanoseconds())/float64(n), "ns")
}

// ---- skynet ----------------------------------------------------------------

const (
	skynetSize   = 1000000
	skynetDiv    = 10
	skynetResult = 499999500000
)

// skynet is the original skynet benchmark: every node spawns div children
// which send their sum on the parent's unbuffered channel.
func skynet(c chan int, num, size, div int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int)
	sum := 0
	for i := 0; i < div; i++ {
		subNum := num + i*(size/div)
		go skynet(rc, subNum, size/div, div)
	}
	for i := 0; i < div; i++ {
		sum += <-rc
	}
	c <- sum
}

func skynetRun() (time.Duration, int) {
	t0 := time.Now()
	c := make(chan int)
	go skynet(c, 0, skynetSize, skynetDiv)
	r := <-c
	return time.Since(t0), r
}

// skynetWG is the channel-free variant: children write their sum into the
// parent's slice and the parent waits on a sync.WaitGroup.
func skynetWG(out *int, wg *sync.WaitGroup, num, size, div int) {
	if size == 1 {
		*out = num
		wg.Done()
		return
	}
	res := make([]int, div)
	var cwg sync.WaitGroup
	cwg.Add(div)
	for i := 0; i < div; i++ {
		subNum := num + i*(size/div)
		go skynetWG(&res[i], &cwg, subNum, size/div, div)
	}
	cwg.Wait()
	sum := 0
	for _, v := range res {
		sum += v
	}
	*out = sum
	wg.Done()
}

func skynetWGRun() (time.Duration, int) {
	t0 := time.Now()
	var r int
	var wg sync.WaitGroup
	wg.Add(1)
	go skynetWG(&r, &wg, 0, skynetSize, skynetDiv)
	wg.Wait()
	return time.Since(t0), r
}

func runSkynet(name string, procs int, run func() (time.Duration, int)) {
	setProcs(procs)
	if _, r := run(); r != skynetResult { // warm-up
		fail("%s: result %d, want %d", name, r, skynetResult)
	}
	var ds []time.Duration
	for i := 0; i < *flagReps; i++ {
		d, r := run()
		if r != skynetResult {
			fail("%s: result %d, want %d", name, r, skynetResult)
		}
		ds = append(ds, d)
	}
	hwm := readStatusKB("VmHWM")
	logf("%s: result %d, runs %v", name, skynetResult, ds)
	emit(name, procs, "ms", float64(medianDuration(ds).Nanoseconds())/1e6, "ms")
	emit(name, procs, "peak_rss_mb", float64(hwm)/1024, "MiB")
}

func benchSkynet(procs int)   { runSkynet("skynet", procs, skynetRun) }
func benchSkynetWG(procs int) { runSkynet("skynet_wg", procs, skynetWGRun) }

// ---- parked ----------------------------------------------------------------

func benchParked(procs int) {
	setProcs(procs)
	n := 1000000
	if *flagN > 0 {
		n = *flagN
	}
	debug.FreeOSMemory() // GC and return free memory: a clean baseline
	before := rssBytes()

	var ready, gate, done sync.WaitGroup
	ready.Add(n)
	gate.Add(1)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			ready.Done()
			gate.Wait() // parked here until released
			done.Done()
		}()
	}
	ready.Wait()
	// Let the last ones reach gate.Wait (they are at most a few
	// instructions away), then measure with a forced GC.
	time.Sleep(50 * time.Millisecond)
	debug.FreeOSMemory()
	after := rssBytes()
	ngo := runtime.NumGoroutine()

	gate.Done()
	done.Wait()
	if ngo < n {
		fail("parked: only %d goroutines alive, want >= %d", ngo, n)
	}
	logf("parked: %d goroutines, RSS %.1f MiB -> %.1f MiB", n, float64(before)/(1<<20), float64(after)/(1<<20))
	emit("parked", procs, "bytes_per_fiber", float64(after-before)/float64(n), "bytes")
	emit("parked", procs, "rss_delta_mb", float64(after-before)/(1<<20), "MiB")
}
