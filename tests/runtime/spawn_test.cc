// Copyright goro authors.
//
// goro::go and the calls about the current fiber: ids, names, closures of
// every shape, SpawnOptions, migration between threads, and exceptions that
// live across switches.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;
using goro_test::SpawnAndWait;

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// Identity.

TEST(SpawnTest, IdsAreUniqueAndNonZero) {
  const int kN = goro_test::Scaled(5000, 500);
  std::vector<std::uint64_t> ids(static_cast<std::size_t>(kN));
  std::uint64_t main_id = 0;
  goro::run(Procs(2), [&] {
    main_id = goro::this_fiber::id();
    SpawnAndWait(kN, [&](int i) {
      const std::uint64_t id = goro::this_fiber::id();
      goro::yield();
      // Stable across a switch (which may move the fiber to another thread).
      EXPECT_EQ(goro::this_fiber::id(), id);
      ids[static_cast<std::size_t>(i)] = id;
    });
  });
  EXPECT_NE(main_id, 0u);
  std::set<std::uint64_t> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size());
  EXPECT_EQ(unique.count(0), 0u);
  EXPECT_EQ(unique.count(main_id), 0u);
}

TEST(SpawnTest, IdIsZeroOutsideAFiber) {
  EXPECT_EQ(goro::this_fiber::id(), 0u);
  goro::run([] {
    std::uint64_t from_thread = 1;
    std::thread t([&] { from_thread = goro::this_fiber::id(); });
    goro::blocking([&] { t.join(); });
    EXPECT_EQ(from_thread, 0u);
  });
  EXPECT_EQ(goro::this_fiber::id(), 0u);
}

// this_fiber.h: ids are "unique within the process, never 0, never reused
// (the main fiber of each run gets a fresh one)".
TEST(SpawnTest, IdsAreNeverReusedAcrossRuns) {
  std::vector<std::uint64_t> ids;
  std::mutex mu;
  for (int r = 0; r < 3; ++r) {
    goro::run(Procs(2), [&] {
      {
        std::lock_guard<std::mutex> l(mu);
        ids.push_back(goro::this_fiber::id());
      }
      SpawnAndWait(40, [&](int) {
        std::lock_guard<std::mutex> l(mu);
        ids.push_back(goro::this_fiber::id());
      });
    });
  }
  std::set<std::uint64_t> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size())
      << "fiber ids were reused across runs (main fiber ids: " << ids[0] << ", "
      << ids[41] << ", " << ids[82] << ")";
}

TEST(SpawnTest, NameComesFromSpawnOptions) {
  goro::run([] {
    EXPECT_EQ(goro::this_fiber::name(), "main");
    goro::WaitGroup wg;
    wg.add(3);
    goro::go(goro::SpawnOptions{.name = "parser"}, [&] {
      EXPECT_EQ(goro::this_fiber::name(), "parser");
      goro::yield();
      goro::sleep_for(1ms);
      EXPECT_EQ(goro::this_fiber::name(), "parser");
      wg.done();
    });
    goro::go([&] {
      EXPECT_TRUE(goro::this_fiber::name().empty());
      wg.done();
    });
    std::string long_name(200, 'n');
    goro::go(goro::SpawnOptions{.name = long_name}, [&] {
      EXPECT_EQ(goro::this_fiber::name(), long_name);
      wg.done();
    });
    wg.wait();
    // Recycled fiber objects must not keep an old name.
    SpawnAndWait(300,
                 [](int) { EXPECT_TRUE(goro::this_fiber::name().empty()); });
  });
  EXPECT_TRUE(goro::this_fiber::name().empty());
}

// ---------------------------------------------------------------------------
// Closures.

TEST(SpawnTest, MoveOnlyClosure) {
  int result = 0;
  goro::run([&] {
    goro::WaitGroup wg;
    wg.add(1);
    auto p = std::make_unique<int>(41);
    goro::go([&wg, &result, p = std::move(p)] {
      result = *p + 1;
      wg.done();
    });
    EXPECT_EQ(p, nullptr);  // moved into the fiber
    wg.wait();
  });
  EXPECT_EQ(result, 42);
}

