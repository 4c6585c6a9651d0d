// Copyright goro authors.
//
// Channel, select and Mutex benchmarks. bench/compare.py runs each in a
// process of its own next to the Go 1.19 peer (bench/peers/go/chan_bench.go);
// the names and counters here are the ones it looks up, so keep them in step.
//
//   bazel run -c opt //bench:chan_bench -- --benchmark_filter=BM_Chan_PingPong
//
// Conventions (as runtime_bench.cc): every benchmark starts its own runtime
// inside the benchmark function; the timed loop runs inside the main fiber
// and per-operation figures are counters computed from our own steady_clock
// readings; wall-clock time (UseRealTime). Workloads and sizes match the Go
// peer, so compare.py compares like with like.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "goro.h"

namespace {

using goro_bench::Clock;
using goro_bench::NsSince;
using goro_bench::WithProcs;

// ---------------------------------------------------------------------------
// BM_Chan_PingPong/procs:P
//
// Models: a request/response exchange between two fibers -- the cost of an
// unbuffered hand-off to a parked fiber, twice per round trip (two sends
// straight into a parked receiver, two parks, two ready()s). The main fiber
// sends i on `ping` and waits for i+1 on `pong`; one iteration is one round
// trip. procs 1 and 2, as the Go peer (2 Ps: the partner may be stolen and
// the wake-ups then cross CPUs).
constexpr int kPingBatch = 1000;

void BM_Chan_PingPong(benchmark::State& state) {
  const int procs = static_cast<int>(state.range(0));
  double ns = 0;
  goro::run(WithProcs(procs), [&] {
    goro::Chan<int> ping(0), pong(0);
    goro::WaitGroup done;
    done.add(1);
    goro::go([ping, pong, &done]() mutable {
      while (auto v = ping.recv()) pong.send(*v + 1);
      done.done();
    });
    for (int i = 0; i < 1000; ++i) {  // warm-up
      ping.send(i);
      pong.recv();
    }
    const Clock::time_point t0 = Clock::now();
    int i = 0;
    while (state.KeepRunningBatch(kPingBatch)) {
      for (int k = 0; k < kPingBatch; ++k, ++i) {
        ping.send(i);
        if (*pong.recv() != i + 1) state.SkipWithError("wrong reply");
      }
    }
    ns = NsSince(t0);
    ping.close();
    done.wait();
  });
  state.counters["ns_per_roundtrip"] =
      ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Chan_PingPong)
    ->ArgNames({"procs"})
    ->Arg(1)
    ->Arg(2)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// ---------------------------------------------------------------------------
// BM_Chan_BufferedMPMC
//
// Models: a contended work queue -- 4 producers and 4 consumers share one
// channel of capacity 1024 on 2 Ps; 10,000,000 messages in all; consumers
// count and sum, and the run fails unless every message arrived once.
// Exactly the Go peer's shape; one 1/10-size warm-up first. One benchmark
// iteration is one full run; compare.py asks for 3 repetitions (median).
constexpr int kMpmcProducers = 4, kMpmcConsumers = 4, kMpmcCap = 1024;
constexpr std::int64_t kMpmcTotal = 10'000'000;

bool MpmcRun(std::int64_t total) {
  goro::Chan<std::int64_t> ch(kMpmcCap);
  goro::WaitGroup prod, cons;
  std::int64_t counts[kMpmcConsumers] = {}, sums[kMpmcConsumers] = {};
  const std::int64_t per = total / kMpmcProducers;
  prod.add(kMpmcProducers);
  for (int p = 0; p < kMpmcProducers; ++p) {
    goro::go([ch, p, per, &prod]() mutable {
      for (std::int64_t i = p * per; i < (p + 1) * per; ++i) ch.send(i);
      prod.done();
    });
  }
  cons.add(kMpmcConsumers);
  for (int c = 0; c < kMpmcConsumers; ++c) {
    goro::go([ch, c, &counts, &sums, &cons]() mutable {
      std::int64_t n = 0, s = 0;
      for (std::int64_t v : ch) {
        ++n;
        s += v;
      }
      counts[c] = n;
      sums[c] = s;
      cons.done();
    });
  }
  prod.wait();
  ch.close();
  cons.wait();
  std::int64_t n = 0, s = 0;
  for (int c = 0; c < kMpmcConsumers; ++c) {
    n += counts[c];
    s += sums[c];
  }
  const std::int64_t want = per * kMpmcProducers;
  return n == want && s == want * (want - 1) / 2;
}

void BM_Chan_BufferedMPMC(benchmark::State& state) {
  double ns = 0;
  bool ok = true;
  goro::run(WithProcs(2), [&] {
    ok = MpmcRun(kMpmcTotal / 10);  // warm-up
    for (auto _ : state) {
      const Clock::time_point t0 = Clock::now();
      ok = MpmcRun(kMpmcTotal) && ok;
      ns += NsSince(t0);
    }
  });
  if (!ok) state.SkipWithError("lost or duplicated messages");
  state.counters["msgs_per_sec"] = static_cast<double>(kMpmcTotal) *
                                   static_cast<double>(state.iterations()) /
                                   (ns * 1e-9);
}
BENCHMARK(BM_Chan_BufferedMPMC)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// BM_Chan_Uncontended
//
// Models: the channel fast path with no waiter and no contention -- one fiber
// sends then receives on a buffered channel of capacity 1 (one lock each, no
// park). procs 1, as the Go peer. One iteration is one send+recv pair.
constexpr int kPairBatch = 1000;

void BM_Chan_Uncontended(benchmark::State& state) {
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    goro::Chan<int> ch(1);
    std::int64_t sum = 0;
    const Clock::time_point t0 = Clock::now();
    while (state.KeepRunningBatch(kPairBatch)) {
      for (int i = 0; i < kPairBatch; ++i) {
        ch.send(i);
        sum += *ch.recv();
      }
    }
    ns = NsSince(t0);
    benchmark::DoNotOptimize(sum);
  });
  state.counters["ns_per_pair"] = ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Chan_Uncontended)->MeasureProcessCPUTime()->UseRealTime();

