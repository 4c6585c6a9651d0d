// Copyright goro authors.
//
// The one set of helpers every goro test uses (tests/runtime, tests/sync,
// tests/preempt, tests/docs). docs/testing.md is the recipe; in short:
//
//   * Sanitizers: kTsan, kAsan, kSanitizer, and Scaled(normal, reduced) to
//     shrink stress counts under a sanitizer.
//   * Watchdog: every test in a binary that depends on //tests/common:test_util
//     runs under a watchdog (installed by test_util.cc; nothing to call). A
//     test still running after WatchdogLimit() -- 10 s, 60 s under a
//     sanitizer -- makes the binary print
//       [goro watchdog] FAILED: Suite.Test did not finish within 10 s
//     with the last WatchdogNote() ("what is stuck"), goro::stats() and the
//     state of every thread, and exit with status 1: a hang then costs 10 s
//     and says where it is, instead of Bazel's 300 s timeout and silence. A
//     fiber that hangs cannot be unwound, so exiting is the only way out.
//     Tests that legitimately run longer call ExtendWatchdog() first.
//   * Timing: Samples collects durations; QuantileBelow / QuantileBetween
//     assert a quantile (median, p90) of at least kMinTimingSamples samples.
//     Call GORO_SKIP_TIMING_UNDER_SANITIZERS() first in a test that asserts
//     timing: it skips the test (GTEST_SKIP, so CI lists it as skipped) in a
//     sanitizer build, where time measures the sanitizer.
//   * Fibers: FiberGroup, SpawnAndWait, AwaitInFiber, Procs, OneProc.
//   * Environment: ScopedEnv, CleanGoroEnv, WaitFor (plain threads), Gettid.

#ifndef GORO_TESTS_COMMON_TEST_UTIL_H_
#define GORO_TESTS_COMMON_TEST_UTIL_H_

#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"

namespace goro_test {

// --- Sanitizers --------------------------------------------------------------

#if defined(__SANITIZE_THREAD__)
inline constexpr bool kTsan = true;
#else
inline constexpr bool kTsan = false;
#endif
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAsan = true;
#else
inline constexpr bool kAsan = false;
#endif
inline constexpr bool kSanitizer = kTsan || kAsan;

// `normal` in optimized builds, `reduced` under a sanitizer (TSan cannot
// afford many fibers; ASan is several times slower).
template <typename T>
constexpr T Scaled(T normal, T reduced) {
  return kSanitizer ? reduced : normal;
}

// --- Watchdog ----------------------------------------------------------------

// WatchdogLimit is how long the current test may run before the watchdog
// fails it: 10 s (60 s under a sanitizer), or GORO_TEST_WATCHDOG seconds if
// set, or what ExtendWatchdog set for this test.
std::chrono::seconds WatchdogLimit();

// ExtendWatchdog lets the current test run for `total` (from its start)
// before the watchdog fires; multiplied by 6 under a sanitizer. For tests
// that are long by design (a million fibers); say why at the call.
void ExtendWatchdog(std::chrono::seconds total);

// WatchdogNote records what the test is doing or waiting for now; the
// watchdog prints the latest note if the test hangs. Thread-safe; cheap
// enough for a loop that waits, not for a hot loop.
void WatchdogNote(std::string what);

// WatchdogReport is what the watchdog prints (note, goro::stats(), threads);
// exposed so a test can print it on a failure of its own.
std::string WatchdogReport();

// --- Timing ------------------------------------------------------------------

// Statistical timing assertions need at least this many samples.
inline constexpr std::size_t kMinTimingSamples = 50;

// Samples is a set of measured durations, for quantile assertions.
class Samples {
 public:
  explicit Samples(std::string what) : what_(std::move(what)) {}
  void Add(std::chrono::nanoseconds d) { v_.push_back(d); }
  std::size_t size() const { return v_.size(); }
  const std::string& what() const { return what_; }
  // Nearest-rank quantile, q in [0, 1]; 0 when empty.
  std::chrono::nanoseconds Quantile(double q) const;
  std::chrono::nanoseconds Median() const { return Quantile(0.5); }
  // "what: n=60 min=.. p50=.. p90=.. max=.. us"
  std::string Summary() const;

