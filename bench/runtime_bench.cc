// Copyright goro authors.
//
// Runtime benchmarks: context switches, spawn/join, skynet, the memory cost of
// a parked fiber, and timer precision -- plus OS-thread baselines for the same
// shapes. bench/compare.py runs each benchmark in a process of its own and
// prints it next to the Go 1.19 peer (bench/peers/go); the benchmark names and
// counters here are the ones it looks up, so keep them in step.
//
//   bazel run -c opt //bench:runtime_bench -- --benchmark_filter=BM_Skynet
//
// Conventions:
//   * Every goro benchmark starts its own runtime (goro::run) inside the
//     benchmark function. Where the per-operation cost is small, the Google
//     Benchmark iteration loop runs inside the main fiber, so starting and
//     stopping the runtime (threads, tens of microseconds) is outside the
//     timed region; per-operation figures are also reported as counters
//     computed from our own steady_clock readings.
//   * UseRealTime(): wall-clock time is what a user of an M:N runtime sees.
//     CPU time is the whole process's (MeasureProcessCPUTime), because the
//     loop may run on any of the runtime's threads.
//   * Workloads, sizes and sample counts match the Go peer exactly, so that
//     compare.py compares like with like.

#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "goro.h"

namespace {

using goro_bench::Clock;
using goro_bench::Median;
using goro_bench::NsSince;
using goro_bench::Percentile;
using goro_bench::WithProcs;

// Resident set size now, from /proc/self/statm (pages), in bytes.
long ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = -1;
  if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

// A "Key:   N kB" field of /proc/self/status, in KiB (-1 if absent).
long StatusKb(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long v = -1;
  const std::size_t n = std::strlen(key);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
      std::sscanf(line + n + 1, "%ld", &v);
      break;
    }
  }
  std::fclose(f);
  return v;
}

// ---------------------------------------------------------------------------
// BM_Yield
//
// Models: the cost of one cooperative context switch through the scheduler --
// the floor under every park/ready hand-off (channels, mutexes, WaitGroups).
// Two fibers running the same loop on one P each call goro::yield(), so every
// yield switches to the other; the main fiber waits (and starts a fresh pair
// every 2 x 100,000 switches). One benchmark iteration
// is one switch, so real_time per iteration and `ns_per_switch` are both
// nanoseconds per switch.
// Why these parameters: the shape of Go's peer exactly (two goroutines
// running one closure that calls runtime.Gosched, GOMAXPROCS=1, main waits);
// procs=1 isolates the switch itself. Two fibers running *different* code
// cost ~13 ns more per switch on this CPU (the return-stack predictor was
// trained on the other fiber's call chain); BM_Yield_Asymmetric shows that.
constexpr int kYieldBatch = 1000;  // switches per KeepRunningBatch

void BM_Yield(benchmark::State& state) {
  // Rounds of 2 x kYieldRound switches: main starts two fibers running the
  // very same loop and waits; the two spawns per round are noise (< 0.1 %).
  static constexpr int kYieldRound = 100000;
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    const Clock::time_point t0 = Clock::now();
    while (state.KeepRunningBatch(2 * kYieldRound)) {
      goro::WaitGroup wg;
      wg.add(2);
      for (int f = 0; f < 2; ++f) {
        goro::go([&wg] {
          for (int i = 0; i < kYieldRound; ++i) goro::yield();
          wg.done();
        });
      }
      wg.wait();
    }
    ns = NsSince(t0);
  });
  state.counters["ns_per_switch"] =
      ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Yield)->MeasureProcessCPUTime()->UseRealTime();

// BM_Yield_Asymmetric: as BM_Yield, but the timed loop runs in the main
// fiber and its partner in a different function: what switching between
// fibers that run different code costs (see above).
void BM_Yield_Asymmetric(benchmark::State& state) {
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    std::atomic<bool> stop{false};
    goro::WaitGroup partner_done;
    partner_done.add(1);
    goro::go([&] {
      while (!stop.load(std::memory_order_relaxed)) goro::yield();
      partner_done.done();
    });
    goro::yield();  // the partner starts (takes its stack) before timing
    const Clock::time_point t0 = Clock::now();
    while (state.KeepRunningBatch(kYieldBatch)) {
      for (int i = 0; i < kYieldBatch / 2; ++i) goro::yield();
    }
    ns = NsSince(t0);
    stop.store(true, std::memory_order_relaxed);
    partner_done.wait();
  });
  state.counters["ns_per_switch"] =
      ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Yield_Asymmetric)->MeasureProcessCPUTime()->UseRealTime();

