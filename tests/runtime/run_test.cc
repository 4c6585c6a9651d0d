// Copyright goro authors.
//
// goro::run: the runtime's lifetime. Results, repeated runs, stats after run,
// abandoned fibers, misuse errors, and the uncaught-exception abort.

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;

using namespace std::chrono_literals;

TEST(RunTest, ReturnsMainsIntResult) {
  EXPECT_EQ(goro::run([] { return 7; }), 7);
  EXPECT_EQ(goro::run(Procs(1), [] { return -3; }), -3);
}

TEST(RunTest, VoidMainReturnsZero) {
  bool ran = false;
  EXPECT_EQ(goro::run([&] { ran = true; }), 0);
  EXPECT_TRUE(ran);
}

TEST(RunTest, MainRunsOnAFiberNamedMain) {
  std::uint64_t id = 0;
  std::string name;
  goro::run([&] {
    id = goro::this_fiber::id();
    name = std::string(goro::this_fiber::name());
  });
  EXPECT_NE(id, 0u);
  EXPECT_EQ(name, "main");
  // Outside any fiber.
  EXPECT_EQ(goro::this_fiber::id(), 0u);
  EXPECT_TRUE(goro::this_fiber::name().empty());
}

TEST(RunTest, RunsTwentyTimesInARow) {
  goro_test::CleanGoroEnv env;
  constexpr int kRuns = 20;
  const int kFibers = goro_test::Scaled(300, 50);
  for (int r = 0; r < kRuns; ++r) {
    const int procs = 1 + r % 3;  // 1, 2, 3 Ps
    std::atomic<int> sum{0};
    int result = goro::run(Procs(procs), [&] {
      goro::WaitGroup wg;
      for (int i = 1; i <= kFibers; ++i) {
        wg.add(1);
        goro::go([&, i] {
          goro::yield();
          if (i % 16 == 0) goro::sleep_for(100us);
          sum.fetch_add(i);
          wg.done();
        });
      }
      wg.wait();
      return r;
    });
    ASSERT_EQ(result, r);
    ASSERT_EQ(sum.load(), kFibers * (kFibers + 1) / 2) << "run " << r;
    goro::Stats st = goro::stats();
    EXPECT_EQ(st.procs, procs) << "run " << r;
    EXPECT_EQ(st.fibers_created, static_cast<std::uint64_t>(kFibers + 1))
        << "run " << r;
    EXPECT_EQ(st.fibers_live, 0u) << "run " << r;
    EXPECT_GE(st.context_switches, static_cast<std::uint64_t>(kFibers))
        << "run " << r;
    EXPECT_GE(st.threads, 1);
  }
}

TEST(RunTest, StatsAfterRunDescribeTheLastRuntime) {
  goro::run(Procs(1), [] {
    for (int i = 0; i < 10; ++i) goro::go([] {});
    goro::yield();
  });
  goro::run(Procs(2), [] {
    goro::WaitGroup wg;
    for (int i = 0; i < 50; ++i) {
      wg.add(1);
      goro::go([&] {
        // 20 ms, not 1: a sleep whose deadline has passed by the time it
        // parks needs no timer (CI's ASan pass under load: 49 of 50 fired).
        goro::sleep_for(20ms);
        wg.done();
      });
    }
    wg.wait();
  });
  goro::Stats a = goro::stats();
  EXPECT_EQ(a.procs, 2);
  EXPECT_EQ(a.fibers_created, 51u);
  EXPECT_EQ(a.fibers_live, 0u);
  EXPECT_GE(a.timers_fired, 50u);
  // Stable: nothing runs any more.
  std::this_thread::sleep_for(5ms);
  goro::Stats b = goro::stats();
  EXPECT_EQ(b.fibers_created, a.fibers_created);
  EXPECT_EQ(b.context_switches, a.context_switches);
  EXPECT_EQ(b.timers_fired, a.timers_fired);
}