 private:
  std::string what_;
  std::vector<std::chrono::nanoseconds> v_;
};

// QuantileBelow succeeds iff `s` has at least kMinTimingSamples samples and
// its quantile `q` is below `bound`. Choose the bound well above the
// documented figure (so a loaded two-core machine passes) and below what a
// bug produces (so the bug fails it). The message carries the summary.
testing::AssertionResult QuantileBelow(const Samples& s, double q,
                                       std::chrono::nanoseconds bound);
// QuantileBetween: as QuantileBelow, with a lower bound too.
testing::AssertionResult QuantileBetween(const Samples& s, double q,
                                         std::chrono::nanoseconds lo,
                                         std::chrono::nanoseconds hi);

// Skips the current test, counted as skipped, in a sanitizer build: timing
// there measures the sanitizer, not goro. Use at the top of the test body.
#define GORO_SKIP_TIMING_UNDER_SANITIZERS()                                 \
  do {                                                                      \
    if (::goro_test::kSanitizer) {                                          \
      GTEST_SKIP() << "timing assertion; not meaningful under a sanitizer"; \
    }                                                                       \
  } while (0)

// --- Fibers ------------------------------------------------------------------

// A runtime with `n` procs.
inline goro::Options Procs(int n) {
  goro::Options o;
  o.procs = n;
  return o;
}

// A runtime with one proc and the given time slice.
inline goro::Options OneProc(std::chrono::microseconds slice) {
  goro::Options o = Procs(1);
  o.time_slice = slice;
  return o;
}

// Runs `body` in `n` fibers (argument: index) and waits for all of them.
template <typename F>
void SpawnAndWait(int n, F body) {
  goro::WaitGroup wg;
  wg.add(n);
  for (int i = 0; i < n; ++i) {
    goro::go([&wg, &body, i] {
      body(i);
      wg.done();
    });
  }
  wg.wait();
}

// FiberGroup spawns fibers and waits for all of them on wait() or
// destruction, so that no fiber outlives a test (goro::run abandons fibers
// still alive when main returns, and their captures would leak).
class FiberGroup {
 public:
  FiberGroup() = default;
  FiberGroup(const FiberGroup&) = delete;
  FiberGroup& operator=(const FiberGroup&) = delete;
  ~FiberGroup() { wait(); }
  template <typename F>
  void go(F fn) {
    wg_.add(1);
    goro::go([this, fn = std::move(fn)]() mutable {
      fn();
      wg_.done();
    });
  }
  void wait() { wg_.wait(); }

 private:
  goro::WaitGroup wg_;
};

// AwaitInFiber yields until `pred` holds, with `what` as the watchdog note,
// so that a condition that never comes fails in seconds and says which.
// Only from a fiber.
template <typename Pred>
void AwaitInFiber(Pred pred, const std::string& what) {
  if (pred()) return;
  WatchdogNote("waiting for: " + what);
  while (!pred()) goro::yield();
  WatchdogNote("");
}

// --- Environment -------------------------------------------------------------

// The path of a data file or binary a test depends on (Bazel's runfiles:
// $TEST_SRCDIR/$TEST_WORKSPACE/PATH, or PATH next to this binary's
// .runfiles tree when it runs by hand).
std::string Runfile(const std::string& path);

// $TEST_TMPDIR, or /tmp outside Bazel.
std::string TempDir();

// RunSelfInChild runs this test binary again, as a child process, with
// --gtest_filter=`filter` and `env` ("NAME=VALUE ..." assignments, after
// optional "-u NAME" unsets, as env(1) takes them), and returns what it
// printed (stdout and stderr). Bazel's result files belong to this process:
// the child is run without the variables that name them. For cases that
// need a fresh process (start-up, a crash): the child finds its mode in the
// environment.
std::string RunSelfInChild(const std::string& filter, const std::string& env);

inline pid_t Gettid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// Sets (or, with nullopt, unsets) an environment variable for the lifetime of
// the object and restores the previous state afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Clears every GORO_* variable the runtime reads, so that tests relying on
// defaults are not skewed by the caller's environment.
class CleanGoroEnv {
 public:
  CleanGoroEnv()
      : a_("GORO_MAXPROCS", std::nullopt),
        b_("GORO_STACK_SIZE", std::nullopt),
        c_("GORO_TIMESLICE", std::nullopt),
        d_("GORO_ASYNCPREEMPT", std::nullopt),
        e_("GORO_PREEMPT_MIGRATE", std::nullopt),
        f_("GORO_DEBUG", std::nullopt),
        g_("GORO_SIGQUIT", std::nullopt),
        h_("GORO_TRACE", std::nullopt) {}

 private:
  ScopedEnv a_, b_, c_, d_, e_, f_, g_, h_;
};

// Polls `pred` (on a plain thread: sleeps; callers inside fibers use
// AwaitInFiber) until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace goro_test

#endif  // GORO_TESTS_COMMON_TEST_UTIL_H_
