// Copyright goro authors.
//
// State the OS holds for a thread on behalf of a fiber (issue 8, section 2):
// every pthread lock entry point, function-local static initialisation
// (__cxa_guard_*), pthread_once, std::call_once and C11 call_once. A fiber
// that holds such state must not be preempted asynchronously: another fiber
// of the same thread that reaches the same state would block (or spin) the
// thread, and the holder, pinned to that thread, could never run to release
// it.
//
// Each case runs two fibers on one P with a 1 ms slice. The holder takes the
// state, computes in program text (where a SIGURG may switch) for longer than
// many slices, releases, then spins until the contender has run, which only
// an asynchronous preemption allows. The contender first checks whether the
// holder is still inside: if so, the holder was preempted while holding, and
// the case fails by assertion instead of hanging in the contender's lock
// call. A watchdog turns any hang (a held count that leaked, say) into a
// clear failure.
//
// Built with -fomit-frame-pointer (BUILD.bazel), like most user code. The
// libunwind walk also sees a libc frame (pthread_once, call_once) below an
// init routine; the held-state count is what covers locks and guards taken
// by code inlined into the program (std::mutex, static guards).
//
// Not run under TSan: asynchronous preemption is off there.

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

// C11 <threads.h> (glibc), declared here: the header's names clash with
// C++'s in a C++ file. once_flag is glibc's __once_flag; mtx_t is a union
// with pthread_mutex_t's size and alignment.
struct C11Mtx {
  alignas(pthread_mutex_t) unsigned char storage[sizeof(pthread_mutex_t)];
};
extern "C" {
void call_once(__once_flag* flag, void (*func)(void));
int mtx_init(C11Mtx* m, int type);
int mtx_lock(C11Mtx* m);
int mtx_trylock(C11Mtx* m);
int mtx_timedlock(C11Mtx* m, const struct timespec* t);
int mtx_unlock(C11Mtx* m);
void mtx_destroy(C11Mtx* m);
}
constexpr int kMtxTimed = 2;     // mtx_timed
constexpr int kThrdSuccess = 0;  // thrd_success

namespace {

using namespace std::chrono_literals;

constexpr auto kHold = 60ms;  // 60 slices: sysmon certainly signals inside

using goro_test::OneProc;

// Call-free spin on a relaxed load: only a signal can take the CPU away.
__attribute__((noinline)) std::uint64_t spin_until(
    const std::atomic<bool>& stop) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) ++n;
  return n;
}

// Computes in program text for about `d` (plenty of preemptible pcs; the
// clock reads are a small part).
__attribute__((noinline)) void busy_for(std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  std::uint64_t n = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 20000; ++i) n = n * 3 + 1;
    __asm__ volatile("" : "+r"(n));
  }
}

