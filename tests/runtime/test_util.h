// Copyright goro authors.
//
// Helpers shared by the runtime tests: sanitizer detection (to scale counts
// down), an RAII environment variable, a polling wait with a deadline, and
// gettid().

#ifndef GORO_TESTS_RUNTIME_TEST_UTIL_H_
#define GORO_TESTS_RUNTIME_TEST_UTIL_H_

#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "goro.h"

namespace goro_test {

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

// `normal` in optimized builds, `reduced` under a sanitizer (TSan cannot
// afford many fibers; ASan is several times slower).
template <typename T>
constexpr T Scaled(T normal, T reduced) {
  return (kTsan || kAsan) ? reduced : normal;
}

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
        e_("GORO_PREEMPT_MIGRATE", std::nullopt) {}

 private:
  ScopedEnv a_, b_, c_, d_, e_;
};

// Polls `pred` (on a plain thread: sleeps; callers inside fibers should use
// their own loop with goro::sleep_for) until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A runtime with `n` procs.
inline goro::Options Procs(int n) {
  goro::Options o;
  o.procs = n;
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

}  // namespace goro_test

#endif  // GORO_TESTS_RUNTIME_TEST_UTIL_H_
