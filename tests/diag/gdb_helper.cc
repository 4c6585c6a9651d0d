// Copyright goro authors.
//
// gdb_helper: the program tests/diag/gdb_test.cc runs under gdb. It parks
// named fibers in known functions -- "receiver" in WaitForJob (chan
// receive), "locker" in TakeTheLock (mutex lock), "sleeper" in Nap
// (sleep) -- and starts two call-free spinners ("spinner-a", "spinner-b",
// in SpinForever) on two Ps, so that at least one of them is switched out
// by asynchronous preemption; then it calls GdbReady(), where gdb has a
// breakpoint. The fibers' ids are in g_fiber_ids for the test's `fiber N`
// commands. Run without gdb it returns once ready (exit status 0).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

#include "goro.h"

// Read by gdb (the test's commands): the ids of receiver, locker, sleeper.
extern "C" {
std::uint64_t g_receiver_id = 0;
std::uint64_t g_locker_id = 0;
std::uint64_t g_sleeper_id = 0;
// Nonzero once a spinner has been preempted asynchronously (so gdb can
// expect a "preempted" fiber).
int g_preempted = 0;
int g_spare_lent = 0;  // sysmon lent a spare P during the run
// main's own dump showed a spinner [preempted] before GdbReady
int g_dump_preempted = 0;

// gdb breaks here. noinline and an asm barrier so it stays a real call.
__attribute__((noinline)) void GdbReady() { asm volatile("" ::: "memory"); }
}

namespace {

using namespace std::chrono_literals;

std::atomic<bool> g_stop{false};
std::atomic<std::uint64_t> g_spins[2];

// Each noinline with work after the wait, so each stays a frame of its own
// (not a tail call).
__attribute__((noinline)) int WaitForJob(goro::Chan<int> jobs) {
  auto v = jobs.recv();
  return v ? *v : -1;
}

__attribute__((noinline)) void TakeTheLock(goro::Mutex* mu) {
  mu->lock();
  mu->unlock();
}

__attribute__((noinline)) void Nap() {
  goro::sleep_for(1h);
  std::printf("napped\n");
}

// Call-free: only asynchronous preemption switches it out.
__attribute__((noinline)) void SpinForever(std::atomic<std::uint64_t>* n) {
  while (!g_stop.load(std::memory_order_relaxed)) {
    n->store(n->load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
}

}  // namespace

int main() {
  goro::Options o;
  o.procs = 2;
  return goro::run(o, [] {
    goro::Chan<int> jobs(0);
    goro::Mutex mu;
    mu.lock();
    goro::WaitGroup wg;
    wg.add(5);
    goro::go({.name = "receiver"}, [&] {
      g_receiver_id = goro::this_fiber::id();
      WaitForJob(jobs);
      wg.done();
    });
    goro::go({.name = "locker"}, [&] {
      g_locker_id = goro::this_fiber::id();
      TakeTheLock(&mu);
      wg.done();
    });
    goro::go({.name = "sleeper"}, [&] {
      g_sleeper_id = goro::this_fiber::id();
      Nap();
      wg.done();
    });
    const std::uint64_t async0 = goro::stats().preemptions_async;
    goro::go({.name = "spinner-a"}, [&] {
      SpinForever(&g_spins[0]);
      wg.done();
    });
    goro::go({.name = "spinner-b"}, [&] {
      SpinForever(&g_spins[1]);
      wg.done();
    });
    // Both spinners have run, and at least one asynchronous preemption
    // happened. Bounded: without asynchronous preemption (ThreadSanitizer)
    // the spinners are never preempted, and this gives up after 2 s with
    // g_preempted == 0.
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (g_spins[0].load() > 0 && g_spins[1].load() > 0 &&
          goro::stats().preemptions_async > async0) {
        g_preempted = 1;
        break;
      }
      goro::sleep_for(1ms);
    }
    goro::sleep_for(20ms);  // the parked ones are surely parked
    // Best effort: stop for gdb once main's own dump shows a spinner off its
    // P, switched out by asynchronous preemption (main holds a P from here
    // to the breakpoint). Two procs are not enough on their own: on a
    // loaded machine sysmon may lend a spare P, and then both spinners run
    // beside main. (Under AddressSanitizer the dump may not tell preempted
    // from runnable within the wait: then gdb stops as before.)
    const auto dump_deadline = std::chrono::steady_clock::now() + 2s;
    while (g_preempted == 1 &&
           std::chrono::steady_clock::now() < dump_deadline) {
      std::ostringstream dump;
      goro::dump_fibers(dump);
      if (dump.str().find("\" [preempted]:") != std::string::npos) {
        g_dump_preempted = 1;
        break;
      }
      goro::sleep_for(1ms);
    }
    g_spare_lent = goro::stats().syscall_retakes > 0 ? 1 : 0;
    GdbReady();
    g_stop.store(true);
    jobs.send(1);
    mu.unlock();
    // The sleeper sleeps for an hour: main returning abandons it.
    return 0;
  });
}
