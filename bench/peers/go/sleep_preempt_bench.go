package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ---- sleep_lateness --------------------------------------------------------

func benchSleepLateness(procs int) {
	setProcs(procs)
	durations := []int{10, 100, 1000}
	if *flagSleepUS > 0 {
		durations = []int{*flagSleepUS}
	}
	for _, dus := range durations {
		d := time.Duration(dus) * time.Microsecond
		samples := *flagSamples
		if samples <= 0 {
			samples = 2000
			if d >= time.Millisecond {
				samples = 500
			}
		}
		var lat []time.Duration
		done := make(chan struct{})
		// The sleeper is a goroutine of its own (not main), like goro's fiber.
		go func() {
			defer close(done)
			for i := 0; i < 20; i++ { // warm-up
				time.Sleep(d)
			}
			lat = make([]time.Duration, 0, samples)
			for i := 0; i < samples; i++ {
				t0 := time.Now()
				time.Sleep(d)
				lat = append(lat, time.Since(t0)-d)
			}
		}()
		<-done
		emitLateness(fmt.Sprintf("sleep_lateness/sleep_us:%d", dus), procs, lat)
	}
}

// ---- preempt_lateness ------------------------------------------------------

var sink atomic.Int64

// spin counts until stop is set. The loop makes no calls, so only the
// runtime's asynchronous (signal-based) preemption can take the P away.
func spin(stop *atomic.Bool) int64 {
	var n int64
	for !stop.Load() {
		n++
	}
	return n
}

func benchPreemptLateness(procs int) {
	setProcs(procs)
	const d = time.Millisecond
	var stop atomic.Bool
	var wg sync.WaitGroup
	var lat []time.Duration
	wg.Add(2)
	go func() {
		defer wg.Done()
		sink.Add(spin(&stop))
	}()
	go func() {
		defer wg.Done()
		defer stop.Store(true)
		for i := 0; i < 3; i++ { // warm-up; also lets the spinner get going
			time.Sleep(d)
		}
		t0 := time.Now()
		for time.Since(t0) < *flagPreemptD {
			s := time.Now()
			time.Sleep(d)
			lat = append(lat, time.Since(s)-d)
		}
	}()
	wg.Wait()
	emitLateness("preempt_lateness", procs, lat)
}

// ---- preempt_fairness ------------------------------------------------------

func benchPreemptFairness(procs int) {
	setProcs(procs)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var a, b int64
	wg.Add(2)
	go func() { defer wg.Done(); a = spin(&stop) }()
	go func() { defer wg.Done(); b = spin(&stop) }()
	t0 := time.Now()
	time.Sleep(*flagFairD)
	stop.Store(true)
	el := time.Since(t0)
	wg.Wait()
	total := float64(a + b)
	if total == 0 {
		fail("preempt_fairness: no iterations")
	}
	logf("preempt_fairness: a=%d b=%d iterations in %v", a, b, el)
	emit("preempt_fairness", procs, "share_a_pct", 100*float64(a)/total, "%")
	emit("preempt_fairness", procs, "share_b_pct", 100*float64(b)/total, "%")
}
