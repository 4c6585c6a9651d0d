package main

// echo: the in-process TCP echo benchmark of bench/README.md ("Echo"), the
// peer of goro's tools/echo_load --serve: -echo_conns connections, each doing
// -echo_size-byte request/response round trips back to back over loopback,
// with the echo server in the same process. Every echoed byte is checked.

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

var (
	flagEchoConns = flag.Int("echo_conns", 64, "echo: connections")
	flagEchoSize  = flag.Int("echo_size", 64, "echo: bytes per request")
	flagEchoDur   = flag.Duration("echo_duration", 5*time.Second, "echo: measuring time (after a 500 ms warm-up)")
	flagEchoAddr  = flag.String("echo_listen", "127.0.0.1:0", "echo_server: address to listen on")
)

func init() {
	benchmarks = append(benchmarks,
		benchmark{"echo", []int{2}, benchEcho},
		benchmark{"echo_server", []int{2}, echoServer})
}

// echoServer is not a benchmark but the peer of tools/echo_server: the echo
// server of benchEcho alone, serving -echo_listen until killed, for
// bench/echo_idle_cpu.py, which measures the CPU it burns at low load. It
// prints its address on stdout.
func echoServer(procs int) {
	setProcs(procs)
	ln, err := net.Listen("tcp", *flagEchoAddr)
	if err != nil {
		fail("echo_server: listen: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	serveEcho(ln)
}

// serveEcho runs one goroutine per connection, echoing until the peer
// closes; it returns when the listener is closed.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(c net.Conn) {
			buf := make([]byte, 16384)
			for {
				n, err := c.Read(buf)
				if err != nil || n == 0 {
					break
				}
				if _, err := c.Write(buf[:n]); err != nil {
					break
				}
			}
			c.Close()
		}(c)
	}
}

func benchEcho(procs int) {
	setProcs(procs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("echo: listen: %v", err)
	}
	go serveEcho(ln)
	conns := *flagEchoConns
	size := *flagEchoSize
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			fail("echo: dial: %v", err)
		}
		cs[i] = c
	}
	var stop, counting atomic.Bool
	var bad int64
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	wg.Add(conns)
	for i := 0; i < conns; i++ {
		go func(i int) {
			defer wg.Done()
			c := cs[i]
			req := make([]byte, size)
			resp := make([]byte, size)
			mine := make([]time.Duration, 0, 1<<16)
			for r := 0; !stop.Load(); r++ {
				for k := range req {
					req[k] = byte(i*31 + r*7 + k)
				}
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					fail("echo: write: %v", err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					fail("echo: read: %v", err)
				}
				d := time.Since(t0)
				if !bytes.Equal(req, resp) {
					atomic.AddInt64(&bad, 1)
				}
				if counting.Load() {
					mine = append(mine, d)
				}
			}
			lat[i] = mine
			c.Close()
		}(i)
	}
	time.Sleep(500 * time.Millisecond)
	counting.Store(true)
	start := time.Now()
	time.Sleep(*flagEchoDur)
	stop.Store(true)
	wg.Wait()
	secs := time.Since(start).Seconds()
	ln.Close()
	var all []time.Duration
	for _, v := range lat {
		all = append(all, v...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	if bad != 0 {
		fail("echo: %d round trips echoed wrong bytes", bad)
	}
	name := "echo_c" + itoa(conns)
	emit(name, procs, "rt_per_s", float64(len(all))/secs, "1/s")
	emit(name, procs, "p50_us", us(percentile(all, 50)), "us")
	emit(name, procs, "p99_us", us(percentile(all, 99)), "us")
	emit(name, procs, "p999_us", us(percentile(all, 99.9)), "us")
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