// Ends the test binary if `body` has not returned after `limit`.
template <typename F>
void with_watchdog(std::chrono::seconds limit, const std::string& what,
                   F body) {
  std::atomic<bool> done{false};
  std::thread dog([&] {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done.load() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(10ms);
    }
    if (!done.load()) {
      std::fprintf(stderr, "watchdog: hung for %llds: %s\n",
                   static_cast<long long>(limit.count()), what.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
  });
  body();
  done = true;
  dog.join();
}

// The holder's critical section, as handed to a `hold` function: marks
// itself inside and computes for kHold.
struct Inside {
  std::atomic<bool>* flag;
  void operator()() const {
    flag->store(true);
    busy_for(kHold);
    flag->store(false);
  }
};

// Runs `hold(inside)` (take the state, call inside(), release it) on one
// fiber and `contend()` (take and release the same state, blocking) on
// another fiber of the same thread; see the top of the file.
void expect_not_preempted_while_held(
    const std::string& what, const std::function<void(const Inside&)>& hold,
    const std::function<void()>& contend) {
  SCOPED_TRACE(what);
  with_watchdog(15s, what, [&] {
    goro::run(OneProc(1ms), [&] {
      std::atomic<bool> inside{false}, entered{false}, stop{false};
      std::atomic<bool> ran_inside{false};
      goro::WaitGroup wg;
      wg.add(2);
      goro::go([&] {
        entered = true;
        hold(Inside{&inside});
        spin_until(stop);  // only a preemption lets the contender in
        wg.done();
      });
      goro::go([&] {
        while (!entered.load()) goro::yield();
        if (inside.load()) {
          // The holder was switched out while holding: contending now would
          // block (or spin) this thread forever.
          ran_inside = true;
        } else {
          contend();
        }
        stop = true;
        wg.done();
      });
      wg.wait();
      EXPECT_FALSE(ran_inside.load())
          << "the holder was preempted while holding: " << what;
      EXPECT_GT(goro::stats().refused_os_lock, 0u);
    });
  });
}

// A clock deadline `d` from now, for the timed and clock lock calls.
timespec deadline(clockid_t clock, std::chrono::seconds d) {
  timespec t;
  clock_gettime(clock, &t);
  t.tv_sec += d.count();
  return t;
}

// --- pthread mutexes -----------------------------------------------------

TEST(OsState, MutexLock) {
  std::mutex mu;
  expect_not_preempted_while_held(
      "pthread_mutex_lock (std::mutex::lock)",
      [&](const Inside& in) {
        std::lock_guard<std::mutex> l(mu);
        in();
      },
      [&] { std::lock_guard<std::mutex> l(mu); });
}

TEST(OsState, MutexTrylock) {
  std::mutex mu;
  expect_not_preempted_while_held(
      "pthread_mutex_trylock (std::mutex::try_lock)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock());
        in();
        mu.unlock();
      },
      [&] { std::lock_guard<std::mutex> l(mu); });
}

TEST(OsState, MutexTimedlock) {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  expect_not_preempted_while_held(
      "pthread_mutex_timedlock",
      [&](const Inside& in) {
        const timespec t = deadline(CLOCK_REALTIME, 10s);
        ASSERT_EQ(pthread_mutex_timedlock(&mu, &t), 0);
        in();
        pthread_mutex_unlock(&mu);
      },
      [&] {
        pthread_mutex_lock(&mu);
        pthread_mutex_unlock(&mu);
      });
}

// std::timed_mutex::try_lock_for is pthread_mutex_clocklock in libstdc++ 12.
TEST(OsState, TimedMutexTryLockFor) {
  std::timed_mutex mu;
  expect_not_preempted_while_held(
      "pthread_mutex_clocklock (std::timed_mutex::try_lock_for)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock_for(10s));
        in();
        mu.unlock();
      },
      [&] { std::lock_guard<std::timed_mutex> l(mu); });
}

TEST(OsState, MutexClocklockRealtime) {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  expect_not_preempted_while_held(
      "pthread_mutex_clocklock (CLOCK_REALTIME)",
      [&](const Inside& in) {
        const timespec t = deadline(CLOCK_REALTIME, 10s);
        ASSERT_EQ(pthread_mutex_clocklock(&mu, CLOCK_REALTIME, &t), 0);
        in();
        pthread_mutex_unlock(&mu);
      },
      [&] {
        pthread_mutex_lock(&mu);
        pthread_mutex_unlock(&mu);
      });
}

// A robust mutex whose owner died is acquired with EOWNERDEAD: held all the
// same.
TEST(OsState, RobustMutexOwnerDead) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_t mu;
  pthread_mutex_init(&mu, &attr);
  pthread_mutexattr_destroy(&attr);
  std::thread([&] { pthread_mutex_lock(&mu); }).join();  // dies holding it
  expect_not_preempted_while_held(
      "pthread_mutex_lock returning EOWNERDEAD",
      [&](const Inside& in) {
        ASSERT_EQ(pthread_mutex_lock(&mu), EOWNERDEAD);
        pthread_mutex_consistent(&mu);
        in();
        pthread_mutex_unlock(&mu);
      },
      [&] {
        pthread_mutex_lock(&mu);
        pthread_mutex_unlock(&mu);
      });
  pthread_mutex_destroy(&mu);
}

