// Copyright goro authors.

#include "sync/cond.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <stdexcept>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {


class CondTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(CondTest);

TEST(CondBasics, WaitWithoutLockThrows) {
  goro::Mutex mu;
  goro::Cond cv;
  std::unique_lock<goro::Mutex> l(mu, std::defer_lock);
  EXPECT_THROW(cv.wait(l), std::logic_error);
  cv.signal();  // no waiters: no-op
  cv.broadcast();
}

TEST_P(CondTest, ProducerConsumerQueue) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    goro::Cond cv;
    std::deque<int> q;
    bool done = false;
    const int n = goro_test::Scaled(20000, 2000), consumers = 4;
    std::atomic<long> sum{0};
    std::atomic<int> count{0};
    for (int c = 0; c < consumers; ++c) {
      g.go([&] {
        for (;;) {
          std::unique_lock<goro::Mutex> l(mu);
          cv.wait(l, [&] { return !q.empty() || done; });
          if (q.empty()) return;
          int v = q.front();
          q.pop_front();
          l.unlock();
          sum.fetch_add(v);
          count.fetch_add(1);
        }
      });
    }
    for (int i = 0; i < n; ++i) {
      {
        std::lock_guard<goro::Mutex> l(mu);
        q.push_back(i);
      }
      cv.signal();
      if (i % 100 == 0) goro::yield();
    }
    {
      std::lock_guard<goro::Mutex> l(mu);
      done = true;
    }
    cv.broadcast();
    g.wait();
    EXPECT_EQ(count.load(), n);
    EXPECT_EQ(sum.load(), long{n} * (n - 1) / 2);
  });
}

TEST_P(CondTest, BroadcastWakesAll) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    goro::Cond cv;
    int generation = 0;
    std::atomic<int> waiting{0}, woke{0};
    const int n = 16;
    for (int i = 0; i < n; ++i) {
      g.go([&] {
        std::unique_lock<goro::Mutex> l(mu);
        waiting.fetch_add(1);
        cv.wait(l, [&] { return generation == 1; });
        woke.fetch_add(1);
      });
    }
    while (waiting.load() < n) goro::yield();
    {
      std::lock_guard<goro::Mutex> l(mu);
      generation = 1;
    }
    cv.broadcast();
    g.wait();
    EXPECT_EQ(woke.load(), n);
  });
}

TEST_P(CondTest, SignalWakesOneNoLostWakeups) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    goro::Cond cv;
    int tokens = 0;
    const int n = goro_test::Scaled(2000, 200);
    std::atomic<int> got{0};
    for (int w = 0; w < 3; ++w) {
      g.go([&] {
        for (;;) {
          std::unique_lock<goro::Mutex> l(mu);
          cv.wait(l, [&] { return tokens != 0; });
          if (tokens < 0) return;
          --tokens;
          got.fetch_add(1);
        }
      });
    }
    for (int i = 0; i < n; ++i) {
      {
        std::lock_guard<goro::Mutex> l(mu);
        ++tokens;
      }
      cv.signal();
    }
    for (;;) {
      std::lock_guard<goro::Mutex> l(mu);
      if (tokens == 0) {
        tokens = -1;
        break;
      }
      goro::yield();
    }
    cv.broadcast();
    g.wait();
    EXPECT_EQ(got.load(), n);
  });
}

}  // namespace
