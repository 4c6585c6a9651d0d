// Copyright goro authors.
//
// The end of goro::run (DESIGN.md "Start and stop"): run returns while a
// fiber spins, while a fiber is inside goro::blocking() (whose code never
// runs again), while plain threads call go() and use channels, and a stack
// that cannot be mapped fails cleanly. Every test runs under a watchdog, so
// that a hang fails with a message instead of the test timeout.

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int CountThreads() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// --- A spinning fiber when main returns -------------------------------------

// Main returns while a fiber spins in a loop with no goro call in it. With
// asynchronous preemption (the default) sysmon preempts the spinner, which
// then never runs again, and run returns within a few time slices.
TEST(LifecycleTest, RunReturnsWhileAFiberSpins) {
  if (goro_test::kTsan) GTEST_SKIP() << "no asynchronous preemption in TSan";
  for (int procs : {1, 2}) {
    std::vector<double> took;
    for (int rep = 0; rep < 5; ++rep) {
      std::atomic<int> flag{0};
      std::atomic<bool> started{false};
      Clock::time_point main_returned;
      const auto t0 = Clock::now();
      goro::run(Procs(procs), [&] {
        goro::go([&] {
          started.store(true);
          while (flag.load(std::memory_order_relaxed) == 0) {
          }
        });
        while (!started.load()) goro::sleep_for(1ms);
        main_returned = Clock::now();
      });
      took.push_back(Seconds(Clock::now() - main_returned));
      (void)t0;
    }
    std::sort(took.begin(), took.end());
    EXPECT_LT(took[took.size() / 2], 2.0) << "procs=" << procs;
  }
}

// The same, with main returning at once, before sysmon's thread is made
// (runtime/internal/sysmon.cc, "Its start"): run's teardown must make it,
// or nothing preempts the spinner and run never returns (the watchdog fails
// the test). Two procs, so that main runs beside the spinner.
TEST(LifecycleTest, RunReturnsWhileAFiberSpinsInARunShorterThanSysmonsDelay) {
  if (goro_test::kTsan) GTEST_SKIP() << "no asynchronous preemption in TSan";
  std::vector<double> took;
  for (int rep = 0; rep < 10; ++rep) {
    std::atomic<int> flag{0};
    std::atomic<bool> started{false};
    Clock::time_point main_returned;
    goro::run(Procs(2), [&] {
      goro::go([&] {
        started.store(true);
        while (flag.load(std::memory_order_relaxed) == 0) {
        }
      });
      while (!started.load()) goro::yield();
      main_returned = Clock::now();
    });
    took.push_back(Seconds(Clock::now() - main_returned));
  }
  std::sort(took.begin(), took.end());
  EXPECT_LT(took[took.size() / 2], 2.0);
}

// True if a thread of this process is named goro-sysmon.
bool SysmonThreadExists() {
  bool found = false;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char path[64], comm[32] = {};
      std::snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
      if (FILE* f = std::fopen(path, "r")) {
        if (std::fgets(comm, sizeof(comm), f) != nullptr &&
            std::string_view(comm).starts_with("goro-sysmon")) {
          found = true;
        }
        std::fclose(f);
      }
    }
    closedir(d);
  }
  return found;
}

// sysmon's thread is made a busy period (a tenth of the slice, at most
// 1 ms) after the Ms start: a run that ends sooner never makes it, and one
// that lasts longer has it. A loaded machine may delay a short run's main
// past the 1 ms, so of up to 200 short runs one has to end without the thread
// (an eager sysmon: none does); every long run must have it within 2 s
// (never made: none does). ThreadSanitizer's thread start-up alone can take
// the 1 ms: there only the long runs are checked.
TEST(LifecycleTest, SysmonThreadIsMadeOnlyForRunsThatOutliveItsDelay) {
  if (!goro_test::kTsan) {
    bool one_without = false;
    for (int rep = 0; rep < 200 && !one_without; ++rep) {
      bool seen = true;
      goro::run(Procs(2), [&] { seen = SysmonThreadExists(); });
      one_without = !seen;
    }
    EXPECT_TRUE(one_without) << "every one of 200 runs that returned at once "
                                "had made sysmon's thread";
  }
  for (int rep = 0; rep < 3; ++rep) {
    bool seen = false;
    goro::run(Procs(2), [&] {
      goro::sleep_for(20ms);
      const auto deadline = Clock::now() + 2s;
      while (!(seen = SysmonThreadExists()) && Clock::now() < deadline) {
        goro::sleep_for(10ms);
      }
    });
    EXPECT_TRUE(seen) << "a run of 20 ms or more, rep " << rep;
  }
}

