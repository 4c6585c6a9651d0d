// goro demo: go()-style fibers spread over workers, and preemption of tight
// loops.
//
//   bash tools/demo.sh            (or: bazel run //tools:demo)
//
// Part 1 spawns CPU-bound fibers on every proc and shows which OS threads ran
// them. Part 2 runs, on ONE proc, three fibers spinning in call-free loops
// next to a heartbeat fiber that wants to wake every 50 ms: with async
// preemption (the default) the heartbeat keeps its rhythm; with
// GORO_ASYNCPREEMPT=0 it stalls until the spinners give up on their own.

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "goro.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// A loop with no calls at all: only asynchronous preemption can stop it.
__attribute__((noinline)) std::uint64_t spin(const std::atomic<bool>& stop,
                                             std::uint64_t limit) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed) && n < limit) ++n;
  return n;
}

void spread() {
  std::printf("== 1. fibers spread over workers ==\n");
  std::mutex mu;
  std::map<long, int> per_thread;  // OS thread id -> fibers run
  goro::run([&] {
    goro::WaitGroup wg;
    for (int i = 0; i < 64; ++i) {
      wg.add(1);
      goro::go([&] {
        volatile double x = 0;
        for (int k = 0; k < 2000000; ++k) x = x + k * 0.5;
        long tid = syscall(SYS_gettid);
        {
          std::lock_guard<std::mutex> l(mu);
          ++per_thread[tid];
        }
        wg.done();
      });
    }
    wg.wait();
    goro::Stats st = goro::stats();
    std::printf("procs %d, threads %d, fibers created %llu, steals %llu\n",
                st.procs, st.threads,
                static_cast<unsigned long long>(st.fibers_created),
                static_cast<unsigned long long>(st.steals));
  });
  for (auto& [tid, n] : per_thread) {
    std::printf("  OS thread %ld ran %d fibers\n", tid, n);
  }
}

void spinners(const char* title, std::uint64_t limit) {
  std::printf("\n== %s ==\n", title);
  goro::Options o;
  o.procs = 1;
  goro::run(o, [&] {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> total{0};
    goro::WaitGroup wg;
    for (int i = 0; i < 3; ++i) {
      wg.add(1);
      goro::go([&] {
        total += spin(stop, limit);
        wg.done();
      });
    }
    wg.add(1);
    goro::go([&] {
      auto start = Clock::now();
      for (int beat = 0; beat < 10; ++beat) {
        auto t = Clock::now();
        goro::sleep_for(std::chrono::milliseconds(50));
        std::printf("  heartbeat %d at %6.1f ms, late by %7.2f ms\n", beat,
                    ms_since(start), ms_since(t) - 50.0);
        std::fflush(stdout);
      }
      stop = true;
      wg.done();
    });
    wg.wait();
    goro::Stats st = goro::stats();
    std::printf(
        "spinner iterations %llu; preemptions: %llu async, %llu cooperative; "
        "signals %llu\n",
        static_cast<unsigned long long>(total.load()),
        static_cast<unsigned long long>(st.preemptions_async),
        static_cast<unsigned long long>(st.preemptions_cooperative),
        static_cast<unsigned long long>(st.signals_sent));
  });
}

}  // namespace

int main() {
  spread();
  // Calibrate: how many iterations make ~300 ms of spinning, so the
  // cooperative run below ends by itself.
  std::atomic<bool> never{false};
  auto t = Clock::now();
  std::uint64_t probe = spin(never, 200000000);
  double per_ms = probe / std::max(ms_since(t), 1.0);
  std::uint64_t limit = static_cast<std::uint64_t>(per_ms * 300);

  spinners("2. one proc, 3 tight loops + a 50 ms heartbeat, async preemption",
           ~0ULL);
  setenv("GORO_ASYNCPREEMPT", "0", 1);
  spinners(
      "3. the same with GORO_ASYNCPREEMPT=0 (each spinner gives up after "
      "~300 ms)",
      limit);
  return 0;
}
