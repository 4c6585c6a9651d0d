// Command goro-peer runs Go 1.19 peer benchmarks for the goro runtime.
//
// Usage:
//
//	goro-peer -bench=NAME [-procs=N] [flags]
//	goro-peer -bench=all          # every benchmark, each in its own process
//	goro-peer -list               # benchmark names and default procs
//
// Each run prints one JSON object per line on stdout:
//
//	{"name": "...", "procs": N, "metric": "...", "value": X, "unit": "..."}
//
// Diagnostics go to stderr. A failed correctness check exits with status 1.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// benchmark describes one workload. run is called once per procs value,
// in a process of its own when more than one procs value is run.
type benchmark struct {
	name         string
	defaultProcs []int
	run          func(procs int)
}

var benchmarks = []benchmark{
	{"yield", []int{1}, benchYield},
	{"spawn_join", []int{1, 2}, benchSpawnJoin},
	{"skynet", []int{1, 2}, benchSkynet},
	{"skynet_wg", []int{1, 2}, benchSkynetWG},
	{"parked", []int{1}, benchParked},
	{"sleep_lateness", []int{2}, benchSleepLateness},
	{"preempt_lateness", []int{1}, benchPreemptLateness},
	{"preempt_fairness", []int{1}, benchPreemptFairness},
	{"chan_pingpong", []int{1, 2}, benchChanPingPong},
	{"chan_buffered_mpmc", []int{2}, benchChanBufferedMPMC},
	{"chan_uncontended", []int{1}, benchChanUncontended},
	{"select_fanin", []int{2}, benchSelectFanIn},
	{"mutex", []int{2}, benchMutex},
}

var (
	flagBench    = flag.String("bench", "", "benchmark name, or \"all\"")
	flagProcs    = flag.Int("procs", 0, "GOMAXPROCS; 0 runs the benchmark's default procs values")
	flagList     = flag.Bool("list", false, "list benchmarks and their default procs, then exit")
	flagN        = flag.Int("n", 0, "problem size override (goroutines for spawn_join/parked, messages for chan_buffered_mpmc, per-goroutine locks for mutex)")
	flagReps     = flag.Int("reps", 5, "measured repetitions (the median is reported) for spawn_join, skynet, skynet_wg")
	flagDuration = flag.Duration("duration", time.Second, "target measuring time for the time-calibrated loops (yield, chan_*, select_fanin)")
	flagSleepUS  = flag.Int("sleep_us", 0, "sleep_lateness: requested sleep in µs; 0 runs 10, 100 and 1000")
	flagSamples  = flag.Int("samples", 0, "sleep_lateness: samples per duration (0: 2000, or 500 for >= 1 ms)")
	flagPreemptD = flag.Duration("preempt_duration", 2500*time.Millisecond, "preempt_lateness: measuring time")
	flagFairD    = flag.Duration("fair_duration", time.Second, "preempt_fairness: measuring time")
	flagFanInBuf = flag.Int("fanin_buf", 0, "select_fanin: capacity of each producer's channel (0 = unbuffered)")
)

func main() {
	flag.Parse()
	if *flagList {
		for _, b := range benchmarks {
			fmt.Printf("%-20s procs=%v\n", b.name, b.defaultProcs)
		}
		return
	}
	if *flagBench == "" {
		fmt.Fprintln(os.Stderr, "goro-peer: -bench=NAME required (or -list)")
		flag.Usage()
		os.Exit(2)
	}
	if *flagBench == "all" {
		ok := true
		for _, b := range benchmarks {
			if b.name == "echo_server" {
				continue // serves until killed: not a benchmark
			}
			procsList := b.defaultProcs
			if *flagProcs > 0 {
				procsList = []int{*flagProcs}
			}
			for _, p := range procsList {
				if !reexec(b.name, p) {
					ok = false
				}
			}
		}
		if !ok {
			os.Exit(1)
		}
		return
	}
	var bench *benchmark
	for i := range benchmarks {
		if benchmarks[i].name == *flagBench {
			bench = &benchmarks[i]
		}
	}
	if bench == nil {
		fmt.Fprintf(os.Stderr, "goro-peer: unknown benchmark %q (try -list)\n", *flagBench)
		os.Exit(2)
	}
	if *flagProcs > 0 {
		bench.run(*flagProcs)
		return
	}
	if len(bench.defaultProcs) == 1 {
		bench.run(bench.defaultProcs[0])
		return
	}
	// Several procs values: one process each, so that peak RSS and the
	// runtime's caches of one run do not leak into the next.
	ok := true
	for _, p := range bench.defaultProcs {
		if !reexec(bench.name, p) {
			ok = false
		}
	}
	if !ok {
		os.Exit(1)
	}
}