// With async_preempt = false nothing can stop a fiber between its goro calls:
// run waits for the spinner's next cooperative point, and the fiber does not
// run past it.
TEST(LifecycleTest, WithoutAsyncPreemptionRunWaitsForTheNextGoroCall) {
  goro::Options o = Procs(2);
  o.async_preempt = false;
  std::atomic<int> release{0};
  std::atomic<bool> started{false}, after_yield{false};
  Clock::time_point released;
  std::thread releaser;
  goro::run(o, [&] {
    goro::go([&] {
      started.store(true);
      while (release.load(std::memory_order_relaxed) == 0) {
      }
      goro::yield();  // the cooperative point: never returns
      after_yield.store(true);
    });
    while (!started.load()) {
    }
    releaser = std::thread([&] {
      std::this_thread::sleep_for(300ms);
      released = Clock::now();
      release.store(1);
    });
  });
  const auto returned = Clock::now();
  releaser.join();
  EXPECT_GE(returned, released);
  EXPECT_LT(Seconds(returned - released), 2.0);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(after_yield.load());
}

// --- A fiber inside goro::blocking() when main returns ----------------------

// run does not wait for the call, and the fiber's code after blocking() never
// runs: not when the call returns, nor ever.
TEST(LifecycleTest, FiberInBlockingNeverRunsAgain) {
  for (int procs : {1, 2}) {
    std::atomic<bool> entered{false}, after{false}, call_returned{false};
    Clock::time_point main_returned;
    goro::run(Procs(procs), [&] {
      goro::go([&] {
        goro::blocking([&] {
          entered.store(true);
          std::this_thread::sleep_for(300ms);
          call_returned.store(true);
        });
        after.store(true);
      });
      while (!entered.load()) goro::sleep_for(1ms);
      main_returned = Clock::now();
    });
    EXPECT_LT(Seconds(Clock::now() - main_returned), 0.2) << "procs=" << procs;
    EXPECT_TRUE(goro_test::WaitFor([&] { return call_returned.load(); }, 5s));
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(after.load()) << "procs=" << procs;
  }
}

// A call that never returns (a read of a pipe nobody writes, like a read of
// stdin) does not hold up run. Once it does return, the thread exits without
// running the fiber's code.
TEST(LifecycleTest, BlockingReadThatNeverReturnsDoesNotHoldUpRun) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<bool> entered{false}, after{false};
  std::atomic<ssize_t> got{-2};
  const auto t0 = Clock::now();
  goro::run(Procs(1), [&] {
    goro::go([&] {
      char c;
      got.store(goro::blocking([&] {
        entered.store(true);
        return ::read(fds[0], &c, 1);
      }));
      after.store(true);
    });
    while (!entered.load()) goro::sleep_for(1ms);
  });
  EXPECT_LT(Seconds(Clock::now() - t0), 1.0);
  const int threads = CountThreads();
  ::close(fds[1]);  // read returns 0: the abandoned thread exits
  EXPECT_TRUE(goro_test::WaitFor([&] { return CountThreads() < threads; }, 5s));
  // fds[0] stays open: nothing orders the abandoned thread's read before a
  // close here (TSan would say so), and the thread runs no code of ours.
  EXPECT_FALSE(after.load());
  EXPECT_EQ(got.load(), -2);
}

