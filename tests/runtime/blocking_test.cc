// Copyright goro authors.
//
// goro::blocking: the P is handed off so other fibers keep running while a
// fiber blocks its OS thread; values and exceptions pass through; outside a
// fiber it is a plain call.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// With one P, a fiber blocked in blocking() (here: a 200 ms sleep of the OS
// thread) does not stop another fiber: that one keeps counting, and the P was
// handed to another thread.
TEST(BlockingTest, OtherFibersRunWhileOneBlocksWithOneP) {
  std::atomic<long> during{0};
  std::atomic<bool> in_block{false}, block_done{false};
  Clock::duration blocked_for{};
  goro::run(Procs(1), [&] {
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      const auto t0 = Clock::now();
      const int r = goro::blocking([&] {
        in_block.store(true);
        std::this_thread::sleep_for(200ms);  // blocks the OS thread
        in_block.store(false);
        return 17;
      });
      blocked_for = Clock::now() - t0;
      EXPECT_EQ(r, 17);
      block_done.store(true);
      wg.done();
    });
    goro::go([&] {
      const auto deadline = Clock::now() + 30s;
      while (!block_done.load() && Clock::now() < deadline) {
        if (in_block.load()) during.fetch_add(1);
        goro::yield();
      }
      wg.done();
    });
    wg.wait();
    EXPECT_GT(goro::stats().handoffs, 0u);
    EXPECT_GE(goro::stats().threads, 2);
  });
  EXPECT_TRUE(block_done.load()) << "the blocked fiber never got its P back";
  EXPECT_GE(blocked_for, 200ms);
  EXPECT_GT(during.load(), 100) << "iterations while the other fiber blocked";
}

// Same, with a pipe: the reader blocks in read(2) until a fiber on the same
// (only) P writes. Without the hand-off this would deadlock.
TEST(BlockingTest, PipeReadUnblockedByAnotherFiberOnTheSameP) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::string got;
  goro::run(Procs(1), [&] {
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      char buf[16] = {};
      ssize_t n =
          goro::blocking([&] { return ::read(fds[0], buf, sizeof buf); });
      if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
      wg.done();
    });
    goro::go([&] {
      goro::sleep_for(50ms);  // the reader is blocked by now
      EXPECT_EQ(::write(fds[1], "hello", 5), 5);
      wg.done();
    });
    wg.wait();
    EXPECT_GT(goro::stats().handoffs, 0u);
  });
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(got, "hello");
}

TEST(BlockingTest, ReturnsValuesAndReferences) {
  goro::run([] {
    EXPECT_EQ(goro::blocking([] { return 42; }), 42);
    EXPECT_EQ(goro::blocking([] { return std::string("str"); }), "str");
    auto p = goro::blocking([] { return std::make_unique<int>(5); });
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(*p, 5);
    int x = 1;
    int& r = goro::blocking([&]() -> int& { return x; });
    EXPECT_EQ(&r, &x);
    goro::blocking([] {});  // void
  });
}

TEST(BlockingTest, RethrowsAndTheFiberCarriesOn) {
  goro::run(Procs(1), [] {
    for (int i = 0; i < 3; ++i) {
      try {
        goro::blocking([]() -> int { throw std::runtime_error("from fn"); });
        ADD_FAILURE() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "from fn");
      }
    }
    // The fiber holds a P again: it can park, spawn and yield.
    goro::sleep_for(1ms);
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&] { wg.done(); });
    wg.wait();
    EXPECT_EQ(goro::blocking([] { return 1; }), 1);
  });
}

TEST(BlockingTest, OutsideAFiberJustCallsFn) {
  const pid_t tid = goro_test::Gettid();
  pid_t ran_on = 0;
  EXPECT_EQ(goro::blocking([&] {
              ran_on = goro_test::Gettid();
              return 3;
            }),
            3);
  EXPECT_EQ(ran_on, tid);
  EXPECT_THROW(goro::blocking([] { throw std::out_of_range("x"); }),
               std::out_of_range);
  // A plain thread while a runtime runs.
  goro::run([] {
    std::thread t([] {
      EXPECT_EQ(goro::blocking([] { return 9; }), 9);
      EXPECT_THROW(goro::blocking([] { throw std::out_of_range("x"); }),
                   std::out_of_range);
    });
    goro::blocking([&] { t.join(); });
  });
}

TEST(BlockingTest, FnRunsOnTheCallingThreadAndFiber) {
  goro::run(Procs(2), [] {
    const std::uint64_t id = goro::this_fiber::id();
    const pid_t tid = goro_test::Gettid();
    goro::blocking([&] {
      EXPECT_EQ(goro_test::Gettid(), tid);
      EXPECT_EQ(goro::this_fiber::id(), id);
    });
  });
}

TEST(BlockingTest, NestedBlockingAndGoInsideFn) {
  std::atomic<bool> spawned_ran{false};
  goro::run(Procs(1), [&] {
    const int v = goro::blocking([&] {
      // go() is allowed inside fn (the fiber goes to the global queue).
      goro::go([&] { spawned_ran.store(true); });
      return goro::blocking([] { return 2; }) + 1;  // nested: plain call
    });
    EXPECT_EQ(v, 3);
    for (int i = 0; i < 5000 && !spawned_ran.load(); ++i) goro::sleep_for(1ms);
  });
  EXPECT_TRUE(spawned_ran.load());
}

TEST(BlockingTest, ManyFibersBlockAtOnceOnTwoProcs) {
  // Ms outnumber Ps while they block: 8 x 100 ms of blocking finish in far
  // less than 800 ms.
  constexpr int kN = 8;
  Clock::duration elapsed{};
  goro::run(Procs(2), [&] {
    goro::WaitGroup wg;
    wg.add(kN);
    const auto t0 = Clock::now();
    for (int i = 0; i < kN; ++i) {
      goro::go([&] {
        goro::blocking([] { std::this_thread::sleep_for(100ms); });
        wg.done();
      });
    }
    wg.wait();
    elapsed = Clock::now() - t0;
    EXPECT_GT(goro::stats().threads, 2);
  });
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 700ms);
}

TEST(BlockingTest, RepeatedShortBlockingCallsWithCompetition) {
  // Every blocking() exit must find a P again (its own, another idle one, or
  // via the global queue) -- no fiber is lost.
  const int kFibers = goro_test::Scaled(40, 10);
  const int kCalls = goro_test::Scaled(200, 50);
  std::atomic<long> total{0};
  for (int procs : {1, 2}) {
    total = 0;
    goro::run(Procs(procs), [&] {
      goro::WaitGroup wg;
      wg.add(kFibers);
      for (int f = 0; f < kFibers; ++f) {
        goro::go([&, f] {
          for (int i = 0; i < kCalls; ++i) {
            total.fetch_add(goro::blocking([&] {
              if ((i + f) % 7 == 0) std::this_thread::sleep_for(20us);
              return 1;
            }));
            if (i % 3 == 0) goro::yield();
          }
          wg.done();
        });
      }
      wg.wait();
    });
    EXPECT_EQ(total.load(), static_cast<long>(kFibers) * kCalls)
        << "procs " << procs;
  }
}

}  // namespace
