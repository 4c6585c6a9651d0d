// Copyright goro authors.
//
// GORO_DEBUG=schedtrace=MS[,scheddetail=1] (diag/internal/schedtrace.cc,
// runtime/options.h): Go's SCHED line every MS ms on stderr, with goro's
// preempt= and steals= at the end; scheddetail adds P, M and G lines;
// malformed values are rejected naming GORO_DEBUG.

#include <chrono>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

const std::regex kSched(
    "SCHED ([0-9]+)ms: gomaxprocs=([0-9]+) idleprocs=([0-9]+) threads=([0-9]+) "
    "spinningthreads=([0-9]+) idlethreads=([0-9]+) runqueue=([0-9]+) "
    "\\[([0-9 ]*)\\] preempt=([0-9]+) steals=([0-9]+)");

TEST(SchedtraceTest, PrintsGosLineEveryPeriod) {
  goro_test::CleanGoroEnv env;
  goro_test::ScopedEnv debug("GORO_DEBUG", "schedtrace=50");
  testing::internal::CaptureStderr();
  goro::run(goro_test::Procs(2), [] {
    goro::WaitGroup wg;
    for (int i = 0; i < 4; ++i) {
      wg.add(1);
      goro::go([&wg] {
        for (int k = 0; k < 30; ++k) goro::sleep_for(10ms);
        wg.done();
      });
    }
    wg.wait();  // ~300 ms: about 6 lines
  });
  const std::string err = testing::internal::GetCapturedStderr();
  int n = 0;
  long long prev_ms = 0;
  for (const std::string& l : Lines(err)) {
    if (l.rfind("SCHED ", 0) != 0) continue;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, kSched)) << l;
    ++n;
    const long long ms = std::stoll(m[1]);
    EXPECT_GT(ms, prev_ms) << l;
    prev_ms = ms;
    EXPECT_EQ(m[2], "2") << l;
    EXPECT_LE(std::stoi(m[3]), 2) << l;
    // One queue length per P.
    EXPECT_TRUE(std::regex_match(m[8].str(), std::regex("[0-9]+ [0-9]+"))) << l;
  }
  // Liveness, not timing: 6 periods fit in the run; at least 2 must show.
  EXPECT_GE(n, 2) << err;
  EXPECT_EQ(err.find("  P0:"), std::string::npos) << "detail without asking";
}

TEST(SchedtraceTest, SchedDetailAddsPMAndGLines) {
  goro_test::CleanGoroEnv env;
  goro_test::ScopedEnv debug("GORO_DEBUG", "schedtrace=50,scheddetail=1");
  testing::internal::CaptureStderr();
  goro::run(goro_test::Procs(2), [] {
    goro::Chan<int> never(0);
    goro::go([never]() mutable {
      goro::select(goro::recv_case(never), goro::recv_case(goro::after(1s)));
    });
    goro::sleep_for(200ms);
  });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(std::regex_search(
      err,
      std::regex("\n  P0: status=(running|idle) m=-?[0-9]+ runqsize=[0-9]+")))
      << err;
  EXPECT_TRUE(std::regex_search(err, std::regex("\n  M0: tid=[0-9]+ "))) << err;
  EXPECT_TRUE(std::regex_search(
      err, std::regex("\n  G[0-9]+: status=waiting\\(select\\)")))
      << err;
}

TEST(SchedtraceTest, MalformedGoroDebugThrowsNamingIt) {
  goro_test::CleanGoroEnv env;
  for (const char* bad :
       {"schedtrace=", "schedtrace=0", "schedtrace=1s", "schedtrace=-5",
        "scheddetail=2", "bogus=1", "schedtrace=100,scheddetail"}) {
    goro_test::ScopedEnv debug("GORO_DEBUG", bad);
    try {
      goro::run([] {});
      ADD_FAILURE() << "GORO_DEBUG=" << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("GORO_DEBUG"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
