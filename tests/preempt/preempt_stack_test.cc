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
#include <cstdio>
#include <thread>

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

// The frames an asynchronous preemption runs below the interrupted code
// (the yield, down to the switch, and back up on resume) must fit
// kPreemptFrames, which min_stack_size() and the handler's refusal count on.
// The check is on in debug and sanitizer builds; here it is switched on in
// the build under test (optimized by default), over the paths a preempted
// yield takes: fibers waiting on the network (the yield polls), fibers on
// the global queue (go() from a plain thread), and a local queue.
// Before the fix the optimized build's frames took 1,224 bytes (then against
// an allowance of 768):
// netpoll_queue_ready and runq_overflow kept 1 KiB arrays on the stack.
TEST(PreemptStack, FramesBelowAPreemptionFitTheirAllowance) {
  namespace rt = goro::runtime_internal;
  rt::preempt_frames_measure(true);
  goro::Stats st;
  goro::Options o = OneProc();
  o.time_slice = std::chrono::milliseconds(1);
  std::atomic<bool> stop{false};
  std::atomic<int> spawned_off{0};
  goro::run(o, [&] {
    auto ln = goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok()) << ln.status();
    goro::WaitGroup wg;
    wg.add(3);
    goro::go([&] {  // an I/O waiter: a preempted yield polls the network
      (void)ln->accept();
      wg.done();
    });
    for (int i = 0; i < 2; ++i) {
      goro::go([&] {
        Spin(stop, Clock::now() + 10s);
        wg.done();
      });
    }
    std::thread feeder([&] {  // fibers on the global queue
      while (!stop.load()) {
        goro::go([] {});
        spawned_off.fetch_add(1);
        std::this_thread::sleep_for(200us);
      }
    });
    for (int i = 0; i < 40; ++i) {
      goro::go([] {});  // local queue work between slices
      goro::sleep_for(5ms);
    }
    stop = true;
    feeder.join();
    ASSERT_TRUE(ln->close().ok());
    wg.wait();
    st = goro::stats();
  });
  rt::preempt_frames_measure(false);
  EXPECT_GT(st.preemptions_async, 20u);
  EXPECT_GT(spawned_off.load(), 0);
  const std::size_t used = rt::preempt_frames_max_used();
  EXPECT_GT(used, 0u);  // the check ran
  EXPECT_LE(used, rt::kPreemptFrames);
  std::printf(
      "frames below a preemption: %zu of %zu bytes (XSAVE area %zu, "
      "min_stack_size %zu)\n",
      used, rt::kPreemptFrames, rt::xsave_layout().size,
      goro::min_stack_size());
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
