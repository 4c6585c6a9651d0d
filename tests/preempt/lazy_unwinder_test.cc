// Copyright goro authors.
//
// libunwind is loaded when first needed (preempt/internal/unwinder.h), not
// with the program: a run that ends before sysmon's thread is made never
// maps it; a longer run has it loaded by sysmon before its first round and
// is preempted asynchronously; it stays out of the global scope; and a
// libunwind.so.8 that is not libunwind is reported once, leaving
// cooperative preemption only.
//
// Each case runs in a fresh child process (this binary again, with
// GORO_LAZY_UNWINDER_CHILD set): once loaded, the library stays.

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler_internal.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;

constexpr char kChildEnv[] = "GORO_LAZY_UNWINDER_CHILD";

bool LibunwindMapped() {
  bool found = false;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* arg) {
        if (info->dlpi_name != nullptr &&
            std::strstr(info->dlpi_name, "libunwind.so") != nullptr) {
          *static_cast<bool*>(arg) = true;
        }
        return 0;
      },
      &found);
  return found;
}

// Runs this binary's `filter` with kChildEnv=mode (and `env`, "NAME=VALUE
// ...", before it), in the default slice and procs, and returns what it
// printed.
std::string RunChild(const char* filter, const char* mode,
                     const std::string& env = "") {
  return goro_test::RunSelfInChild(
      filter, "-u GORO_TIMESLICE -u GORO_MAXPROCS " + env + " " + kChildEnv +
                  "=" + mode);
}

const char* ChildMode() { return std::getenv(kChildEnv); }

// Whether sysmon's thread started in this process: the hook is wrapped.
std::atomic<bool> g_sysmon_started{false};
void (*g_real_on_sysmon_start)(goro::runtime_internal::Sched*) = nullptr;

void WatchSysmonStart() {
  auto& hooks = goro::runtime_internal::g_hooks;
  g_real_on_sysmon_start = hooks.on_sysmon_start;
  hooks.on_sysmon_start = [](goro::runtime_internal::Sched* s) {
    g_sysmon_started.store(true);
    if (g_real_on_sysmon_start != nullptr) g_real_on_sysmon_start(s);
  };
}

// Call-free spin on a relaxed load: only a signal can take the CPU away.
__attribute__((noinline)) std::uint64_t SpinUntil(
    const std::atomic<bool>& stop) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) ++n;
  return n;
}

// An empty run that ended before sysmon's thread was made has not loaded
// libunwind, and nothing did at the program's start (no DT_NEEDED). A
// loaded machine can delay a short run past sysmon's delay (a busy period,
// at most 1 ms): up to 50 children, until one's run ends without sysmon.
// A sanitizer's thread start-up alone can take the 1 ms: ThreadSanitizer's
// (as in lifecycle_test), and AddressSanitizer's where page faults are
// dear (its shadow pages; on this project's VMs a fault costs 25-35 us, and
// CI run 13 saw 50 of 50 ASan runs outlive the delay). There a run without
// sysmon is checked if one comes, in up to 10 children, but not required.
TEST(LazyUnwinder, EmptyRunDoesNotLoadIt) {
  if (const char* mode = ChildMode()) {
    const bool at_start = LibunwindMapped();
    WatchSysmonStart();
    goro::run([] { return 0; });
    std::printf("at_start=%d sysmon=%d libunwind=%d\n", at_start,
                g_sysmon_started.load(), LibunwindMapped());
    std::fflush(stdout);
    std::_Exit(0);
  }
  std::string out, last;
  for (int rep = 0; rep < (goro_test::kSanitizer ? 10 : 50); ++rep) {
    last = RunChild("LazyUnwinder.EmptyRunDoesNotLoadIt", "empty");
    EXPECT_NE(last.find("at_start=0 "), std::string::npos)
        << "libunwind is mapped before goro runs (linked again?)\n"
        << last;
    if (last.find(" sysmon=0 ") != std::string::npos) {
      out = last;
      break;
    }
  }
  if (goro_test::kSanitizer && out.empty()) return;
  ASSERT_FALSE(out.empty())
      << "every one of 50 empty runs outlived sysmon's delay\n"
      << last;
  EXPECT_NE(out.find("libunwind=0"), std::string::npos)
      << "an empty run loaded libunwind\n"
      << out;
}

