// Copyright goro authors.
//
// What the execution trace (diag/trace.h) costs while it runs.
//
//   bazel run -c opt //bench:trace_bench
//
// BM_Trace_Emit: one event written by a fiber (the producer's whole cost:
// the flag, the P's ring, the TSC read, the 32-byte store), with the writer
// thread draining and formatting on the other CPU. ns_per_event.
//
// BM_Trace_Yield/traced:0|1 and BM_Trace_PingPong/traced:0|1: the shapes of
// BM_Yield (runtime_bench.cc) and BM_Chan_PingPong/procs:1 (chan_bench.cc)
// without and with a trace running, so the difference is what tracing adds
// to a context switch or a channel round trip; events_per_op counts the
// events each operation writes (written + dropped), dropped_pct how many the
// writer could not keep up with. The trace goes to a file in TEST_TMPDIR or
// /tmp (written, then removed): the writer's formatting and writes compete
// with the fibers for this machine's two CPUs, as they would in a program.
//
// Why these parameters: the hot paths tracing touches are the switch and
// the park/ready pair, and these are their two cheapest users, so the
// relative cost shown is the worst case; a real program does work between
// switches.

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/bench_util.h"
#include "benchmark/benchmark.h"
#include "goro.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace {

using goro_bench::Clock;
using goro_bench::NsSince;
using goro_bench::WithProcs;

std::string TracePath() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/trace_bench." +
         std::to_string(::getpid()) + ".json";
}

// A trace with room for everything: big buffers, no size limit to speak of.
void StartTrace(benchmark::State& state) {
  goro::trace::Options o;
  o.buffer_events = std::size_t{1} << 20;
  o.max_bytes = std::size_t{1} << 40;
  if (!goro::trace::start(TracePath(), o).ok()) {
    state.SkipWithError("trace::start failed");
  }
}

// Stops the trace; sets events_per_op and dropped_pct for `ops` operations.
void StopTrace(benchmark::State& state, double ops) {
  const absl::StatusOr<goro::trace::Result> r = goro::trace::stop();
  ::unlink(TracePath().c_str());
  if (!r.ok()) {
    state.SkipWithError("trace::stop failed");
    return;
  }
  const double all = static_cast<double>(r->events + r->dropped);
  state.counters["events_per_op"] = all / ops;
  state.counters["dropped_pct"] =
      all > 0 ? 100.0 * static_cast<double>(r->dropped) / all : 0;
  state.counters["mb_written"] = static_cast<double>(r->bytes) / 1e6;
}

// BM_Trace_Emit: see the top of the file. The event is a kTimer (the
// cheapest site to call directly); every event costs the same to write.
void BM_Trace_Emit(benchmark::State& state) {
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    StartTrace(state);
    const Clock::time_point t0 = Clock::now();
    while (state.KeepRunningBatch(1000)) {
      goro::runtime_internal::MHold hold;  // as the scheduler's sites do
      for (int i = 0; i < 1000; ++i) goro::runtime_internal::trace_timer();
    }
    ns = NsSince(t0);
    StopTrace(state, static_cast<double>(state.iterations()));
  });
  state.counters["ns_per_event"] = ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Trace_Emit)->MeasureProcessCPUTime()->UseRealTime();

// BM_Trace_Yield/traced:T: BM_Yield's two fibers yielding to each other on
// one P; one iteration is one switch.
void BM_Trace_Yield(benchmark::State& state) {
  const bool traced = state.range(0) != 0;
  static constexpr int kRound = 100000;
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    if (traced) StartTrace(state);
    const Clock::time_point t0 = Clock::now();
    while (state.KeepRunningBatch(2 * kRound)) {
      goro::WaitGroup wg;
      wg.add(2);
      for (int f = 0; f < 2; ++f) {
        goro::go([&wg] {
          for (int i = 0; i < kRound; ++i) goro::yield();
          wg.done();
        });
      }
      wg.wait();
    }
    ns = NsSince(t0);
    if (traced) StopTrace(state, static_cast<double>(state.iterations()));
  });
  state.counters["ns_per_switch"] =
      ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Trace_Yield)
    ->ArgNames({"traced"})
    ->Arg(0)
    ->Arg(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// BM_Trace_PingPong/traced:T: BM_Chan_PingPong/procs:1; one iteration is
// one round trip (two hand-offs to a parked fiber).
void BM_Trace_PingPong(benchmark::State& state) {
  const bool traced = state.range(0) != 0;
  double ns = 0;
  goro::run(WithProcs(1), [&] {
    goro::Chan<int> ping(0), pong(0);
    goro::WaitGroup done;
    done.add(1);
    goro::go([ping, pong, &done]() mutable {
      while (auto v = ping.recv()) pong.send(*v + 1);
      done.done();
    });
    if (traced) StartTrace(state);
    const Clock::time_point t0 = Clock::now();
    int i = 0;
    while (state.KeepRunningBatch(1000)) {
      for (int k = 0; k < 1000; ++k, ++i) {
        ping.send(i);
        if (*pong.recv() != i + 1) state.SkipWithError("wrong reply");
      }
    }
    ns = NsSince(t0);
    if (traced) StopTrace(state, static_cast<double>(state.iterations()));
    ping.close();
    done.wait();
  });
  state.counters["ns_per_roundtrip"] =
      ns / static_cast<double>(state.iterations());
}
BENCHMARK(BM_Trace_PingPong)
    ->ArgNames({"traced"})
    ->Arg(0)
    ->Arg(1)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

}  // namespace