// C11 mutexes: glibc implements them with its private pthread entry points.
TEST(OsState, C11Mutex) {
  C11Mtx mu;
  ASSERT_EQ(mtx_init(&mu, kMtxTimed), kThrdSuccess);
  auto contend = [&] {
    mtx_lock(&mu);
    mtx_unlock(&mu);
  };
  expect_not_preempted_while_held(
      "mtx_lock",
      [&](const Inside& in) {
        ASSERT_EQ(mtx_lock(&mu), kThrdSuccess);
        in();
        mtx_unlock(&mu);
      },
      contend);
  expect_not_preempted_while_held(
      "mtx_trylock",
      [&](const Inside& in) {
        ASSERT_EQ(mtx_trylock(&mu), kThrdSuccess);
        in();
        mtx_unlock(&mu);
      },
      contend);
  expect_not_preempted_while_held(
      "mtx_timedlock",
      [&](const Inside& in) {
        const timespec t = deadline(CLOCK_REALTIME, 10s);
        ASSERT_EQ(mtx_timedlock(&mu, &t), kThrdSuccess);
        in();
        mtx_unlock(&mu);
      },
      contend);
  mtx_destroy(&mu);
}

// --- pthread rwlocks -----------------------------------------------------

TEST(OsState, RwlockRdlock) {
  std::shared_mutex mu;
  expect_not_preempted_while_held(
      "pthread_rwlock_rdlock (std::shared_mutex::lock_shared)",
      [&](const Inside& in) {
        std::shared_lock<std::shared_mutex> l(mu);
        in();
      },
      [&] { std::lock_guard<std::shared_mutex> l(mu); });
}

TEST(OsState, RwlockTryrdlock) {
  std::shared_mutex mu;
  expect_not_preempted_while_held(
      "pthread_rwlock_tryrdlock (std::shared_mutex::try_lock_shared)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock_shared());
        in();
        mu.unlock_shared();
      },
      [&] { std::lock_guard<std::shared_mutex> l(mu); });
}

TEST(OsState, RwlockTrywrlock) {
  std::shared_mutex mu;
  expect_not_preempted_while_held(
      "pthread_rwlock_trywrlock (std::shared_mutex::try_lock)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock());
        in();
        mu.unlock();
      },
      [&] { std::shared_lock<std::shared_mutex> l(mu); });
}

TEST(OsState, RwlockTimedrdlockAndTimedwrlock) {
  pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
  expect_not_preempted_while_held(
      "pthread_rwlock_timedrdlock",
      [&](const Inside& in) {
        const timespec t = deadline(CLOCK_REALTIME, 10s);
        ASSERT_EQ(pthread_rwlock_timedrdlock(&rw, &t), 0);
        in();
        pthread_rwlock_unlock(&rw);
      },
      [&] {
        pthread_rwlock_wrlock(&rw);
        pthread_rwlock_unlock(&rw);
      });
  expect_not_preempted_while_held(
      "pthread_rwlock_timedwrlock",
      [&](const Inside& in) {
        const timespec t = deadline(CLOCK_REALTIME, 10s);
        ASSERT_EQ(pthread_rwlock_timedwrlock(&rw, &t), 0);
        in();
        pthread_rwlock_unlock(&rw);
      },
      [&] {
        pthread_rwlock_rdlock(&rw);
        pthread_rwlock_unlock(&rw);
      });
}

// std::shared_timed_mutex's timed calls are pthread_rwlock_clock{rd,wr}lock
// in libstdc++ 12; a contender's lock() on the same thread as a write holder
// fails with EDEADLK (std::system_error), and behind a read holder it hangs.
TEST(OsState, SharedTimedMutexTryLockFor) {
  std::shared_timed_mutex mu;
  expect_not_preempted_while_held(
      "pthread_rwlock_clockwrlock (std::shared_timed_mutex::try_lock_for)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock_for(10s));
        in();
        mu.unlock();
      },
      [&] { std::lock_guard<std::shared_timed_mutex> l(mu); });
}

