// Copyright goro authors.
//
// Preemption and small stacks: the trampoline saves the whole XSAVE area
// (about 11 KiB with AVX-512 and AMX) below the interrupted stack pointer.
// A fiber with the smallest allowed stack must still be preemptible while it
// runs shallow code, and a fiber too deep for the save area is refused and
// counted as refused_stack (docs/preemption.md, "Stack").

#include <atomic>
#include <chrono>
#include <cstdint>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Spins on a relaxed load until `stop` or, as a safety net so that a refused
// spinner cannot hang the test, until `give_up`. The clock is read once per
// 2^20 iterations, so nearly every signal lands in this loop.
__attribute__((noinline)) std::uint64_t Spin(const std::atomic<bool>& stop,
                                             Clock::time_point give_up) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    if ((++n & ((1u << 20) - 1)) == 0 && Clock::now() > give_up) break;
  }
  return n;
}

goro::Options OneProc() {
  goro::Options o;
  o.procs = 1;
  o.time_slice = std::chrono::milliseconds(5);
  return o;
}

// Spins below a 2 KiB frame (a formatting buffer, say): with goro's own
// frames, about 3 KiB of the stack in use, less than the 4 KiB that
// min_stack_size() leaves for the fiber beside the save area.
__attribute__((noinline)) std::uint64_t SpinBelow2K(
    const std::atomic<bool>& stop, Clock::time_point give_up) {
  volatile char buf[2048];
  buf[0] = 1;
  buf[2047] = 1;
  return Spin(stop, give_up) + buf[0] + buf[2047];
}

TEST(PreemptStack, FiberWithTheMinimumStackIsPreempted) {
  goro::Stats st;
  Clock::duration main_waited{};
  goro::run(OneProc(), [&] {
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(goro::SpawnOptions{.stack_size = goro::min_stack_size()}, [&] {
      SpinBelow2K(stop, Clock::now() + 10s);
      wg.done();
    });
    // With one proc, the main fiber runs again only once the spinner is
    // preempted (or gives up after 10 s).
    const auto t0 = Clock::now();
    goro::sleep_for(20ms);
    main_waited = Clock::now() - t0;
    stop = true;
    wg.wait();
    st = goro::stats();
  });
  EXPECT_GT(st.preemptions_async, 0u) << "refused_stack=" << st.refused_stack
                                      << " refused_pc=" << st.refused_pc;
  EXPECT_LT(main_waited, 5s);
}

// Set by DeepThenSpin once it is as deep as asked: a preemption that lands
// while it is still recursing has room and is rightly taken.
std::atomic<bool> g_reached_depth{false};

// Recurses until fewer than `keep` bytes of the fiber's stack remain above
// its lowest byte `lo`, then spins.
__attribute__((noinline)) std::uint64_t DeepThenSpin(
    const std::atomic<bool>& stop, Clock::time_point give_up, const char* lo,
    std::size_t keep) {
  volatile char frame[256];
  frame[0] = 1;
  if (static_cast<std::size_t>(const_cast<char*>(frame) - lo) > keep) {
    return DeepThenSpin(stop, give_up, lo, keep) + frame[0];
  }
  g_reached_depth.store(true);
  return Spin(stop, give_up) + frame[0];
}

TEST(PreemptStack, FiberTooDeepForTheSaveAreaIsRefusedAndCounted) {
  goro::Stats st;
  goro::run(OneProc(), [&] {
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(goro::SpawnOptions{.stack_size = goro::min_stack_size()}, [&] {
      // Leave half of what a preemption needs: too little for the save
      // area, enough for Spin and its clock reads (even under ASan).
      DeepThenSpin(stop, Clock::now() + 300ms,
                   goro::runtime_internal::current_m()->curg()->stack.lo,
                   goro::runtime_internal::preempt_stack_need() / 2);
      wg.done();
    });
    // Runs again when the spinner is preempted (before it is deep) or gives
    // up (300 ms, every preemption at depth refused).
    g_reached_depth = false;
    do {
      goro::sleep_for(1ms);
    } while (!g_reached_depth.load());
    stop = true;
    wg.wait();
    st = goro::stats();
  });
  EXPECT_GT(st.refused_stack, 0u);
}

}  // namespace