// ---------------------------------------------------------------------------
// BM_SpawnJoin/procs:P
//
// Models: fork/join of tiny tasks -- creating a fiber, scheduling it for the
// first time (taking a stack), running it to completion and recycling it. Each
// iteration spawns N = 1,000,000 fibers that only call wg.done(), then waits;
// `ns_per_fiber` is the wall time per fiber.
// Why these parameters: 1,000,000 is large enough that the per-P caches
// (128 stacks, 128 fiber objects) overflow to the shared pools, as they do
// in a real fan-out, and it is exactly the Go peer's N (go wg.Done() x N,
// wg.Wait()). One untimed warm-up round first, as the peer does, so both
// measure a runtime whose pools are grown. procs 1 and 2: one CPU, and both
// CPUs of the benchmark machine (spawner and stealer in parallel).
constexpr int kSpawnN = 1'000'000;

void BM_SpawnJoin(benchmark::State& state) {
  const int procs = static_cast<int>(state.range(0));
  double total_ns = 0;
  goro::run(WithProcs(procs), [&] {
    auto round = [] {
      goro::WaitGroup wg;
      wg.add(kSpawnN);
      for (int i = 0; i < kSpawnN; ++i) goro::go([&wg] { wg.done(); });
      wg.wait();
    };
    round();  // warm-up
    for (auto _ : state) {
      const Clock::time_point t0 = Clock::now();
      round();
      total_ns += NsSince(t0);
    }
  });
  state.counters["ns_per_fiber"] =
      total_ns / (static_cast<double>(state.iterations()) * kSpawnN);
}
BENCHMARK(BM_SpawnJoin)
    ->ArgNames({"procs"})
    ->Arg(1)
    ->Arg(2)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// BM_Skynet/procs:P
//
// Models: massive, short-lived, nested concurrency -- the classic skynet
// benchmark (github.com/atemerev/skynet): a 10-ary tree of 1,111,111 fibers
// whose 1,000,000 leaves return their index; each inner node sums its 10
// children. Here a child writes its sum into its slot of the parent's array
// and the parent waits on a WaitGroup (the channel-free shape); the Go
// peer's like-for-like variant is skynet_wg. The root must be 499999500000.
// Counters: `ms`, the median wall time of one tree over the iterations, and
// `peak_rss_mb`, VmHWM of the process (process-wide: compare.py runs each
// benchmark in its own process, and so must you to read it alone).
// Why these parameters: 1M leaves is the benchmark's definition; one untimed
// warm-up tree and then 5 timed trees (median) mirror the Go peer.
constexpr long kSkynetSize = 1'000'000;
constexpr long kSkynetResult = 499'999'500'000;

void Skynet(long num, long size, long* out) {
  if (size == 1) {
    *out = num;
    return;
  }
  long results[10];
  goro::WaitGroup wg;
  const long sub = size / 10;
  wg.add(10);
  for (int i = 0; i < 10; ++i) {
    goro::go([&wg, out = &results[i], n = num + i * sub, sub] {
      Skynet(n, sub, out);
      wg.done();
    });
  }
  wg.wait();
  long sum = 0;
  for (long r : results) sum += r;
  *out = sum;
}

void BM_Skynet(benchmark::State& state) {
  const int procs = static_cast<int>(state.range(0));
  std::vector<double> ms;
  long bad = 0;
  goro::run(WithProcs(procs), [&] {
    long r = 0;
    Skynet(0, kSkynetSize, &r);  // warm-up
    if (r != kSkynetResult) bad = r;
    for (auto _ : state) {
      if (bad != 0) break;
      const Clock::time_point t0 = Clock::now();
      Skynet(0, kSkynetSize, &r);
      ms.push_back(NsSince(t0) / 1e6);
      if (r != kSkynetResult) bad = r;
    }
  });
  if (bad != 0) {
    const std::string msg = "skynet: result " + std::to_string(bad) +
                            ", want " + std::to_string(kSkynetResult);
    state.SkipWithError(msg.c_str());
    return;
  }
  state.counters["ms"] = Median(ms);
  state.counters["peak_rss_mb"] = static_cast<double>(StatusKb("VmHWM")) / 1024;
}
BENCHMARK(BM_Skynet)
    ->ArgNames({"procs"})
    ->Arg(1)
    ->Arg(2)
    ->Iterations(5)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// BM_ParkedFibers