TEST(OsState, SharedTimedMutexTryLockSharedFor) {
  std::shared_timed_mutex mu;
  expect_not_preempted_while_held(
      "pthread_rwlock_clockrdlock "
      "(std::shared_timed_mutex::try_lock_shared_for)",
      [&](const Inside& in) {
        ASSERT_TRUE(mu.try_lock_shared_for(10s));
        in();
        mu.unlock_shared();
      },
      [&] { std::lock_guard<std::shared_timed_mutex> l(mu); });
}

// --- pthread spin locks ----------------------------------------------------

TEST(OsState, SpinLockAndTrylock) {
  pthread_spinlock_t sl;
  pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE);
  expect_not_preempted_while_held(
      "pthread_spin_lock",
      [&](const Inside& in) {
        pthread_spin_lock(&sl);
        in();
        pthread_spin_unlock(&sl);
      },
      [&] {
        pthread_spin_lock(&sl);
        pthread_spin_unlock(&sl);
      });
  expect_not_preempted_while_held(
      "pthread_spin_trylock",
      [&](const Inside& in) {
        ASSERT_EQ(pthread_spin_trylock(&sl), 0);
        in();
        pthread_spin_unlock(&sl);
      },
      [&] {
        pthread_spin_lock(&sl);
        pthread_spin_unlock(&sl);
      });
  pthread_spin_destroy(&sl);
}

// --- One-time initialisation -----------------------------------------------

// A function-local static whose initialiser runs `in` (once per N: every
// case needs a static of its own). A second fiber of the same thread that
// reaches it mid-initialisation waits in __cxa_guard_acquire on a futex.
template <int N>
__attribute__((noinline)) int slow_static(const Inside* in) {
  static const int value = [in] {
    (*in)();
    return N;
  }();
  return value;
}

TEST(OsState, FunctionLocalStaticInitialiser) {
  expect_not_preempted_while_held(
      "__cxa_guard_acquire (a function-local static's initialiser)",
      [](const Inside& in) { EXPECT_EQ(slow_static<1>(&in), 1); },
      [] { EXPECT_EQ(slow_static<1>(nullptr), 1); });
}

// An initialiser that throws ends in __cxa_guard_abort; a later call
// initialises again. The count must come back to zero after each (else the
// holder's spin_until could never be preempted: the watchdog fires).
template <int N>
__attribute__((noinline)) int throwing_static(const Inside* in, bool fail) {
  static const int value = [in, fail] {
    if (in != nullptr) (*in)();
    if (fail) throw std::runtime_error("initialiser failed");
    return N;
  }();
  return value;
}

TEST(OsState, FunctionLocalStaticInitialiserThatThrows) {
  expect_not_preempted_while_held(
      "__cxa_guard_abort (an initialiser that throws)",
      [](const Inside& in) {
        EXPECT_THROW(throwing_static<2>(&in, true), std::runtime_error);
      },
      [] { EXPECT_EQ(throwing_static<2>(nullptr, false), 2); });
}

// __cxa_guard_acquire returns 0, with no release to follow, when another
// thread finished the initialisation while this one waited: not counted.
TEST(OsState, FunctionLocalStaticInitialisedByAnotherThread) {
  std::atomic<bool> started{false};
  static std::atomic<bool>* started_p;
  started_p = &started;
  auto init = [] {
    static const int value = [] {
      started_p->store(true);
      std::this_thread::sleep_for(200ms);
      return 3;
    }();
    return value;
  };
  std::thread initialiser([&] { EXPECT_EQ(init(), 3); });
  with_watchdog(15s, "after a guard acquire that returned 0", [&] {
    goro::run(OneProc(1ms), [&] {
      std::atomic<bool> stop{false}, initialised{false};
      goro::WaitGroup wg;
      wg.add(2);
      goro::go([&] {
        while (!started.load()) std::this_thread::yield();
        EXPECT_EQ(init(), 3);  // waits for the other thread, gets 0
        initialised = true;
        spin_until(stop);  // must be preemptible again
        wg.done();
      });
      goro::go([&] {
        while (!initialised.load()) goro::yield();
        stop = true;
        wg.done();
      });
      wg.wait();
    });
  });
  initialiser.join();
}