TEST(RunTest, StatsInsideRunSeeLiveFibers) {
  goro::run(Procs(2), [] {
    goro::WaitGroup started, release, finished;
    constexpr int kN = 100;
    started.add(kN);
    release.add(1);
    finished.add(kN);
    for (int i = 0; i < kN; ++i) {
      goro::go([&] {
        started.done();
        release.wait();
        finished.done();
      });
    }
    started.wait();
    goro::Stats st = goro::stats();
    EXPECT_EQ(st.procs, 2);
    EXPECT_GE(st.fibers_live, static_cast<std::uint64_t>(kN + 1));
    EXPECT_EQ(st.fibers_created, static_cast<std::uint64_t>(kN + 1));
    release.done();
    finished.wait();
  });
}

TEST(RunTest, ReturnsWhileFibersAreStillParkedOrSleeping) {
  // Fibers alive when main returns are abandoned (as in Go); run must not
  // wait for them. The WaitGroup outlives the runtime on purpose.
  static goro::WaitGroup never;
  never.add(1);
  const auto t0 = std::chrono::steady_clock::now();
  goro::run(Procs(2), [] {
    for (int i = 0; i < 20; ++i) goro::go([] { never.wait(); });
    goro::go([] { goro::sleep_for(std::chrono::hours(1)); });
    goro::sleep_for(10ms);  // let them all park
  });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  EXPECT_EQ(goro::stats().fibers_live, 0u);
  // And the next runtime starts normally.
  EXPECT_EQ(goro::run([] { return 5; }), 5);
}

struct CountedClosure {
  static inline std::atomic<int> destroyed_live{0};
  std::atomic<bool>* ran;
  bool live = true;
  char pad[8] = {};
  CountedClosure(std::atomic<bool>* r) : ran(r) {}
  CountedClosure(CountedClosure&& o) noexcept : ran(o.ran) { o.live = false; }
  CountedClosure(const CountedClosure&) = delete;
  ~CountedClosure() {
    if (live) destroyed_live.fetch_add(1);
  }
  void operator()() const { ran->store(true); }
};

TEST(RunTest, DestroysClosuresOfFibersThatNeverStarted) {
  // procs=1: main spawns the `never` fibers (each goes to runnext, then is
  // kicked to the ring by the next go()) and the spinner, and returns; the
  // spinner runs next and keeps the only P (with preemption disabled) until
  // the runtime is stopping, then yields. `never` never runs, and its
  // closure -- inline and heap-allocated variants -- must be destroyed.
  CountedClosure::destroyed_live = 0;
  std::atomic<bool> ran_small{false}, ran_big{false};
  goro::run(Procs(1), [&] {
    goro::go(CountedClosure(&ran_small));
    goro::go([c = CountedClosure(&ran_big), big = std::array<char, 256>{}] {
      c();
      (void)big;
    });
    goro::go([] {
      goro::NoPreempt no_preempt;  // sysmon must not switch to `never`
      auto* s = goro::runtime_internal::g_sched.load();
      const auto deadline = std::chrono::steady_clock::now() + 30s;
      while (!s->stopping.load() &&
             std::chrono::steady_clock::now() < deadline) {
      }
      goro::yield();
    });
  });
  EXPECT_FALSE(ran_small.load());
  EXPECT_FALSE(ran_big.load());
  EXPECT_EQ(CountedClosure::destroyed_live.load(), 2);
}

TEST(RunTest, ClosureIsDestroyedAfterTheFiberReturns) {
  CountedClosure::destroyed_live = 0;
  std::atomic<bool> ran{false};
  goro::run([&] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&wg, c = CountedClosure(&ran)] {
      c();
      wg.done();
    });
    wg.wait();
    // The fiber may still be exiting; poll briefly.
    for (int i = 0; i < 5000 && CountedClosure::destroyed_live.load() == 0; ++i)
      goro::sleep_for(1ms);
  });
  EXPECT_TRUE(ran.load());
  EXPECT_EQ(CountedClosure::destroyed_live.load(), 1);
}