// A run longer than sysmon's delay has libunwind loaded, privately
// (RTLD_LOCAL: its _Unwind_* must not interpose on GCC's), and -- except
// under ThreadSanitizer, which has no asynchronous preemption -- a fiber
// spinning on the only P is preempted by signal.
TEST(LazyUnwinder, LongRunLoadsItAndPreempts) {
  if (ChildMode() != nullptr) {
    std::atomic<bool> stop{false};
    goro::run(goro_test::kTsan ? goro_test::Procs(2) : goro_test::OneProc(10ms),
              [&] {
                goro::WaitGroup wg;
                wg.add(1);
                goro::go([&] {
                  // Under TSan (no SIGURG) the main fiber's sleep timer may
                  // be on this spinner's P: sysmon wakes an M for it on the
                  // other P once it is overdue (overdue_timer_test).
                  SpinUntil(stop);
                  wg.done();
                });
                // With one P, the main fiber needs it back to set `stop`.
                goro::sleep_for(50ms);
                stop = true;
                wg.wait();
              });
    std::printf(
        "libunwind=%d global=%d async=%llu\n", LibunwindMapped(),
        dlsym(RTLD_DEFAULT, "_ULx86_64_step") != nullptr,
        static_cast<unsigned long long>(goro::stats().preemptions_async));
    std::fflush(stdout);
    std::_Exit(0);
  }
  const std::string out =
      RunChild("LazyUnwinder.LongRunLoadsItAndPreempts", "long");
  EXPECT_NE(out.find("libunwind=1 "), std::string::npos) << out;
  EXPECT_NE(out.find(" global=0 "), std::string::npos)
      << "libunwind's symbols are in the global scope\n"
      << out;
  if (!goro_test::kTsan) {
    EXPECT_EQ(out.find(" async=0\n"), std::string::npos)
        << "no asynchronous preemption\n"
        << out;
    EXPECT_NE(out.find(" async="), std::string::npos) << out;
  }
}

// A libunwind.so.8 found first on the library path that is not libunwind
// (here: the test's own shared object under that name) is reported once,
// and goro runs on: sysmon sends no signal, a fiber that overruns its slice
// on the only P switches at its next cooperative point, and a dump says it
// has no stacks.
TEST(LazyUnwinder, UnusableLibraryIsReportedOnceAndRunsCooperatively) {
  if (ChildMode() != nullptr) {
    for (int rep = 0; rep < 2; ++rep) {
      goro::run(goro_test::OneProc(10ms), [] {
        std::atomic<bool> stop{false};
        goro::WaitGroup wg;
        wg.add(1);
        goro::go([&] {
          // A cooperative point that switches only when sysmon asked.
          while (!stop.load(std::memory_order_relaxed)) goro::NoPreempt np;
          wg.done();
        });
        goro::sleep_for(30ms);
        stop = true;
        wg.wait();
        goro::dump_fibers(std::cout);
      });
    }
    std::cout.flush();
    const goro::Stats st = goro::stats();
    std::printf("\nsignals=%llu async=%llu coop=%llu done\n",
                static_cast<unsigned long long>(st.signals_sent),
                static_cast<unsigned long long>(st.preemptions_async),
                static_cast<unsigned long long>(st.preemptions_cooperative));
    std::fflush(stdout);
    std::_Exit(0);
  }
  const std::string dir = goro_test::TempDir() + "/lazy_unwinder_fake";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(
      goro_test::Runfile("tests/preempt/libgoro_test_so_spin.so"),
      dir + "/libunwind.so.8",
      std::filesystem::copy_options::overwrite_existing);
  const std::string out =
      RunChild("LazyUnwinder.UnusableLibraryIsReportedOnceAndRunsCooperatively",
               "unusable", "LD_LIBRARY_PATH=" + dir);
  const std::string msg =
      "goro: cannot load libunwind.so.8 (no symbol _ULx86_64_init_local)";
  const std::size_t at = out.find(msg);
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_EQ(out.find(msg, at + 1), std::string::npos) << "reported twice\n"
                                                      << out;
  EXPECT_NE(out.find("goro: no stacks in this dump"), std::string::npos) << out;
  EXPECT_NE(out.find("\nsignals=0 async=0 coop="), std::string::npos) << out;
  EXPECT_EQ(out.find(" coop=0 "), std::string::npos) << out;
  EXPECT_NE(out.find(" done\n"), std::string::npos) << out;
}

}  // namespace