TEST(SpawnTest, MoveOnlyClosureIsDestroyedExactlyOnce) {
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> weak = token;
  goro::run([&] {
    goro::WaitGroup wg;
    wg.add(1);
    // unique_ptr owning a shared_ptr: the closure's destructor releases it.
    auto holder = std::make_unique<std::shared_ptr<int>>(std::move(token));
    goro::go([&wg, h = std::move(holder)] {
      ++**h;
      wg.done();
    });
    wg.wait();
    for (int i = 0; i < 5000 && !weak.expired(); ++i) goro::sleep_for(1ms);
  });
  EXPECT_TRUE(weak.expired());
}

template <std::size_t N>
void CheckClosureOfSize() {
  std::array<unsigned char, N> data;
  for (std::size_t i = 0; i < N; ++i)
    data[i] = static_cast<unsigned char>(i * 7 + 1);
  std::atomic<bool> ok{false};
  goro::WaitGroup wg;
  wg.add(1);
  auto fn = [&ok, &wg, data] {
    bool good = true;
    for (std::size_t i = 0; i < N; ++i) {
      good &= data[i] == static_cast<unsigned char>(i * 7 + 1);
    }
    goro::yield();  // the closure must survive switches too
    ok.store(good);
    wg.done();
  };
  goro::go(std::move(fn));
  wg.wait();
  EXPECT_TRUE(ok.load()) << "closure of " << sizeof(fn) << " bytes";
}

TEST(SpawnTest, ClosuresOfEverySize) {
  goro::run([] {
    CheckClosureOfSize<1>();
    CheckClosureOfSize<32>();  // 48 bytes with the two references: inline
    CheckClosureOfSize<33>();  // just over the inline limit
    CheckClosureOfSize<64>();
    CheckClosureOfSize<1000>();
    CheckClosureOfSize<4096>();  // (the main fiber's stack is 8 MiB)
  });
}

struct alignas(64) OverAligned {
  std::atomic<bool>* aligned;
  goro::WaitGroup* wg;
  void operator()() const {
    aligned->store(reinterpret_cast<std::uintptr_t>(this) % 64 == 0);
    wg->done();
  }
};

TEST(SpawnTest, OverAlignedClosure) {
  std::atomic<bool> aligned{false};
  goro::run([&] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(OverAligned{&aligned, &wg});
    wg.wait();
  });
  EXPECT_TRUE(aligned.load());
}

struct CopyCounter {
  std::shared_ptr<std::atomic<int>> calls;
  void operator()() const { calls->fetch_add(1); }
};

TEST(SpawnTest, LvalueClosureIsCopiedAndMaySpawnMany) {
  CopyCounter c{std::make_shared<std::atomic<int>>(0)};
  goro::run([&] {
    for (int i = 0; i < 10; ++i) goro::go(c);
    for (int i = 0; i < 1000 && c.calls->load() < 10; ++i) goro::sleep_for(1ms);
  });
  EXPECT_EQ(c.calls->load(), 10);
}

struct ThrowingCopy {
  std::atomic<int>* runs;
  ThrowingCopy(std::atomic<int>* r) : runs(r) {}
  ThrowingCopy(const ThrowingCopy&) { throw std::runtime_error("copy failed"); }
  void operator()() const { runs->fetch_add(1); }
};

TEST(SpawnTest, ExceptionFromCopyingTheClosurePropagatesAndNoFiberIsCreated) {
  std::atomic<int> runs{0};
  goro::run(Procs(1), [&] {
    const std::uint64_t before = goro::stats().fibers_created;
    ThrowingCopy fn(&runs);
    for (int i = 0; i < 300; ++i) {  // more than a P's free list holds
      EXPECT_THROW(goro::go(fn), std::runtime_error);
    }
    goro::yield();
    goro::sleep_for(1ms);
    EXPECT_EQ(goro::stats().fibers_created, before);
    EXPECT_EQ(goro::stats().fibers_live, 1u);  // just main
    // The discarded fibers are recycled and go() still works.
    goro::WaitGroup wg;
    wg.add(50);
    for (int i = 0; i < 50; ++i) goro::go([&] { wg.done(); });
    wg.wait();
  });
  EXPECT_EQ(runs.load(), 0);
}

// ---------------------------------------------------------------------------
// SpawnOptions::stack_size.