TEST(RunTest, GoFromAPlainThreadWhileRunning) {
  std::atomic<int> n{0};
  goro::run(Procs(2), [&] {
    goro::WaitGroup wg;
    constexpr int kN = 100;
    wg.add(kN);
    std::thread t([&] {
      EXPECT_EQ(goro::this_fiber::id(), 0u);
      for (int i = 0; i < kN; ++i) {
        goro::go([&] {
          EXPECT_NE(goro::this_fiber::id(), 0u);
          n.fetch_add(1);
          wg.done();
        });
      }
    });
    wg.wait();
    // The thread is done with go() calls once every fiber ran... but may not
    // have returned yet; join without holding the P.
    goro::blocking([&] { t.join(); });
  });
  EXPECT_EQ(n.load(), 100);
}

// ---------------------------------------------------------------------------
// Misuse.

TEST(RunTest, GoOutsideRunThrowsLogicError) {
  EXPECT_THROW(goro::go([] {}), std::logic_error);
  goro::run([] {});
  EXPECT_THROW(goro::go([] {}), std::logic_error);
  EXPECT_THROW(goro::go(goro::SpawnOptions{.name = "x"}, [] {}),
               std::logic_error);
}

TEST(RunTest, RunFromInsideAFiberThrowsLogicError) {
  int inner_ran = 0;
  goro::run(Procs(2), [&] {
    EXPECT_THROW(goro::run([&] { ++inner_ran; }), std::logic_error);
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&] {
      EXPECT_THROW(goro::run([&] { ++inner_ran; }), std::logic_error);
      wg.done();
    });
    wg.wait();
    // The runtime still works after the refused calls.
    wg.add(1);
    goro::go([&] { wg.done(); });
    wg.wait();
  });
  EXPECT_EQ(inner_ran, 0);
}

TEST(RunTest, RunInsideBlockingThrowsLogicError) {
  goro::run([] {
    EXPECT_THROW(goro::blocking([] { goro::run([] {}); }), std::logic_error);
  });
}

TEST(RunTest, RunWhileAnotherThreadIsInsideRunThrowsLogicError) {
  std::atomic<bool> inside{false}, release{false};
  std::thread owner([&] {
    goro::run([&] {
      inside.store(true);
      while (!release.load()) goro::sleep_for(1ms);
    });
  });
  ASSERT_TRUE(goro_test::WaitFor([&] { return inside.load(); }, 30000ms));
  bool ran = false;
  EXPECT_THROW(goro::run([&] { ran = true; }), std::logic_error);
  EXPECT_THROW(goro::run(Procs(1), [&] { ran = true; }), std::logic_error);
  release.store(true);
  owner.join();
  EXPECT_FALSE(ran);
  // Once the other runtime is gone, run works here again.
  EXPECT_EQ(goro::run([] { return 1; }), 1);
}

TEST(RunTest, BadOptionsThrowAndLeaveNoRuntimeBehind) {
  EXPECT_THROW(goro::run(Procs(-1), [] {}), std::invalid_argument);
  EXPECT_THROW(goro::go([] {}), std::logic_error);
  EXPECT_EQ(goro::run([] { return 3; }), 3);
}

// ---------------------------------------------------------------------------
// Uncaught exceptions abort with a message naming the fiber, and its
// backtrace.

class RunDeathTest : public testing::Test {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
};

TEST_F(RunDeathTest, UncaughtExceptionInMainAborts) {
  EXPECT_DEATH(goro::run([] { throw std::runtime_error("boom"); }),
               "goro: uncaught exception in fiber [0-9]+: boom");
}

TEST_F(RunDeathTest, UncaughtExceptionInSpawnedFiberAborts) {
  EXPECT_DEATH(goro::run([] {
                 goro::WaitGroup wg;
                 wg.add(1);
                 goro::go([] {
                   goro::yield();
                   throw std::runtime_error("boom");
                 });
                 wg.wait();  // never returns
               }),
               "goro: uncaught exception in fiber [0-9]+: boom");
}

