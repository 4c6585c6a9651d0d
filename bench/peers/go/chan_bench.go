package main

import (
	"sync"
	"time"
)

// ---- chan_pingpong ---------------------------------------------------------

// pingPongRun does n round trips over two unbuffered channels between two
// goroutines (not counting main, which only starts and joins them).
func pingPongRun(n int) time.Duration {
	ping, pong := make(chan int), make(chan int)
	var wg sync.WaitGroup
	wg.Add(2)
	var el time.Duration
	go func() {
		defer wg.Done()
		for v := range ping {
			pong <- v
		}
	}()
	go func() {
		defer wg.Done()
		t0 := time.Now()
		for i := 0; i < n; i++ {
			ping <- i
			<-pong
		}
		el = time.Since(t0)
		close(ping)
	}()
	wg.Wait()
	return el
}

func benchChanPingPong(procs int) {
	setProcs(procs)
	n := calibrate(pingPongRun, *flagDuration)
	var ds []time.Duration
	for r := 0; r < 3; r++ {
		ds = append(ds, pingPongRun(n))
	}
	d := medianDuration(ds)
	logf("chan_pingpong: %d round trips, runs %v", n, ds)
	emit("chan_pingpong", procs, "ns_per_roundtrip", float64(d.Nanoseconds())/float64(n), "ns")
}

// ---- chan_buffered_mpmc ----------------------------------------------------

const mpmcProducers, mpmcConsumers, mpmcCap = 4, 4, 1024

func mpmcRun(total int) time.Duration {
	ch := make(chan int, mpmcCap)
	per := total / mpmcProducers
	total = per * mpmcProducers
	var prod, cons sync.WaitGroup
	counts := make([]int, mpmcConsumers)
	sums := make([]int, mpmcConsumers)
	t0 := time.Now()
	prod.Add(mpmcProducers)
	for p := 0; p < mpmcProducers; p++ {
		go func(p int) {
			defer prod.Done()
			for i := p * per; i < (p+1)*per; i++ {
				ch <- i
			}
		}(p)
	}
	cons.Add(mpmcConsumers)
	for c := 0; c < mpmcConsumers; c++ {
		go func(c int) {
			defer cons.Done()
			cnt, sum := 0, 0
			for v := range ch {
				cnt++
				sum += v
			}
			counts[c], sums[c] = cnt, sum
		}(c)
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	el := time.Since(t0)
	cnt, sum := 0, 0
	for c := range counts {
		cnt += counts[c]
		sum += sums[c]
	}
	if cnt != total || sum != total*(total-1)/2 {
		fail("chan_buffered_mpmc: received %d messages (sum %d), want %d (sum %d)", cnt, sum, total, total*(total-1)/2)
	}
	return el
}

func benchChanBufferedMPMC(procs int) {
	setProcs(procs)
	total := 10000000
	if *flagN > 0 {
		total = *flagN
	}
	mpmcRun(total / 10) // warm-up
	var rates []float64
	for r := 0; r < 3; r++ {
		d := mpmcRun(total)
		rates = append(rates, float64(total)/d.Seconds())
	}
	logf("chan_buffered_mpmc: %d messages, %dx%d, cap %d, rates %.0f", total, mpmcProducers, mpmcConsumers, mpmcCap, rates)
	emit("chan_buffered_mpmc", procs, "msgs_per_sec", medianFloat(rates), "msgs/s")
}

// ---- chan_uncontended ------------------------------------------------------

func uncontendedRun(n int) time.Duration {
	ch := make(chan int, 1)
	var el time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := 0
		t0 := time.Now()
		for i := 0; i < n; i++ {
			ch <- i
			s += <-ch
		}
		el = time.Since(t0)
		if s != n*(n-1)/2 {
			fail("chan_uncontended: sum %d, want %d", s, n*(n-1)/2)
		}
	}()
	<-done
	return el
}

func benchChanUncontended(procs int) {
	setProcs(procs)
	n := calibrate(uncontendedRun, *flagDuration)
	var ds []time.Duration
	for r := 0; r < 3; r++ {
		ds = append(ds, uncontendedRun(n))
	}
	d := medianDuration(ds)
	logf("chan_uncontended: %d send/recv pairs, runs %v", n, ds)
	emit("chan_uncontended", procs, "ns_per_pair", float64(d.Nanoseconds())/float64(n), "ns")
}

// ---- select_fanin ----------------------------------------------------------

const fanInProducers = 8

// fanInRun has 8 producers each send per messages on its own channel and
// one consumer receive all 8*per messages with a select over the 8 channels.
func fanInRun(per int) time.Duration {
	var chs [fanInProducers]chan int
	for i := range chs {
		chs[i] = make(chan int, *flagFanInBuf)
	}
	total := per * fanInProducers
	var wg sync.WaitGroup
	var el time.Duration
	var got [fanInProducers]int
	start := make(chan struct{})
	wg.Add(fanInProducers + 1)
	for p := 0; p < fanInProducers; p++ {
		go func(c chan int) {
			defer wg.Done()
			<-start
			for i := 0; i < per; i++ {
				c <- i
			}
		}(chs[p])
	}
	go func() {
		defer wg.Done()
		c0, c1, c2, c3, c4, c5, c6, c7 := chs[0], chs[1], chs[2], chs[3], chs[4], chs[5], chs[6], chs[7]
		t0 := time.Now()
		close(start)
		for i := 0; i < total; i++ {
			select {
			case <-c0:
				got[0]++
			case <-c1:
				got[1]++
			case <-c2:
				got[2]++
			case <-c3:
				got[3]++
			case <-c4:
				got[4]++
			case <-c5:
				got[5]++
			case <-c6:
				got[6]++
			case <-c7:
				got[7]++
			}
		}
		el = time.Since(t0)
	}()
	wg.Wait()
	for p, g := range got {
		if g != per {
			fail("select_fanin: %d messages from producer %d, want %d", g, p, per)
		}
	}
	return el
}

func benchSelectFanIn(procs int) {
	setProcs(procs)
	per := calibrate(fanInRun, *flagDuration)
	var ds []time.Duration
	for r := 0; r < 3; r++ {
		ds = append(ds, fanInRun(per))
	}
	d := medianDuration(ds)
	n := per * fanInProducers
	logf("select_fanin: %d messages (buf %d), runs %v", n, *flagFanInBuf, ds)
	emit("select_fanin", procs, "ns_per_msg", float64(d.Nanoseconds())/float64(n), "ns")
}

// ---- mutex -----------------------------------------------------------------

const mutexGoroutines = 8

func mutexRun(per int) time.Duration {
	var mu sync.Mutex
	counter := 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Add(mutexGoroutines)
	for g := 0; g < mutexGoroutines; g++ {
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	if counter != per*mutexGoroutines {
		fail("mutex: counter %d, want %d", counter, per*mutexGoroutines)
	}
	return el
}

func benchMutex(procs int) {
	setProcs(procs)
	per := 1000000
	if *flagN > 0 {
		per = *flagN
	}
	mutexRun(per / 10) // warm-up
	var ds []time.Duration
	for r := 0; r < 3; r++ {
		ds = append(ds, mutexRun(per))
	}
	d := medianDuration(ds)
	logf("mutex: %dx%d locks, runs %v", mutexGoroutines, per, ds)
	emit("mutex", procs, "ns_per_lock", float64(d.Nanoseconds())/float64(per*mutexGoroutines), "ns")
}