// reexec runs this binary again for one benchmark and procs value, passing
// the other flags through, and copies its output.
func reexec(name string, procs int) bool {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goro-peer:", err)
		return false
	}
	args := []string{"-bench=" + name, "-procs=" + strconv.Itoa(procs)}
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "bench" && f.Name != "procs" {
			args = append(args, "-"+f.Name+"="+f.Value.String())
		}
	})
	cmd := exec.Command(self, args...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "goro-peer: %s procs=%d failed: %v\n", name, procs, err)
		return false
	}
	return true
}

var out = bufio.NewWriter(os.Stdout)

// emit prints one result line.
func emit(name string, procs int, metric string, value float64, unit string) {
	n, _ := json.Marshal(name)
	m, _ := json.Marshal(metric)
	u, _ := json.Marshal(unit)
	fmt.Fprintf(out, "{\"name\": %s, \"procs\": %d, \"metric\": %s, \"value\": %s, \"unit\": %s}\n",
		n, procs, m, formatValue(value), u)
	out.Flush()
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "null"
	case math.Abs(v) >= 1e5:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goro-peer: FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func setProcs(procs int) {
	runtime.GOMAXPROCS(procs)
	if got := runtime.GOMAXPROCS(0); got != procs {
		fail("GOMAXPROCS=%d, wanted %d", got, procs)
	}
}

// medianDuration returns the median of ds (mean of the middle two for even len).
func medianDuration(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianFloat(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the nearest-rank p-th percentile of sorted s.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// emitLateness prints p50/p99/max (µs) of lateness samples.
func emitLateness(name string, procs int, samples []time.Duration) {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	emit(name, procs, "p50_us", us(percentile(s, 50)), "us")
	emit(name, procs, "p99_us", us(percentile(s, 99)), "us")
	emit(name, procs, "max_us", us(s[len(s)-1]), "us")
	logf("%s: %d samples, min %.1f us", name, len(s), us(s[0]))
}

// calibrate returns an iteration count for which fn(n) takes about target.
// fn(n) runs n iterations and returns the elapsed time. The calibration
// runs double as warm-up.
func calibrate(fn func(n int) time.Duration, target time.Duration) int {
	n := 1000
	for {
		d := fn(n)
		if d >= target/10 || n >= 1<<40 {
			if d <= 0 {
				d = 1
			}
			scaled := float64(n) * float64(target) / float64(d)
			if scaled < 1 {
				scaled = 1
			}
			return int(scaled)
		}
		n *= 4
	}
}

// readStatusKB returns a "Key:   N kB" field of /proc/self/status, in kB.
func readStatusKB(key string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fail("reading /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line[len(key)+1:])
			if len(f) >= 1 {
				v, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return v
				}
			}
		}
	}
	fail("no %s in /proc/self/status", key)
	return 0
}

// rssBytes returns the resident set size from /proc/self/statm.
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fail("reading /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		fail("bad /proc/self/statm: %q", data)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		fail("bad /proc/self/statm: %q", data)
	}
	return pages * int64(os.Getpagesize())
}
