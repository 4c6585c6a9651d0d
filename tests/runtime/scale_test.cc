// Copyright goro authors.
//
// A million fibers on default settings: skynet (1,000,000 leaves of a 10-ary
// tree) and 1,000,000 fibers alive at once, all parked on one WaitGroup.
// Too heavy for ASan's shadow memory and for TSan (tagged no_asan, not tsan).

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Each node spawns ten children that write their sums into the parent's
// array, and waits for them on a WaitGroup.
void Skynet(long num, long size, long* out) {
  if (size == 1) {
    *out = num;
    return;
  }
  long results[10];
  goro::WaitGroup wg;
  const long child = size / 10;
  wg.add(10);
  for (int i = 0; i < 10; ++i) {
    goro::go([&, i] {
      Skynet(num + i * child, child, &results[i]);
      wg.done();
    });
  }
  wg.wait();
  long sum = 0;
  for (long r : results) sum += r;
  *out = sum;
}

// A "VmXXX:" line of /proc/self/status, in KiB (0 if absent).
long StatusKiB(const std::string& key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key + ":", 0) == 0)
      return std::atol(line.c_str() + key.size() + 1);
  }
  return 0;
}

long MaxRssMiB() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024;
}

TEST(ScaleTest, SkynetMillion) {
  // 1.1 million fibers: under a second alone, seconds under load.
  goro_test::ExtendWatchdog(60s);
  goro_test::CleanGoroEnv env;
  long result = 0;
  const auto t0 = Clock::now();
  goro::run([&] { Skynet(0, 1000000, &result); });
  const double ms =
      std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_EQ(result, 499999500000L);
  const goro::Stats st = goro::stats();
  // 1,111,111 tree nodes (1 + 10 + ... + 10^6): the root runs on main.
  EXPECT_EQ(st.fibers_created, 1111111u);
  EXPECT_EQ(st.fibers_live, 0u);
  std::printf(
      "skynet: %.0f ms, procs %d, threads %d, steals %llu, max RSS %ld MiB\n",
      ms, st.procs, st.threads, static_cast<unsigned long long>(st.steals),
      MaxRssMiB());
}

// Fibers queued by go() hold a reserved stack each, but must not each fault
// one in: they run on the warm stack the previous fiber left (StackCache).
// When each ran on its own reservation, 200,000 queued fibers that only call
// done() committed a page apiece, 800 MiB (and 1M of them, 4 GiB: the
// spawn/join benchmark's peak RSS).
TEST(ScaleTest, QueuedFibersDoNotEachCommitAStack) {
  goro_test::ExtendWatchdog(60s);
  goro_test::CleanGoroEnv env;
  constexpr int kN = 200000;
  long rss_before = 0, rss_after = 0;
  goro::Options o;
  o.procs = 1;
  goro::run(o, [&] {
    auto round = [] {
      goro::WaitGroup wg;
      wg.add(kN);
      for (int i = 0; i < kN; ++i) goro::go([&wg] { wg.done(); });
      wg.wait();
    };
    rss_before = StatusKiB("VmRSS");
    round();
    rss_after = StatusKiB("VmRSS");
  });
  const double bytes_per_fiber =
      static_cast<double>(rss_after - rss_before) * 1024.0 / kN;
  std::printf("queued fibers: VmRSS %ld -> %ld KiB, %.0f B per fiber\n",
              rss_before, rss_after, bytes_per_fiber);
  // What remains is the fiber objects (pooled for reuse) and the free
  // lists' entries; committing a stack page per fiber adds 4096 B.
  EXPECT_LT(bytes_per_fiber, 2048.0);
}

TEST(ScaleTest, MillionFibersParkedOnOneWaitGroup) {
  // A million stacks committed, parked, woken and unmapped: a few seconds
  // alone, over 10 s on the shared two-core machine -- and a minute or more
  // where a page fault costs 25-35 us (a VM whose host backs each new page
  // of the guest lazily: `bazel run //tools:page_fault_cost`), since each stack
  // takes at least one fault, and page tables for its reservation more.
  goro_test::ExtendWatchdog(300s);
  goro_test::CleanGoroEnv env;
  constexpr int kN = 1000000;
  std::atomic<int> finished{0};
  std::uint64_t live_while_parked = 0;
  std::uint64_t live_after = ~0ull;
  goro::run([&] {
    goro::WaitGroup parked, release, done;
    parked.add(kN);
    release.add(1);
    done.add(kN);
    for (int i = 0; i < kN; ++i) {
      goro::go([&] {
        parked.done();
        release.wait();
        finished.fetch_add(1, std::memory_order_relaxed);
        done.done();
      });
    }
    parked.wait();
    // Every fiber has reached release.wait(); give the last ones a moment to
    // actually park, then count.
    goro::sleep_for(10ms);
    live_while_parked = goro::stats().fibers_live;
    // Page tables grow with the address space the stacks (and their guard
    // regions) spread over, not just with the pages they touch.
    std::printf("million parked: VmRSS %ld MiB, VmPTE %ld MiB\n",
                StatusKiB("VmRSS") / 1024, StatusKiB("VmPTE") / 1024);
    EXPECT_EQ(release.count(), 1);
    EXPECT_EQ(finished.load(), 0);
    release.done();  // wakes a million waiters
    done.wait();
    // Exits are counted just after done(); wait for the last few.
    const auto deadline = Clock::now() + 60s;
    while ((live_after = goro::stats().fibers_live) > 1 &&
           Clock::now() < deadline) {
      goro::sleep_for(1ms);
    }
  });
  EXPECT_GE(live_while_parked, static_cast<std::uint64_t>(kN));
  EXPECT_EQ(finished.load(), kN);
  EXPECT_EQ(live_after, 1u);  // only main
  EXPECT_EQ(goro::stats().fibers_created, static_cast<std::uint64_t>(kN) + 1);
  std::printf("million parked: max RSS %ld MiB\n", MaxRssMiB());
}

}  // namespace