TEST(SpawnTest, BadStackSizeThrowsInvalidArgument) {
  goro::run([] {
    EXPECT_THROW(goro::go(goro::SpawnOptions{.stack_size = 1000}, [] {}),
                 std::invalid_argument);
    EXPECT_THROW(
        goro::go(goro::SpawnOptions{.stack_size = 16 * 1024 - 1}, [] {}),
        std::invalid_argument);
    EXPECT_THROW(
        goro::go(goro::SpawnOptions{.stack_size = (std::size_t{1} << 30) + 1},
                 [] {}),
        std::invalid_argument);
    try {
      goro::go(goro::SpawnOptions{.stack_size = 1000}, [] {});
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("stack_size"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(goro::stats().fibers_live, 1u);
  });
}

// Uses about `bytes` of stack in 1 KiB frames.
__attribute__((noinline)) int UseStack(int kib) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(kib);
  frame[1023] = 1;
  if (kib <= 1) return frame[0] + frame[1023];
  return UseStack(kib - 1) + frame[1023];
}

TEST(SpawnTest, StackSizeIsHonoured) {
  goro::run([] {
    goro::WaitGroup wg;
    wg.add(3);
    goro::go(goro::SpawnOptions{.stack_size = goro::min_stack_size()}, [&] {
      auto* f = goro::runtime_internal::current_m()->curg();
      EXPECT_EQ(f->stack.size, goro::min_stack_size());
      wg.done();
    });
    goro::go(goro::SpawnOptions{.stack_size = 100000}, [&] {
      // Rounded up to whole pages.
      EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
                102400u);
      wg.done();
    });
    goro::go(goro::SpawnOptions{.stack_size = 1 << 20}, [&] {
      EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
                1u << 20);
      // Far more than the default 256 KiB.
      EXPECT_GT(UseStack(goro_test::kAsan ? 300 : 700), 0);
      goro::yield();
      EXPECT_GT(UseStack(goro_test::kAsan ? 300 : 700), 0);
      wg.done();
    });
    wg.wait();
    // Default size.
    wg.add(1);
    goro::go([&] {
      EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
                256u * 1024);
      EXPECT_GT(UseStack(40), 0);
      wg.done();
    });
    wg.wait();
  });
}

// ---------------------------------------------------------------------------
// Migration: a fiber may resume on another OS thread after a switch.

TEST(SpawnTest, FiberResumesOnAnotherThreadAfterASwitch) {
  // F parks on a WaitGroup; a fiber that runs on a different OS thread
  // readies it (into that thread's P), so F resumes there. Several wakers
  // yield in a loop so that both Ps have work; whichever finds itself on a
  // thread other than F's fires. Repeated until observed.
  using Clock = std::chrono::steady_clock;
  bool moved = false;
  int attempts = 0;
  goro::run(Procs(2), [&] {
    const auto deadline = Clock::now() + 30s;
    while (!moved && Clock::now() < deadline) {
      ++attempts;
      constexpr int kWakers = 4;
      goro::WaitGroup w, wakers, f_done;
      std::atomic<pid_t> parked_on{0};
      std::atomic<bool> fired{false}, resumed{false};
      std::uint64_t id_before = 0, id_after = 0;
      pid_t resumed_on = 0;
      w.add(1);
      f_done.add(1);
      goro::go([&] {
        id_before = goro::this_fiber::id();
        parked_on.store(goro_test::Gettid());
        w.wait();
        resumed_on = goro_test::Gettid();
        id_after = goro::this_fiber::id();
        resumed.store(true);
        f_done.done();
      });
      wakers.add(kWakers);
      for (int i = 0; i < kWakers; ++i) {
        goro::go([&] {
          const auto give_up = Clock::now() + 1s;
          while (!resumed.load() && Clock::now() < give_up) {
            const pid_t p = parked_on.load();
            if (p != 0 && p != goro_test::Gettid() && !fired.exchange(true)) {
              w.done();
            }
            for (int k = 0; k < 1000; ++k) asm volatile("");
            goro::yield();
          }
          wakers.done();
        });
      }
      wakers.wait();
      if (!fired.exchange(true)) w.done();
      f_done.wait();
      EXPECT_EQ(id_after, id_before);
      if (resumed_on != parked_on.load()) moved = true;
    }
  });
  EXPECT_TRUE(moved) << "no fiber resumed on another thread in " << attempts
                     << " attempts";
}

// ---------------------------------------------------------------------------
// Exceptions across switches: each fiber has its own exception state.