//
// Models: a server holding a million idle connections, each served by a fiber
// blocked on something -- the memory an idle fiber costs. 1,000,000 fibers
// park on one WaitGroup; `bytes_per_fiber` = (RSS with all parked - RSS
// before spawning) / N, RSS from /proc/self/statm. The fiber objects, the
// touched stack pages and the waiter records are counted; kernel page tables
// for the stacks are not part of RSS, so they are reported separately as
// `pte_bytes_per_fiber` (VmPTE growth / N).
// Why these parameters: 1,000,000 is the scale the design promises and the
// Go peer's N; procs=1 like the peer. A fresh runtime per iteration (and
// malloc_trim first) so recycled fiber objects and stacks cannot hide the
// cost; like the peer, wait until every fiber has announced itself, then
// 50 ms more so the last ones reach the WaitGroup, then read RSS.
constexpr int kParkedN = 1'000'000;

void BM_ParkedFibers(benchmark::State& state) {
  double bytes_per_fiber = 0, pte_per_fiber = 0, delta_mb = 0;
  for (auto _ : state) {
    goro::run(WithProcs(1), [&] {
      malloc_trim(0);
      const long before = ResidentBytes();
      const long pte_before = StatusKb("VmPTE");
      goro::WaitGroup ready, gate, done;
      ready.add(kParkedN);
      gate.add(1);
      done.add(kParkedN);
      for (int i = 0; i < kParkedN; ++i) {
        goro::go([&] {
          ready.done();
          gate.wait();
          done.done();
        });
      }
      ready.wait();
      goro::sleep_for(std::chrono::milliseconds(50));
      const long after = ResidentBytes();
      const long pte_after = StatusKb("VmPTE");
      gate.done();
      done.wait();
      bytes_per_fiber = static_cast<double>(after - before) / kParkedN;
      pte_per_fiber =
          static_cast<double>(pte_after - pte_before) * 1024 / kParkedN;
      delta_mb = static_cast<double>(after - before) / (1 << 20);
    });
  }
  state.counters["bytes_per_fiber"] = bytes_per_fiber;
  state.counters["pte_bytes_per_fiber"] = pte_per_fiber;
  state.counters["rss_delta_mb"] = delta_mb;
}
BENCHMARK(BM_ParkedFibers)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// BM_SleepLateness/sleep_us:D
//
// Models: timer precision -- how late a fiber wakes from sleep_for(d): rate
// limiters, retry back-off, timeouts, periodic tickers. One fiber sleeps d
// repeatedly (procs 2, the rest of the runtime idle) and records actual -
// requested; counters `p50_us`, `p99_us`, `max_us`.
// Why these parameters: 10 us (tighter than any kernel tick), 100 us (a
// typical busy-poll/back-off step) and 1 ms (a common timeout granularity);
// 2000 samples (500 for 1 ms) after 20 warm-up sleeps, so p99 rests on 20
// samples (5 for 1 ms) -- as the Go peer does. On an idle runtime the
// lateness is dominated by the M's futex wake-up from the kernel.
void BM_SleepLateness(benchmark::State& state) {
  const auto d = std::chrono::microseconds(state.range(0));
  const int samples = state.range(0) >= 1000 ? 500 : 2000;
  std::vector<double> late_us;
  for (auto _ : state) {
    late_us.clear();
    late_us.reserve(static_cast<std::size_t>(samples));
    goro::run(WithProcs(2), [&] {
      goro::WaitGroup wg;
      wg.add(1);
      goro::go([&] {  // a fiber of its own, not main, like the Go peer
        for (int i = 0; i < 20; ++i) goro::sleep_for(d);
        for (int i = 0; i < samples; ++i) {
          const Clock::time_point t0 = Clock::now();
          goro::sleep_for(d);
          const double ns = NsSince(t0);
          late_us.push_back(
              (ns - std::chrono::duration<double, std::nano>(d).count()) / 1e3);
        }
        wg.done();
      });
      wg.wait();
    });
  }
  state.counters["max_us"] = *std::max_element(late_us.begin(), late_us.end());
  state.counters["p99_us"] = Percentile(late_us, 0.99);
  state.counters["p50_us"] = Percentile(late_us, 0.50);
}
BENCHMARK(BM_SleepLateness)
    ->ArgNames({"sleep_us"})
    ->Arg(10)
    ->Arg(100)
    ->Arg(1000)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// Baselines: the same shapes with plain OS threads, so the goro figures can be
// read against what the kernel alone costs on the machine at hand.

