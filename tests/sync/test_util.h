// Copyright goro authors.
//
// The parameterised fixture of the sync/ tests (the helpers they use --
// FiberGroup, Scaled, the watchdog, timing -- are in
// tests/common/test_util.h): every test runs over several runtime
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
#include "tests/common/test_util.h"

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