// The message carries the failing fiber's backtrace (issue 11): the
// exception finds no handler, so std::terminate runs with the frames that
// threw still on the stack. kThrowLine is the throw's line. (A throw on
// an unlikely path goes to GCC's .cold section, for which GCC 12 writes no
// line: that frame then shows "?:0", as addr2line does.)
constexpr int kThrowLine = __LINE__ + 2;
[[noreturn]] __attribute__((noinline)) void ThrowBoom() {
  throw std::runtime_error("boom");
}

__attribute__((noinline)) void CallThrowBoom() { ThrowBoom(); }

TEST_F(RunDeathTest, UncaughtExceptionPrintsTheFramesThatThrew) {
  const std::string frames =
      "goro: uncaught exception in fiber [0-9]+: boom\n\n"
      "fiber [0-9]+ \"thrower\" \\[running\\]:\n"
      "\\(anonymous namespace\\)::ThrowBoom\\(\\.\\.\\.\\)\n"
      "\ttests/runtime/run_test.cc:" +
      std::to_string(kThrowLine) +
      " \\+0x[0-9a-f]+\n"
      "\\(anonymous namespace\\)::CallThrowBoom\\(\\.\\.\\.\\)\n"
      "\ttests/runtime/run_test.cc:[0-9]+ \\+0x[0-9a-f]+\n"
      "(.|\n)*created by ";
  EXPECT_DEATH(goro::run([] {
                 goro::WaitGroup wg;
                 wg.add(1);
                 goro::go({.name = "thrower"}, [] {
                   goro::yield();
                   CallThrowBoom();
                 });
                 wg.wait();  // never returns
               }),
               frames);
  // Also from inside goro::blocking() (the fiber is off its P there), and
  // on the main fiber.
  EXPECT_DEATH(goro::run([] {
                 goro::go({.name = "thrower"},
                          [] { goro::blocking([] { CallThrowBoom(); }); });
                 goro::sleep_for(std::chrono::hours(1));
               }),
               "goro: uncaught exception in fiber [0-9]+: boom\n\n"
               "fiber [0-9]+ \"thrower\" \\[running\\]:\n"
               "\\(anonymous namespace\\)::ThrowBoom");
  EXPECT_DEATH(goro::run([] { CallThrowBoom(); }),
               "goro: uncaught exception in fiber [0-9]+: boom\n\n"
               "fiber [0-9]+ \"main\" \\[running\\]:\n"
               "\\(anonymous namespace\\)::ThrowBoom");
}

// A terminate that is not a fiber's uncaught exception (a plain thread's)
// goes to the handler that was there before run.
TEST_F(RunDeathTest, PlainThreadsTerminateIsNotReportedAsAFibers) {
  EXPECT_DEATH(
      goro::run([] {
        goro::blocking([] {
          std::thread([] { throw std::runtime_error("plain"); }).join();
        });
      }),
      "terminate called after throwing an instance of "
      "'std::runtime_error'\n  what\\(\\):  plain");
}

TEST_F(RunDeathTest, UncaughtNonStdExceptionAborts) {
  EXPECT_DEATH(goro::run([] { throw 42; }),
               "goro: uncaught exception in fiber [0-9]+: \\(not a "
               "std::exception\\)");
}

// run.h: run does not wait for a thread inside goro::blocking() (its call
// may never return); the fiber never runs again (more in lifecycle_test).
TEST(RunTest, DoesNotWaitForAThreadInsideBlocking) {
  // Static: the abandoned call outlives this test's frame.
  static std::atomic<bool> inside{false}, call_returned{false};
  goro::run(Procs(2), [&] {
    goro::go([&] {
      goro::blocking([&] {
        inside = true;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        call_returned = true;
      });
    });
    goro_test::AwaitInFiber([&] { return inside.load(); },
                            "the fiber to enter blocking()");
  });
  EXPECT_FALSE(call_returned.load())
      << "run waited for a thread inside blocking()";
}

}  // namespace
