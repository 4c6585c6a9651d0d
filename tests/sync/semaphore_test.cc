// Copyright goro authors.

#include "sync/semaphore.h"

#include <atomic>
#include <stdexcept>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

class SemaphoreTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(SemaphoreTest);

TEST(SemaphoreBasics, CountsAndErrors) {
  EXPECT_THROW(goro::Semaphore(-1), std::invalid_argument);
  goro::Semaphore s(3);
  EXPECT_THROW(s.acquire(-1), std::invalid_argument);
  EXPECT_THROW(s.release(-2), std::invalid_argument);
  EXPECT_TRUE(s.try_acquire(2));
  EXPECT_FALSE(s.try_acquire(2));
  EXPECT_TRUE(s.try_acquire());
  EXPECT_EQ(s.count(), 0);
  s.release(3);
  EXPECT_EQ(s.count(), 3);
  EXPECT_THROW(s.release(goro::Semaphore::max()), std::invalid_argument);
}

TEST_P(SemaphoreTest, BoundsConcurrency) {
  run([] {
    goro_test::FiberGroup g;
    goro::Semaphore sem(3);
    std::atomic<int> inside{0}, max_inside{0};
    for (int f = 0; f < 12; ++f) {
      g.go([&] {
        for (int i = 0; i < goro_test::Scaled(500, 50); ++i) {
          sem.acquire();
          int n = inside.fetch_add(1) + 1;
          int m = max_inside.load();
          while (n > m && !max_inside.compare_exchange_weak(m, n)) {
          }
          goro::yield();
          inside.fetch_sub(1);
          sem.release();
        }
      });
    }
    g.wait();
    EXPECT_LE(max_inside.load(), 3);
    EXPECT_EQ(sem.count(), 3);
  });
}

// FIFO: a big request at the head is not overtaken by later small ones.
TEST_P(SemaphoreTest, WeightedFifo) {
  run([] {
    goro_test::FiberGroup g;
    goro::Semaphore sem(0);
    std::atomic<int> order{0};
    std::atomic<bool> big_started{false}, small_started{false};
    int big_at = -1, small_at = -1;
    // Each waiter must be queued before the next arrives: wait until it
    // has started (it then parks at once), and a little longer.
    g.go([&] {
      big_started = true;
      sem.acquire(5);
      big_at = order.fetch_add(1);
    });
    while (!big_started.load()) goro::yield();
    goro::sleep_for(std::chrono::milliseconds(1));
    g.go([&] {
      small_started = true;
      sem.acquire(1);
      small_at = order.fetch_add(1);
    });
    while (!small_started.load()) goro::yield();
    goro::sleep_for(std::chrono::milliseconds(1));
    sem.release(1);  // not enough for the head: nobody runs
    goro::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(order.load(), 0);
    EXPECT_FALSE(sem.try_acquire(1));  // someone waits
    sem.release(5);
    g.wait();
    // Both acquired (the wake order is not the run order: each woken fiber
    // goes to runnext, so the last woken may run first).
    EXPECT_GE(big_at, 0);
    EXPECT_GE(small_at, 0);
    EXPECT_EQ(sem.count(), 0);
  });
}

}  // namespace