// --- A fiber blocked in a raw call when main returns ------------------------
//
// The same without goro::blocking: a fiber blocked in a raw system call (a
// read of a pipe or of stdin, a condition variable nobody notifies, a long
// sleep) does not hold up run -- before, run waited for the call, for ever
// if it never returned. stop_all_ms signals its thread, the handler's walk
// hijacks the return into the fiber's code, and the M is abandoned: once
// the call returns, the thread exits without running the fiber's code.
// Not under TSan, which has no asynchronous preemption: run waits there.
enum class RawCall { kRead, kCondWait, kSleep, kGetline };

const char* RawCallName(RawCall c) {
  switch (c) {
    case RawCall::kRead:
      return "read";
    case RawCall::kCondWait:
      return "condition_variable::wait";
    case RawCall::kSleep:
      return "this_thread::sleep_for";
    case RawCall::kGetline:
      return "fgets";
  }
  return "?";
}

TEST(LifecycleTest, FiberBlockedInARawCallNeverRunsAgain) {
  if (goro_test::kTsan) GTEST_SKIP() << "no asynchronous preemption under TSan";
  goro_test::ExtendWatchdog(30s);
  for (RawCall call : {RawCall::kRead, RawCall::kCondWait, RawCall::kSleep,
                       RawCall::kGetline}) {
    for (int procs : {1, 2}) {
      SCOPED_TRACE(testing::Message()
                   << RawCallName(call) << ", procs=" << procs);
      int fds[2];
      ASSERT_EQ(pipe(fds), 0);
      FILE* in = fdopen(fds[0], "r");
      ASSERT_NE(in, nullptr);
      // Never destroyed: the abandoned fiber keeps the mutex locked, and a
      // std::condition_variable destroyed with a waiter blocks. Kept
      // reachable, so that LeakSanitizer does not count them.
      static auto* kept = new std::vector<std::unique_ptr<std::mutex>>;
      static auto* kept_cvs =
          new std::vector<std::unique_ptr<std::condition_variable>>;
      std::mutex* mu = kept->emplace_back(new std::mutex).get();
      std::condition_variable* cv =
          kept_cvs->emplace_back(new std::condition_variable).get();
      std::atomic<bool> entered{false}, after{false};
      const int threads_before = CountThreads();
      Clock::time_point main_returned;
      goro::run(Procs(procs), [&] {
        goro::go([&] {
          entered.store(true);
          switch (call) {
            case RawCall::kRead: {
              char c;
              (void)::read(fds[0], &c, 1);
              break;
            }
            case RawCall::kCondWait: {
              std::unique_lock<std::mutex> l(*mu);
              cv->wait(l);
              break;
            }
            case RawCall::kSleep:
              std::this_thread::sleep_for(1500ms);
              break;
            case RawCall::kGetline: {
              char line[16];
              (void)std::fgets(line, sizeof(line), in);
              break;
            }
          }
          after.store(true);
        });
        while (!entered.load()) goro::sleep_for(1ms);
        goro::sleep_for(20ms);  // into the call
        main_returned = Clock::now();
      });
      EXPECT_LT(Seconds(Clock::now() - main_returned), 1.0)
          << "run waited for the raw call";
      // Let the call return; the thread then exits without running the
      // fiber's code after it.
      if (call == RawCall::kCondWait) {
        { std::lock_guard<std::mutex> l(*mu); }
        cv->notify_all();
      }
      EXPECT_EQ(::write(fds[1], "x\n", 2), 2);
      EXPECT_TRUE(goro_test::WaitFor(
          [&] { return CountThreads() <= threads_before; }, 5s))
          << "the abandoned thread did not exit";
      EXPECT_FALSE(after.load()) << "the abandoned fiber ran on";
      if (call == RawCall::kCondWait) {
        // The wait re-locked the mutex before the hijacked return: it stays
        // held by the abandoned fiber, as Go's would when main returns.
        EXPECT_FALSE(mu->try_lock());
      }
      // The stdio lock fgets held is released before its return.
      EXPECT_EQ(::close(fds[1]), 0);
      EXPECT_EQ(std::fclose(in), 0);
    }
  }
  // A new runtime runs normally.
  EXPECT_EQ(goro::run([] {
              goro::Chan<int> c(0);
              goro::go([c] { c.send(7); });
              return *c.recv();
            }),
            7);
}

