// Copyright goro authors.
//
// goro::Options and the GORO_* environment: validation (std::invalid_argument
// naming the field or variable), accepted values, and precedence.

#include <sched.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using goro_test::CleanGoroEnv;
using goro_test::ScopedEnv;

// The options the running runtime resolved (internal view).
const goro::Options& Resolved() {
  return goro::runtime_internal::g_sched.load()->opts;
}

// Expects goro::run(o, ...) to throw std::invalid_argument whose message
// contains every one of `needles`; and that main never ran.
void ExpectInvalid(const goro::Options& o,
                   std::initializer_list<std::string> needles) {
  bool ran = false;
  try {
    goro::run(o, [&] { ran = true; });
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    for (const std::string& n : needles) {
      EXPECT_NE(what.find(n), std::string::npos)
          << "what() = \"" << what << "\" lacks \"" << n << "\"";
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception: " << e.what();
  }
  EXPECT_FALSE(ran);
}

void ExpectEnvInvalid(const char* var, const char* value) {
  CleanGoroEnv clean;
  ScopedEnv env(var, value);
  SCOPED_TRACE(std::string(var) + "=" + value);
  ExpectInvalid(goro::Options{}, {var, value});
}

TEST(OptionsTest, BadFieldsThrowInvalidArgument) {
  CleanGoroEnv clean;
  goro::Options o;
  o.procs = -1;
  ExpectInvalid(o, {"procs", "-1"});
  o.procs = 1025;
  ExpectInvalid(o, {"procs"});

  o = {};
  o.stack_size = 1000;
  ExpectInvalid(o, {"stack_size", "1000"});
  // The minimum depends on the CPU's XSAVE size, and the message says so.
  o.stack_size = goro::min_stack_size() - 1;
  ExpectInvalid(o, {"stack_size", "XSAVE"});
  o.stack_size = (std::size_t{1} << 30) + 1;
  ExpectInvalid(o, {"stack_size"});

  o = {};
  o.time_slice = 10us;
  ExpectInvalid(o, {"time_slice", "10us"});
  o.time_slice = 99us;
  ExpectInvalid(o, {"time_slice"});
  o.time_slice = 11s;
  ExpectInvalid(o, {"time_slice"});
  o.time_slice = std::chrono::microseconds(-1);
  ExpectInvalid(o, {"time_slice"});

  // Nothing is left behind: the next run works.
  EXPECT_EQ(goro::run([] { return 1; }), 1);
}

TEST(OptionsTest, BoundaryFieldsAreAccepted) {
  CleanGoroEnv clean;
  goro::Options o;
  o.procs = 1;
  o.stack_size = goro::min_stack_size();
  o.time_slice = 100us;
  goro::run(o, [] {
    EXPECT_EQ(goro::stats().procs, 1);
    EXPECT_EQ(Resolved().stack_size, goro::min_stack_size());
    EXPECT_EQ(Resolved().time_slice, 100us);
  });
  o.procs = 64;  // more Ps than CPUs is allowed
  o.stack_size = std::size_t{1} << 30;
  o.time_slice = 10s;
  goro::run(o, [] {
    EXPECT_EQ(goro::stats().procs, 64);
    EXPECT_EQ(Resolved().stack_size, std::size_t{1} << 30);
    EXPECT_EQ(Resolved().time_slice, 10s);
    // A fiber with a 1 GiB (reserved, not committed) stack runs.
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&] { wg.done(); });
    wg.wait();
  });
}

TEST(OptionsTest, StackSizeIsRoundedUpToPages) {
  CleanGoroEnv clean;
  goro::Options o;
  o.stack_size = 70000;
  goro::run(o, [] { EXPECT_EQ(Resolved().stack_size, 73728u); });
}

TEST(OptionsTest, DefaultProcsIsTheUsableCpuCount) {
  CleanGoroEnv clean;
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int affinity = CPU_COUNT(&set);
  int procs = 0;
  goro::run([&] { procs = goro::stats().procs; });
  EXPECT_EQ(procs, goro::runtime_internal::available_cpus());
  EXPECT_GE(procs, 1);
  EXPECT_LE(procs, affinity);
}

