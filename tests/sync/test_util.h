// Copyright goro authors.
//
// Shared fixture for the sync/ tests: every test runs over several runtime
// configurations (marl's WithBoundScheduler style): procs 1, 2 and 4, each
// with the default time slice and with a 100 us slice (which only matters
// once asynchronous preemption is in; until then those runs are
// cooperative).

#ifndef GORO_TESTS_SYNC_TEST_UTIL_H_
#define GORO_TESTS_SYNC_TEST_UTIL_H_

#include <chrono>
#include <string>
#include <utility>

#include "goro.h"
#include "gtest/gtest.h"

namespace goro_test {

struct Config {
  int procs;
  std::chrono::microseconds slice;
};

inline std::string config_name(const testing::TestParamInfo<Config>& info) {
  std::string s = "procs" + std::to_string(info.param.procs);
  if (info.param.slice.count() != 10000) {
    s += "_slice" + std::to_string(info.param.slice.count()) + "us";
  }
  return s;
}

class SyncTest : public testing::TestWithParam<Config> {
 protected:
  goro::Options options() const {
    goro::Options o;
    o.procs = GetParam().procs;
    o.time_slice = GetParam().slice;
    return o;
  }
  template <typename F>
  void run(F&& fn) {
    goro::run(options(), std::forward<F>(fn));
  }
};

// FiberGroup spawns fibers and waits for all of them on wait() or
// destruction, so that no fiber outlives a test (goro::run abandons fibers
// still alive when main returns, and their captures would leak).
class FiberGroup {
 public:
  FiberGroup() = default;
  FiberGroup(const FiberGroup&) = delete;
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

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizer = true;
#else
inline constexpr bool kSanitizer = false;
#endif

// scaled shrinks a stress count under sanitizers.
inline int scaled(int n) { return kSanitizer ? (n / 10 > 0 ? n / 10 : 1) : n; }

#define GORO_INSTANTIATE_SYNC_TEST(Suite)                                     \
  INSTANTIATE_TEST_SUITE_P(                                                   \
      Configs, Suite,                                                         \
      testing::Values(goro_test::Config{1, std::chrono::microseconds(10000)}, \
                      goro_test::Config{2, std::chrono::microseconds(10000)}, \
                      goro_test::Config{4, std::chrono::microseconds(10000)}, \
                      goro_test::Config{1, std::chrono::microseconds(100)},   \
                      goro_test::Config{2, std::chrono::microseconds(100)},   \
                      goro_test::Config{4, std::chrono::microseconds(100)}),  \
      goro_test::config_name)

}  // namespace goro_test

#endif  // GORO_TESTS_SYNC_TEST_UTIL_H_
