// Copyright goro authors.
//
// The watchdog of tests/common/test_util.h fails a hung test within its
// limit, names it, prints the test's note, goro::stats() and the threads,
// and exits non-zero. The test runs its own binary again as a child (with
// GORO_WATCHDOG_CHILD set, the same test hangs instead) and checks what the
// child printed and how it ended.

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using Clock = std::chrono::steady_clock;

TEST(Watchdog, FailsAHungTestFastNamingIt) {
  if (std::getenv("GORO_WATCHDOG_CHILD") != nullptr) {
    // The child: a fiber parks forever on a channel nobody sends on. A plain
    // thread stays alive (it could send, as far as the runtime knows), so
    // deadlock detection (runtime/run.h) cannot end the hang: only the
    // watchdog can.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::hours(1));
    }).detach();
    goro::run(goro_test::Procs(1), [] {
      goro::Chan<int> never(0);
      goro_test::WatchdogNote("receiving from a channel nobody sends on");
      never.recv();
    });
    return;
  }
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';
  // Bazel's result files belong to the parent: the child must not write
  // (or leave behind) any of them.
  const std::string cmd =
      "env -u XML_OUTPUT_FILE -u GTEST_OUTPUT -u TEST_PREMATURE_EXIT_FILE "
      "-u TEST_SHARD_STATUS_FILE GORO_WATCHDOG_CHILD=1 GORO_TEST_WATCHDOG=1 " +
      std::string(self) +
      " --gtest_filter=Watchdog.FailsAHungTestFastNamingIt 2>&1";
  const auto t0 = Clock::now();
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (std::size_t got = std::fread(buf, 1, sizeof(buf), p)) {
    out.append(buf, got);
  }
  const int status = ::pclose(p);
  const auto took = Clock::now() - t0;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("[goro watchdog] FAILED: Watchdog."
                     "FailsAHungTestFastNamingIt did not finish within 1 s"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("note: receiving from a channel nobody sends on"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("goro::stats(): procs 1"), std::string::npos) << out;
  EXPECT_NE(out.find("threads:"), std::string::npos) << out;
  // A 1 s limit: the child is gone well before the parent's own watchdog.
  EXPECT_LT(took, std::chrono::seconds(8)) << out;
}

}  // namespace