// BM_Baseline_ThreadSpawnJoin
//
// Models: BM_SpawnJoin with std::thread -- create 100 threads that each do
// nothing, then join them all; `ns_per_thread` is the wall time per thread.
// Why: 100 per batch is a realistic thread-per-task fork (more would hit
// thread limits and measure memory pressure, not spawning); it is the cost
// a fiber spawn replaces.
constexpr int kThreadBatch = 100;

void BM_Baseline_ThreadSpawnJoin(benchmark::State& state) {
  std::vector<std::thread> threads;
  threads.reserve(kThreadBatch);
  std::atomic<int> sink{0};
  double total_ns = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < kThreadBatch; ++i) {
      threads.emplace_back(
          [&sink] { sink.fetch_add(1, std::memory_order_relaxed); });
    }
    for (auto& t : threads) t.join();
    total_ns += NsSince(t0);
    threads.clear();
  }
  state.counters["ns_per_thread"] =
      total_ns / (static_cast<double>(state.iterations()) * kThreadBatch);
}
BENCHMARK(BM_Baseline_ThreadSpawnJoin)->MeasureProcessCPUTime()->UseRealTime();

// BM_Baseline_CondvarPingPong
//
// Models: the OS-thread equivalent of a fiber hand-off: two threads take
// turns through a std::mutex and a std::condition_variable (each turn is a
// futex wake of a sleeping thread and a futex wait). One iteration is one
// round trip (two hand-offs); `ns_per_switch` is half of it, to read against
// BM_Yield and channel ping-pong.
// Why: this is what a thread-per-connection server pays per message
// exchanged between threads; on 2 cores the threads may share a CPU or not,
// as the kernel decides -- as in production. The figure is bimodal on these
// VMs: ~5 us when both threads stay on one vCPU, 30-65 us when each wake-up
// has to rouse the other, halted vCPU.
void BM_Baseline_CondvarPingPong(benchmark::State& state) {
  std::mutex mu;
  std::condition_variable cv;
  int turn = 0;  // 0: main thread's turn, 1: partner's, -1: stop
  std::thread partner([&] {
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      cv.wait(l, [&] { return turn != 0; });
      if (turn < 0) return;
      turn = 0;
      cv.notify_one();
    }
  });
  const Clock::time_point t0 = Clock::now();
  for (auto _ : state) {
    std::unique_lock<std::mutex> l(mu);
    turn = 1;
    cv.notify_one();
    cv.wait(l, [&] { return turn == 0; });
  }
  const double ns = NsSince(t0);
  {
    std::lock_guard<std::mutex> l(mu);
    turn = -1;
  }
  cv.notify_one();
  partner.join();
  state.counters["ns_per_roundtrip"] =
      ns / static_cast<double>(state.iterations());
  state.counters["ns_per_switch"] =
      ns / (2.0 * static_cast<double>(state.iterations()));
}
BENCHMARK(BM_Baseline_CondvarPingPong)->MeasureProcessCPUTime()->UseRealTime();

// BM_Baseline_ThreadSleepLateness/sleep_us:D
//
// Models: BM_SleepLateness on a plain thread (std::this_thread::sleep_for,
// i.e. clock_nanosleep, with the thread's timer slack set to 1 ns as goro's
// threads do). This is the kernel's wake-up floor for a sleeping thread on
// this machine; an idle goro runtime waits for its next timer the same way
// (a futex wait with a deadline), so it cannot do much better.
// Why: same durations and sample counts as BM_SleepLateness.
void BM_Baseline_ThreadSleepLateness(benchmark::State& state) {
  const auto d = std::chrono::microseconds(state.range(0));
  const int samples = state.range(0) >= 1000 ? 500 : 2000;
  std::vector<double> late_us;
  for (auto _ : state) {
    late_us.clear();
    std::thread t([&] {
      prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
      for (int i = 0; i < 20; ++i) std::this_thread::sleep_for(d);
      for (int i = 0; i < samples; ++i) {
        const Clock::time_point t0 = Clock::now();
        std::this_thread::sleep_for(d);
        late_us.push_back(
            (NsSince(t0) -
             std::chrono::duration<double, std::nano>(d).count()) /
            1e3);
      }
    });
    t.join();
  }
  state.counters["max_us"] = *std::max_element(late_us.begin(), late_us.end());
  state.counters["p99_us"] = Percentile(late_us, 0.99);
  state.counters["p50_us"] = Percentile(late_us, 0.50);
}
BENCHMARK(BM_Baseline_ThreadSleepLateness)
    ->ArgNames({"sleep_us"})
    ->Arg(10)
    ->Arg(100)
    ->Arg(1000)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