// ---------------------------------------------------------------------------
// BM_Select_FanIn
//
// Models: a multiplexing event loop -- 8 producers each send on their own
// unbuffered channel and one consumer receives every message through a
// select over the 8 channels (a fixed 8-case goro::select, as the Go peer's
// select statement). procs 2. 8 x 125,000 messages per iteration (the Go
// peer calibrates to ~1 s); each producer's count is checked.
constexpr int kFanIn = 8;
constexpr int kFanInPer = 125'000;

bool FanInRun(int per) {
  std::vector<goro::Chan<int>> chs;
  for (int i = 0; i < kFanIn; ++i) chs.emplace_back(0);
  goro::WaitGroup wg;
  wg.add(kFanIn);
  for (int p = 0; p < kFanIn; ++p) {
    goro::go([c = chs[p], per, &wg]() mutable {
      for (int i = 0; i < per; ++i) c.send(i);
      wg.done();
    });
  }
  int got[kFanIn] = {};
  auto on = [&got](int k) { return [&got, k] { ++got[k]; }; };
  for (int m = 0; m < per * kFanIn; ++m) {
    goro::select(goro::recv_case(chs[0], on(0)), goro::recv_case(chs[1], on(1)),
                 goro::recv_case(chs[2], on(2)), goro::recv_case(chs[3], on(3)),
                 goro::recv_case(chs[4], on(4)), goro::recv_case(chs[5], on(5)),
                 goro::recv_case(chs[6], on(6)),
                 goro::recv_case(chs[7], on(7)));
  }
  wg.wait();
  for (int k = 0; k < kFanIn; ++k) {
    if (got[k] != per) return false;
  }
  return true;
}

void BM_Select_FanIn(benchmark::State& state) {
  double ns = 0;
  bool ok = true;
  goro::run(WithProcs(2), [&] {
    ok = FanInRun(kFanInPer / 10);  // warm-up
    for (auto _ : state) {
      const Clock::time_point t0 = Clock::now();
      ok = FanInRun(kFanInPer) && ok;
      ns += NsSince(t0);
    }
  });
  if (!ok) state.SkipWithError("wrong per-producer counts");
  state.counters["ns_per_msg"] =
      ns / (static_cast<double>(state.iterations()) * kFanIn * kFanInPer);
}
BENCHMARK(BM_Select_FanIn)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// BM_Mutex_Contended, and the std::mutex baseline BM_StdMutex_Contended
//
// Models: a hot lock under oversubscription -- 8 fibers each do 1,000,000
// lock / counter++ / unlock on one goro::Mutex on 2 Ps (the Go peer's shape);
// `ns_per_lock` is total time / 8,000,000. The baseline is 8 OS threads on a
// std::mutex, the same work.
constexpr int kMutexWorkers = 8;
constexpr int kMutexPer = 1'000'000;

template <typename Mu, typename Spawn, typename Join>
double MutexRun(Mu& mu, int per, Spawn spawn, Join join) {
  std::int64_t counter = 0;
  std::atomic<bool> go{false};
  const Clock::time_point t0 = Clock::now();
  for (int w = 0; w < kMutexWorkers; ++w) {
    spawn([&mu, &counter, per] {
      for (int i = 0; i < per; ++i) {
        mu.lock();
        ++counter;
        mu.unlock();
      }
    });
  }
  join();
  const double ns = NsSince(t0);
  return counter == std::int64_t{per} * kMutexWorkers ? ns : -1;
}

void BM_Mutex_Contended(benchmark::State& state) {
  double ns = 0;
  bool ok = true;
  goro::run(WithProcs(2), [&] {
    goro::Mutex mu;
    auto run = [&](int per) {
      goro::WaitGroup wg;
      return MutexRun(
          mu, per,
          [&wg](auto fn) {
            wg.add(1);
            goro::go([fn, &wg] {
              fn();
              wg.done();
            });
          },
          [&wg] { wg.wait(); });
    };
    ok = run(kMutexPer / 10) >= 0;  // warm-up
    for (auto _ : state) {
      const double r = run(kMutexPer);
      ok = ok && r >= 0;
      ns += r;
    }
  });
  if (!ok) state.SkipWithError("wrong counter");
  state.counters["ns_per_lock"] =
      ns /
      (static_cast<double>(state.iterations()) * kMutexWorkers * kMutexPer);
}
BENCHMARK(BM_Mutex_Contended)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_StdMutex_Contended(benchmark::State& state) {
  double ns = 0;
  std::mutex mu;
  for (auto _ : state) {
    std::vector<std::thread> ts;
    ns += MutexRun(
        mu, kMutexPer, [&ts](auto fn) { ts.emplace_back(fn); },
        [&ts] {
          for (auto& t : ts) t.join();
        });
  }
  state.counters["ns_per_lock"] =
      ns /
      (static_cast<double>(state.iterations()) * kMutexWorkers * kMutexPer);
}
BENCHMARK(BM_StdMutex_Contended)
    ->Iterations(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