TEST(SpawnTest, ExceptionsThrownAndCaughtAcrossYields) {
  for (int procs : {1, 2}) {
    std::atomic<int> ok{0};
    const int kN = 20;
    goro::run(Procs(procs), [&] {
      SpawnAndWait(kN, [&](int i) {
        const std::string msg = "fiber " + std::to_string(i);
        try {
          try {
            goro::yield();
            throw std::runtime_error(msg);
          } catch (const std::runtime_error& e) {
            // Switch while the exception is being handled; other fibers
            // throw and catch their own meanwhile, possibly on this thread.
            goro::yield();
            goro::sleep_for(100us);
            goro::yield();
            EXPECT_EQ(std::string(e.what()), msg);
            EXPECT_NE(std::current_exception(), nullptr);
            throw;  // rethrow after resuming
          }
        } catch (const std::runtime_error& e) {
          EXPECT_EQ(std::string(e.what()), msg);
          goro::yield();
          EXPECT_EQ(std::string(e.what()), msg);
          ok.fetch_add(1);
        }
        EXPECT_EQ(std::current_exception(), nullptr);
        EXPECT_EQ(std::uncaught_exceptions(), 0);
      });
    });
    EXPECT_EQ(ok.load(), kN) << "procs " << procs;
  }
}

TEST(SpawnTest, CurrentExceptionIsPerFiber) {
  goro::run(Procs(1), [] {
    goro::WaitGroup wg;
    std::atomic<int> phase{0};
    wg.add(2);
    goro::go([&] {  // A: sits in a catch block across yields
      try {
        throw std::logic_error("A's");
      } catch (...) {
        phase.store(1);
        while (phase.load() != 2) goro::yield();
        try {
          std::rethrow_exception(std::current_exception());
        } catch (const std::logic_error& e) {
          EXPECT_STREQ(e.what(), "A's");
        }
      }
      wg.done();
    });
    goro::go([&] {  // B: not handling anything
      while (phase.load() != 1) goro::yield();
      EXPECT_EQ(std::current_exception(), nullptr);
      EXPECT_EQ(std::uncaught_exceptions(), 0);
      phase.store(2);
      wg.done();
    });
    wg.wait();
  });
}

struct YieldsDuringUnwinding {
  std::atomic<int>* phase;
  int* seen_before;
  int* seen_after;
  ~YieldsDuringUnwinding() {
    *seen_before = std::uncaught_exceptions();
    phase->store(1);
    while (phase->load() != 2) goro::yield();
    *seen_after = std::uncaught_exceptions();
  }
};

TEST(SpawnTest, UncaughtExceptionsIsPerFiber) {
  for (int procs : {1, 2}) {
    int a_before = -1, a_after = -1, b_seen = -1;
    bool caught = false;
    goro::run(Procs(procs), [&] {
      std::atomic<int> phase{0};
      goro::WaitGroup wg;
      wg.add(2);
      goro::go([&] {
        try {
          YieldsDuringUnwinding guard{&phase, &a_before, &a_after};
          throw std::runtime_error("unwinding");
        } catch (const std::runtime_error&) {
          caught = true;
        }
        wg.done();
      });
      goro::go([&] {
        while (phase.load() != 1) goro::yield();
        b_seen = std::uncaught_exceptions();
        phase.store(2);
        wg.done();
      });
      wg.wait();
    });
    EXPECT_EQ(a_before, 1) << "procs " << procs;
    EXPECT_EQ(b_seen, 0) << "procs " << procs;
    EXPECT_EQ(a_after, 1) << "procs " << procs;
    EXPECT_TRUE(caught);
  }
}

// Many fibers spawning fibers (a tree), across 2 Ps.
TEST(SpawnTest, FibersSpawnFibers) {
  std::atomic<int> leaves{0};
  const int kDepth = goro_test::Scaled(4, 3), kFan = 6;
  struct Tree {
    static void Grow(int depth, int fan, std::atomic<int>* leaves) {
      if (depth == 0) {
        leaves->fetch_add(1);
        return;
      }
      goro::WaitGroup wg;
      wg.add(fan);
      for (int i = 0; i < fan; ++i) {
        goro::go([&wg, depth, fan, leaves] {
          Grow(depth - 1, fan, leaves);
          wg.done();
        });
      }
      wg.wait();
    }
  };
  goro::run(Procs(2), [&] { Tree::Grow(kDepth, kFan, &leaves); });
  int expect = 1;
  for (int i = 0; i < kDepth; ++i) expect *= kFan;
  EXPECT_EQ(leaves.load(), expect);
}

}  // namespace
