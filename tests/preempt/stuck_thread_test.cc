// Copyright goro authors.
//
// A thread stuck in the kernel in a call goro was not told about (a raw
// read(), usleep()) must not hold up the fibers that depend on it: fibers
// pinned to it by an asynchronous preemption are released to other threads
// (issue 8 §2), and timers armed on the spare P lent meanwhile still fire
// after the spare is given back (issue 8 §5). Each case hung, or was late by
// the whole blocking call, before the fix.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using Clock = std::chrono::steady_clock;

goro::Options one_proc() {
  return goro_test::OneProc(std::chrono::milliseconds(2));
}

TEST(StuckThread, AFiberPinnedToAThreadBlockedOnItIsReleased) {
  goro_test::WatchdogNote("pinned writer / raw reader");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<bool> reader_started{false}, writer_started{false};
  std::atomic<bool> got{false};
  goro::run(one_proc(), [&] {
    goro::WaitGroup wg;
    wg.add(2);
    // Spawned first: the writer, spawned next, takes runnext and runs first.
    goro::go([&] {
      // Usually the writer runs first. But a main fiber preempted at go()
      // (its first slice overrun during start-up, under ASan: CI run 24)
      // puts runnext behind the ring, and the reader ran first, blocked,
      // and the writer ran on the lent spare unpinned (pinned_released 0).
      // Then the reader lets the writer run until it is preempted (pinned).
      while (!writer_started.load(std::memory_order_relaxed)) goro::yield();
      reader_started.store(true, std::memory_order_relaxed);
      char c = 0;
      // A raw read: blocks this thread, which the writer is pinned to.
      EXPECT_EQ(read(fds[0], &c, 1), 1);
      got.store(c == 'x');
      wg.done();
    });
    // The writer spins without a cooperative point, so on one P it is
    // preempted asynchronously -- and pinned to this thread -- before the
    // reader runs; it writes only once the reader is inside read().
    goro::go([&] {
      writer_started.store(true, std::memory_order_relaxed);
      while (!reader_started.load(std::memory_order_relaxed)) {
      }
      char c = 'x';
      EXPECT_EQ(write(fds[1], &c, 1), 1);
      wg.done();
    });
    wg.wait();
  });
  EXPECT_TRUE(got.load());
  EXPECT_GE(goro::stats().pinned_released, 1u);
  close(fds[0]);
  close(fds[1]);
}

TEST(StuckThread, ATimerOnAReturnedSpareStillFires) {
  goro_test::WatchdogNote("sleep on a retired spare");
  std::atomic<long long> slept_ms{-1};
  goro::run(one_proc(), [&] {
    goro::WaitGroup wg;
    wg.add(2);
    std::atomic<bool> blocker_back{false};
    // Spawned first, so it waits in the ring while the blocker (runnext)
    // runs; the spare's M steals it and it sleeps there past the spare's
    // return.
    goro::go([&] {
      const auto t0 = Clock::now();
      goro::sleep_for(std::chrono::milliseconds(500));
      slept_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                         Clock::now() - t0)
                         .count());
      wg.done();
    });
    // Blocks the only P's thread in the kernel for 300 ms: sysmon lends the
    // spare, whose M steals the sleeper below. Then keeps the P busy for
    // 1.5 s, with no cooperative point.
    goro::go([&] {
      usleep(300'000);
      blocker_back.store(true);
      const auto end = Clock::now() + std::chrono::milliseconds(1500);
      while (Clock::now() < end) {
      }
      wg.done();
    });
    wg.wait();
  });
  if (goro::stats().syscall_retakes == 0) {
    GTEST_SKIP() << "sysmon lent no spare (machine too slow?)";
  }
  // Before the fix the sleeper woke only when the busy fiber finished (after
  // ~1.8 s): nobody looked at the switched-off spare's timers.
  EXPECT_LT(slept_ms.load(), 1000) << "a 500 ms sleep";
  EXPECT_GE(slept_ms.load(), 500);
}

}  // namespace