TEST(OptionsTest, BadEnvironmentValuesThrowNamingTheVariable) {
  ExpectEnvInvalid("GORO_MAXPROCS", "abc");
  ExpectEnvInvalid("GORO_MAXPROCS", "0");
  ExpectEnvInvalid("GORO_MAXPROCS", "-2");
  ExpectEnvInvalid("GORO_MAXPROCS", "1025");
  ExpectEnvInvalid("GORO_MAXPROCS", "3x");
  ExpectEnvInvalid("GORO_MAXPROCS", "");
  ExpectEnvInvalid("GORO_MAXPROCS", "99999999999999999999999");

  ExpectEnvInvalid("GORO_STACK_SIZE", "12Q");
  ExpectEnvInvalid("GORO_STACK_SIZE", "1K");  // below 16 KiB
  ExpectEnvInvalid("GORO_STACK_SIZE", "2G");  // above 1 GiB
  ExpectEnvInvalid("GORO_STACK_SIZE", "K");
  ExpectEnvInvalid("GORO_STACK_SIZE", "-64K");
  ExpectEnvInvalid("GORO_STACK_SIZE", "");
  ExpectEnvInvalid("GORO_STACK_SIZE", "99999999999999999999G");

  ExpectEnvInvalid("GORO_TIMESLICE", "5");     // no unit
  ExpectEnvInvalid("GORO_TIMESLICE", "50us");  // below 100us
  ExpectEnvInvalid("GORO_TIMESLICE", "11s");   // above 10s
  ExpectEnvInvalid("GORO_TIMESLICE", "5 ms");
  ExpectEnvInvalid("GORO_TIMESLICE", "ms");
  ExpectEnvInvalid("GORO_TIMESLICE", "1h");
  ExpectEnvInvalid("GORO_TIMESLICE", "99999999999999999999s");

  ExpectEnvInvalid("GORO_ASYNCPREEMPT", "2");
  ExpectEnvInvalid("GORO_ASYNCPREEMPT", "yes");
  ExpectEnvInvalid("GORO_ASYNCPREEMPT", "");
  ExpectEnvInvalid("GORO_PREEMPT_MIGRATE", "true");
}

TEST(OptionsTest, BadEnvironmentWinsOverGoodOptions) {
  // A malformed variable is never silently ignored, even when the field it
  // would override was set explicitly.
  CleanGoroEnv clean;
  ScopedEnv env("GORO_STACK_SIZE", "12Q");
  goro::Options o;
  o.stack_size = 128 * 1024;
  ExpectInvalid(o, {"GORO_STACK_SIZE", "12Q"});
}