// Raw calls returning around the moment main returns (the hijack stub then
// waits for stop_all_ms to take the offer, or the call returns before the
// signal and the M stops by itself): whichever way each race goes, nothing
// touches freed memory (ASan), and the fiber's code after an offered call
// never runs.
TEST(LifecycleTest, RawCallsReturningAsRunEnds) {
  goro_test::ExtendWatchdog(60s);
  constexpr int kMaxRuns = 200;
  const int kRuns = goro_test::Scaled(kMaxRuns, 40);
  // Static: an abandoned fiber that ran on would read them after the test.
  static std::atomic<int> ran_after_end{0};
  static std::atomic<bool> ended_runs[kMaxRuns];
  for (int r = 0; r < kRuns; ++r) {
    std::atomic<bool>& ended = ended_runs[r];
    goro::run(Procs(1 + r % 2), [r, &ended] {
      for (int i = 0; i < 3; ++i) {
        goro::go([r, i, &ended] {
          for (int k = 0;; ++k) {
            // 1.5-4.5 ms: longer than the 2 ms after which run signals.
            const auto d =
                std::chrono::microseconds(1500 + (r * 37 + i * 101 + k) % 3000);
            std::this_thread::sleep_for(d);
            if (ended.load()) ran_after_end.fetch_add(1);
            goro::yield();
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::microseconds((r * 53) % 3000));
    });
    ended = true;
  }
  std::this_thread::sleep_for(20ms);  // the abandoned threads' last sleeps
  EXPECT_EQ(ran_after_end.load(), 0);
}

// Calls returning around the moment main returns: whichever way each race
// goes, nothing touches freed memory (run under ASan and TSan).
TEST(LifecycleTest, BlockingCallsReturningAsRunEnds) {
  goro_test::ExtendWatchdog(60s);
  const int kRuns = goro_test::Scaled(200, 40);
  for (int r = 0; r < kRuns; ++r) {
    goro::run(Procs(1 + r % 2), [r] {
      for (int i = 0; i < 3; ++i) {
        goro::go([r, i] {
          for (;;) {
            goro::blocking([&] {
              std::this_thread::sleep_for(
                  std::chrono::microseconds((r * 37 + i * 101) % 500));
            });
            goro::yield();
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::microseconds((r * 53) % 700));
    });
  }
}

// --- Out of address space for a stack
// -----------------------------------------

// Lowers RLIMIT_AS to what the process maps now plus `headroom`.
bool LimitAddressSpace(std::size_t headroom) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return false;
  char line[256];
  unsigned long long vm_kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmSize: %llu kB", &vm_kb) == 1) break;
  }
  std::fclose(f);
  if (vm_kb == 0) return false;
  rlimit r;
  if (getrlimit(RLIMIT_AS, &r) != 0) return false;
  r.rlim_cur = vm_kb * 1024 + headroom;  // the hard limit stays: raisable
  return setrlimit(RLIMIT_AS, &r) == 0;
}

// go() reserves the new fiber's stack: when that fails it throws
// std::bad_alloc with nothing queued, and the runtime goes on (the main
// fiber is still itself, the fibers spawned before run).
TEST(LifecycleDeathTest, GoThrowsBadAllocWhenNoStackCanBeMapped) {
  if (goro_test::kAsan || goro_test::kTsan) {
    GTEST_SKIP() << "sanitizers need more address space than a limit allows";
  }
  testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        alarm(20);  // the watchdog of the child
        const int code = goro::run(Procs(1), [] {
          const std::uint64_t id = goro::this_fiber::id();
          if (!LimitAddressSpace(std::size_t{96} << 20)) return 2;
          // Fibers that stay alive, each holding a 16 MiB stack.
          std::atomic<int> started{0}, ran{0};
          goro::WaitGroup gate;
          gate.add(1);
          int spawned = 0;
          bool threw = false;
          for (int i = 0; i < 1000 && !threw; ++i) {
            try {
              goro::go({.stack_size = std::size_t{16} << 20}, [&] {
                started.fetch_add(1);
                gate.wait();
                ran.fetch_add(1);
              });
              ++spawned;
            } catch (const std::bad_alloc&) {
              threw = true;
            }
            goro::yield();
          }
          // Lift the limit at once: at the limit, any allocation of the
          // runtime or the test (a new thread's malloc arena) would fail.
          rlimit r;
          getrlimit(RLIMIT_AS, &r);
          r.rlim_cur = r.rlim_max;
          if (setrlimit(RLIMIT_AS, &r) != 0) return 5;
          while (started.load() < spawned) goro::yield();
          gate.done();
          while (ran.load() < spawned) goro::yield();
          if (!threw) return 3;
          if (goro::this_fiber::id() != id) return 4;
          // The runtime still works.
          goro::WaitGroup wg;
          wg.add(1);
          goro::go([&wg] { wg.done(); });
          wg.wait();
          return 0;
        });
        std::fprintf(stderr, "child: run returned %d\n", code);
        std::_Exit(code);
      },
      ::testing::ExitedWithCode(0), "run returned 0");
}

// --- Plain threads using go() and channels while run ends -------------------

// Plain threads call go() and channel operations throughout the end of run;
// fibers are parked on the channels (receivers on `ch`, senders on `full`,
// receivers on `shared`, which outlives the runtimes) when main returns. The
// defined outcome: go() either queues a fiber that never runs or throws
// std::logic_error once the runtime is gone; an operation that takes a
// parked fiber of an ended runtime completes (a send's value goes to a
// fiber that never runs); close wakes such fibers without running them; and
// nothing touches freed memory (this test is meant for ASan and TSan).
TEST(LifecycleTest, PlainThreadsUseGoAndChannelsWhileRunEnds) {
  goro_test::ExtendWatchdog(120s);
  const int kRuns = goro_test::Scaled(40, 15);
  goro::Chan<int> shared;  // nil until the first run
  shared = goro::Chan<int>(0);
  std::atomic<long> fiber_runs_after{0};
  for (int r = 0; r < kRuns; ++r) {
    goro::Chan<int> ch(0), full(1);
    std::atomic<bool> stop{false}, run_returned{false};
    std::atomic<long> threw{0}, spawned{0};
    std::vector<std::thread> threads;
    goro::run(Procs(1 + r % 2), [&] {
      // Receivers parked on `shared` by the previous runs never run again:
      // sends to them complete; their fibers stay abandoned.
      while (shared.try_send(r)) {
      }
      for (int i = 0; i < 2; ++i) {
        goro::go([shared]() mutable { (void)shared.recv(); });
        goro::go([ch]() mutable {
          while (ch.recv()) {
          }
        });
        goro::go([full]() mutable {
          for (;;) full.send(1);
        });
      }
      for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
          while (!stop.load(std::memory_order_relaxed)) {
            try {
              goro::go([&] {
                if (run_returned.load()) fiber_runs_after.fetch_add(1);
              });
              spawned.fetch_add(1);
            } catch (const std::logic_error&) {
              threw.fetch_add(1);
            }
            (void)ch.try_send(t);
            (void)full.try_recv();
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::microseconds((r * 211) % 2000));
    });
    run_returned.store(true);
    // The runtime is gone: go() throws, the channel operations still work.
    EXPECT_TRUE(goro_test::WaitFor([&] { return threw.load() > 0; }, 5s));
    stop.store(true);
    for (auto& t : threads) t.join();
    (void)ch.try_send(1);  // taken by a receiver that never runs, if any
    ch.close();            // wakes the other receivers, which never run either
    full.close();
  }
  shared.close();
  EXPECT_EQ(fiber_runs_after.load(), 0);
}

}  // namespace
