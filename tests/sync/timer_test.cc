// Copyright goro authors.

#include "sync/timer.h"

#include <chrono>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

using namespace std::chrono_literals;

class TimerTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(TimerTest);

TEST_P(TimerTest, AfterFiresOnceAfterTheDelay) {
  run([] {
    auto t0 = std::chrono::steady_clock::now();
    auto c = goro::after(2ms);
    auto v = c.recv();
    ASSERT_TRUE(v);
    EXPECT_GE(*v - t0, 2ms);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 2ms);
    EXPECT_EQ(c.try_recv(), std::nullopt);
  });
}

TEST_P(TimerTest, TimeoutInSelect) {
  run([] {
    goro::Chan<int> never(0);
    bool timed_out = false;
    std::size_t i = goro::select(
        goro::recv_case(never),
        goro::recv_case(goro::after(1ms), [&] { timed_out = true; }));
    EXPECT_EQ(i, 1u);
    EXPECT_TRUE(timed_out);
  });
}

TEST_P(TimerTest, StopPreventsFiring) {
  run([] {
    goro::Timer t(5ms);
    EXPECT_TRUE(t.stop());
    EXPECT_FALSE(t.stop());
    goro::sleep_for(10ms);
    EXPECT_EQ(t.c().try_recv(), std::nullopt);
    // Reset after it fired: no stale value, then one new one.
    goro::Timer u(1ms);
    goro::sleep_for(3ms);
    EXPECT_FALSE(u.reset(2ms));                 // already fired: not active
    EXPECT_EQ(u.c().try_recv(), std::nullopt);  // drained
    EXPECT_TRUE(u.c().recv());
  });
}

TEST_P(TimerTest, TickerTicksUntilStopped) {
  run([] {
    goro::Ticker tk(1ms);
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(tk.c().recv());
    tk.stop();
    goro::sleep_for(3ms);
    EXPECT_EQ(tk.c().try_recv(), std::nullopt);
    tk.reset(1ms);
    EXPECT_TRUE(tk.c().recv());
  });
}

TEST_P(TimerTest, ManyTimersRaceStopAndReset) {
  run([] {
    goro_test::FiberGroup g;
    for (int f = 0; f < 8; ++f) {
      g.go([] {
        for (int i = 0; i < goro_test::Scaled(200, 20); ++i) {
          goro::Timer t(std::chrono::microseconds(i % 50));
          if (i % 3 == 0) goro::yield();
          t.reset(std::chrono::microseconds(i % 7));
          if (i % 2) t.stop();
        }
      });
    }
  });
}

}  // namespace