pthread_once_t g_pthread_once = PTHREAD_ONCE_INIT;
const Inside* g_pthread_once_inside = nullptr;

TEST(OsState, PthreadOnce) {
  expect_not_preempted_while_held(
      "pthread_once",
      [](const Inside& in) {
        g_pthread_once_inside = &in;
        ASSERT_EQ(
            pthread_once(&g_pthread_once, [] { (*g_pthread_once_inside)(); }),
            0);
      },
      [] { ASSERT_EQ(pthread_once(&g_pthread_once, [] {}), 0); });
}

TEST(OsState, StdCallOnce) {
  std::once_flag flag;
  expect_not_preempted_while_held(
      "std::call_once (pthread_once)",
      [&](const Inside& in) { std::call_once(flag, [&] { in(); }); },
      [&] { std::call_once(flag, [] {}); });
}

__once_flag g_c11_once = {0};  // ONCE_FLAG_INIT
const Inside* g_c11_once_inside = nullptr;

TEST(OsState, C11CallOnce) {
  expect_not_preempted_while_held(
      "call_once (C11)",
      [](const Inside& in) {
        g_c11_once_inside = &in;
        call_once(&g_c11_once, [] { (*g_c11_once_inside)(); });
      },
      [] { call_once(&g_c11_once, [] {}); });
}

// std::call_once stores the callable in two libstdc++ thread-locals
// (std::__once_callable, std::__once_call) in inline code, then calls
// pthread_once, whose proxy reads them. A fiber preempted between the two
// would find them overwritten (or cleared) by another fiber's call_once on
// the same thread: it would run the other fiber's callable, or call through
// a null pointer. Both fibers here loop over call_once; one on fresh flags
// (the callable runs), the other on a flag that is already done (its
// call_once only sets and clears the thread-locals). Every fresh flag must
// run this fiber's own callable exactly once.
TEST(OsState, StdCallOnceThreadLocalsSurvivePreemption) {
  constexpr auto kFor = 1s;
  constexpr std::size_t kChunk = 1 << 16;
  std::uint64_t calls = 0, ran = 0, foreign = 0;
  goro::Stats st;
  with_watchdog(30s, "std::call_once thread-locals", [&] {
    goro::run(OneProc(100us), [&] {
      std::atomic<bool> stop{false};
      goro::WaitGroup wg;
      wg.add(2);
      goro::go([&] {
        const auto end = std::chrono::steady_clock::now() + kFor;
        while (std::chrono::steady_clock::now() < end) {
          auto flags = std::make_unique<std::once_flag[]>(kChunk);
          for (std::size_t i = 0; i < kChunk; ++i) {
            std::call_once(flags[i], [&] { ++ran; });
            ++calls;
          }
        }
        stop = true;
        wg.done();
      });
      goro::go([&] {
        std::once_flag done;
        std::call_once(done, [] {});
        while (!stop.load(std::memory_order_relaxed)) {
          std::call_once(done, [&] { ++foreign; });
        }
        wg.done();
      });
      wg.wait();
      st = goro::stats();
    });
  });
  EXPECT_EQ(foreign, 0u) << "a fiber ran another fiber's call_once callable";
  EXPECT_EQ(ran, calls);
  // Most signals land in pthread_once (refused); enough land in between.
  EXPECT_GT(st.preemptions_async, 0u);
}

}  // namespace