TEST(OptionsTest, GoodEnvironmentValuesAreUsed) {
  {
    CleanGoroEnv clean;
    ScopedEnv env("GORO_MAXPROCS", "3");
    goro::run([] { EXPECT_EQ(goro::stats().procs, 3); });
    EXPECT_EQ(goro::stats().procs, 3);  // after run, too
  }
  {
    CleanGoroEnv clean;
    ScopedEnv env("GORO_TIMESLICE", "500us");
    goro::run([] { EXPECT_EQ(Resolved().time_slice, 500us); });
  }
  {
    CleanGoroEnv clean;
    ScopedEnv a("GORO_TIMESLICE", "20ms");
    goro::run([] { EXPECT_EQ(Resolved().time_slice, 20ms); });
  }
  {
    CleanGoroEnv clean;
    ScopedEnv a("GORO_TIMESLICE", "2s");
    goro::run([] { EXPECT_EQ(Resolved().time_slice, 2s); });
  }
  for (const char* v : {"128K", "128k", "131072", "128KiB"}) {
    CleanGoroEnv clean;
    ScopedEnv env("GORO_STACK_SIZE", v);
    SCOPED_TRACE(v);
    goro::run([] {
      EXPECT_EQ(Resolved().stack_size, 128u * 1024);
      // New fibers get it.
      goro::WaitGroup wg;
      wg.add(1);
      goro::go([&] {
        EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
                  128u * 1024);
        wg.done();
      });
      wg.wait();
    });
  }
  {
    CleanGoroEnv clean;
    ScopedEnv env("GORO_STACK_SIZE", "1M");
    goro::run([] { EXPECT_EQ(Resolved().stack_size, 1u << 20); });
  }
  {
    CleanGoroEnv clean;
    ScopedEnv a("GORO_ASYNCPREEMPT", "0");
    ScopedEnv b("GORO_PREEMPT_MIGRATE", "1");
    goro::run([] {
      EXPECT_FALSE(Resolved().async_preempt);
      EXPECT_TRUE(Resolved().preempt_migrate);
    });
  }
  {
    CleanGoroEnv clean;
    ScopedEnv a("GORO_ASYNCPREEMPT", "1");
    ScopedEnv b("GORO_PREEMPT_MIGRATE", "0");
    goro::Options o;
    o.async_preempt = false;
    o.preempt_migrate = true;
    goro::run(o, [] {
      EXPECT_TRUE(Resolved().async_preempt);
      EXPECT_FALSE(Resolved().preempt_migrate);
    });
  }
}

TEST(OptionsTest, ExplicitProcsBeatsGoroMaxprocs) {
  CleanGoroEnv clean;
  ScopedEnv env("GORO_MAXPROCS", "3");
  goro::Options o;
  o.procs = 1;
  goro::run(o, [] { EXPECT_EQ(goro::stats().procs, 1); });
}

TEST(OptionsTest, EnvironmentOverridesStackSizeAndTimeSlice) {
  CleanGoroEnv clean;
  ScopedEnv a("GORO_STACK_SIZE", "32K");
  ScopedEnv b("GORO_TIMESLICE", "1ms");
  goro::Options o;
  o.stack_size = 256 * 1024;
  o.time_slice = 50ms;
  goro::run(o, [] {
    EXPECT_EQ(Resolved().stack_size, 32u * 1024);
    EXPECT_EQ(Resolved().time_slice, 1ms);
  });
}

// An asynchronous preemption saves the whole XSAVE area on the fiber's
// stack; the minimum leaves room for it and 4 KiB of frames.
TEST(OptionsTest, MinStackSizeCoversThePreemptionSaveArea) {
  const std::size_t min = goro::min_stack_size();
  EXPECT_GE(min, 16u * 1024);
  EXPECT_EQ(min % 4096, 0u);
  EXPECT_GE(min, goro::runtime_internal::preempt_stack_need() + 4096);
  EXPECT_GT(goro::runtime_internal::preempt_stack_need(),
            goro::runtime_internal::xsave_layout().size);
}

TEST(OptionsTest, DefaultStackSizesFitOrdinaryCxx) {
  // 256 KiB: a regex over ~650 characters (docs/runtime.md, "Stack size");
  // the main fiber gets a thread's 8 MiB.
  CleanGoroEnv clean;
  EXPECT_EQ(goro::Options{}.stack_size, 256u * 1024);
  goro::run([] {
    EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
              std::size_t{8} << 20);
  });
}

TEST(OptionsTest, SpawnOptionsStackSizeValidation) {
  CleanGoroEnv clean;
  goro::run([] {
    for (std::size_t bad :
         {std::size_t{1}, std::size_t{1000}, goro::min_stack_size() - 1,
          (std::size_t{1} << 30) + 1}) {
      EXPECT_THROW(goro::go(goro::SpawnOptions{.stack_size = bad}, [] {}),
                   std::invalid_argument)
          << bad;
    }
    // 0 means the runtime's default.
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(goro::SpawnOptions{.stack_size = 0}, [&] {
      EXPECT_EQ(goro::runtime_internal::current_m()->curg()->stack.size,
                Resolved().stack_size);
      wg.done();
    });
    wg.wait();
  });
}

}  // namespace
