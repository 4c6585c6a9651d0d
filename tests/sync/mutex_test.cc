// Copyright goro authors.

#include "sync/mutex.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

class MutexTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(MutexTest);

TEST(MutexBasics, LockableWithStdGuards) {
  goro::Mutex a, b;
  {
    std::lock_guard<goro::Mutex> l(a);
    EXPECT_FALSE(a.try_lock());
  }
  {
    std::unique_lock<goro::Mutex> l(a);
    EXPECT_TRUE(l.owns_lock());
  }
  {
    std::scoped_lock l(a, b);
    EXPECT_FALSE(b.try_lock());
  }
  EXPECT_TRUE(a.try_lock());
  a.unlock();
}

TEST(MutexDeathTest, UnlockOfUnlockedAborts) {
  EXPECT_DEATH(
      {
        goro::Mutex m;
        m.unlock();
      },
      "unlock of unlocked goro::Mutex");
}

TEST_P(MutexTest, MutualExclusionExactCount) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    long counter = 0;  // guarded by mu; a plain long so TSan checks the lock
    std::atomic<int> inside{0};
    const int fibers = 8, per = goro_test::Scaled(20000, 2000);
    for (int f = 0; f < fibers; ++f) {
      g.go([&] {
        for (int i = 0; i < per; ++i) {
          std::lock_guard<goro::Mutex> l(mu);
          EXPECT_EQ(inside.fetch_add(1), 0);
          ++counter;
          if (i % 256 == 0) goro::yield();  // park/handoff paths
          inside.fetch_sub(1);
        }
      });
    }
    g.wait();
    EXPECT_EQ(counter, long{fibers} * per);
  });
}

// A successful try_lock excludes everyone else until unlock: the holder
// yields inside (so, broken, another fiber would get in) and updates a plain
// counter in two steps across the yield (so lost updates would show).
TEST_P(MutexTest, TryLockUnderContention) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    long counter = 0;  // guarded by mu
    std::atomic<long> ok{0};
    std::atomic<int> inside{0};
    for (int f = 0; f < 4; ++f) {
      g.go([&] {
        for (int i = 0; i < goro_test::Scaled(5000, 500); ++i) {
          if (mu.try_lock()) {
            EXPECT_EQ(inside.fetch_add(1), 0) << "two holders at once";
            const long c = counter;
            if (i % 8 == 0) goro::yield();
            counter = c + 1;
            ok.fetch_add(1);
            inside.fetch_sub(1);
            mu.unlock();
          } else {
            goro::yield();
          }
        }
      });
    }
    g.wait();
    EXPECT_GT(ok.load(), 0);
    EXPECT_EQ(counter, ok.load()) << "updates lost: try_lock did not exclude";
  });
}

// A fiber that waits more than 1 ms switches the mutex to starvation mode:
// it then gets the lock although a greedy fiber keeps re-locking it.
TEST_P(MutexTest, StarvationModeHandsOver) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    std::atomic<bool> stop{false}, got{false};
    std::atomic<bool> greedy_started{false};
    g.go([&] {
      while (!stop.load()) {
        mu.lock();
        greedy_started = true;
        // Hold it for a while, release, and immediately try again: in
        // normal mode the running greedy fiber wins nearly every time.
        auto t =
            std::chrono::steady_clock::now() + std::chrono::microseconds(200);
        while (std::chrono::steady_clock::now() < t) {
        }
        mu.unlock();
        // No yield: the greedy fiber relocks at once. Only starvation mode
        // (ownership handed straight to a waiter that waited > 1 ms) lets the
        // waiter below in; in normal mode the running fiber wins every race.
        // Under TSan there is no preemption, so on one proc the woken waiter
        // would never run to notice it starves: yield there.
#if defined(__SANITIZE_THREAD__)
        goro::yield();
#endif
      }
    });
    while (!greedy_started) goro::yield();
    auto t0 = std::chrono::steady_clock::now();
    mu.lock();
    got = true;
    auto waited = std::chrono::steady_clock::now() - t0;
    mu.unlock();
    stop = true;
    g.wait();
    EXPECT_TRUE(got);
    // Generous: starvation mode begins after 1 ms of waiting.
    EXPECT_LT(waited, std::chrono::seconds(2));
  });
}

TEST_P(MutexTest, ThreadsAndFibersShareAMutex) {
  run([] {
    goro_test::FiberGroup g;
    goro::Mutex mu;
    long counter = 0;
    const int per = goro_test::Scaled(20000, 2000);
    std::thread t([&] {
      for (int i = 0; i < per; ++i) {
        std::lock_guard<goro::Mutex> l(mu);
        ++counter;
      }
    });
    for (int f = 0; f < 3; ++f) {
      g.go([&] {
        for (int i = 0; i < per; ++i) {
          std::lock_guard<goro::Mutex> l(mu);
          ++counter;
        }
      });
    }
    g.wait();
    goro::blocking([&] { t.join(); });
    EXPECT_EQ(counter, 4L * per);
  });
}

// mutex.h: "As in Go, a Mutex is not tied to a fiber: one fiber may lock it
// and another unlock it." Fiber A locks and ends holding the lock; fiber B
// unlocks it; a third fiber then takes it, by try_lock and, parked in
// lock() while A' holds it, when B' unlocks.
TEST_P(MutexTest, LockedByOneFiberUnlockedByAnotherThenTakenByAThird) {
  run([] {
    goro::Mutex mu;
    goro::Chan<int> locked(0), unlocked(0);
    goro_test::FiberGroup g;
    g.go([&] {  // A
      mu.lock();
      locked.send(1);
    });
    g.go([&] {  // B
      locked.recv();
      mu.unlock();
      unlocked.send(1);
    });
    unlocked.recv();
    bool took = false;
    g.go([&] { took = mu.try_lock(); });  // C
    g.wait();
    ASSERT_TRUE(took) << "a fiber could not take a Mutex that a fiber other "
                         "than its locker had unlocked";
    mu.unlock();  // this fiber: a fourth one

    // The same with a waiter parked in lock(): B's unlock must wake it.
    std::atomic<bool> waiting{false}, got{false};
    mu.lock();  // held by this fiber
    g.go([&] {  // C, parks
      waiting = true;
      mu.lock();
      got = true;
      mu.unlock();
    });
    goro_test::AwaitInFiber([&] { return waiting.load(); }, "C to call lock()");
    for (int i = 0; i < 10; ++i) goro::yield();
    EXPECT_FALSE(got.load()) << "C took a Mutex that was held";
    g.go([&] { mu.unlock(); });  // B', not the locker
    g.wait();
    EXPECT_TRUE(got.load());
  });
}

}  // namespace
