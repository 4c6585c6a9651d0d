// Copyright goro authors.
//
// The M's half of dump pinning (diag/internal/dump.cc, "Pinning";
// runtime/internal/switch.cc enter_fiber): a fiber pinned for a dump is not
// run until it is unpinned, even when it is readied and its P is free. The
// dump's half (membarrier ordering) is exercised by
// DumpTest.DumpsDuringPingPongOnlyReadPinnedStacks.

#include <atomic>
#include <chrono>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/park.h"
#include "runtime/internal/scheduler.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
namespace rt = goro::runtime_internal;

TEST(DumpPinTest, PinnedFiberDoesNotRunUntilUnpinned) {
  goro_test::CleanGoroEnv env;
  std::atomic<rt::Fiber*> waiter{nullptr};
  std::atomic<bool> ran{false};
  bool ran_while_pinned = true;
  goro::run(goro_test::Procs(2), [&] {
    goro::Chan<int> ch(0);
    goro::go([&, ch]() mutable {
      waiter.store(rt::current_fiber());
      (void)ch.recv();
      ran.store(true);
    });
    goro_test::AwaitInFiber([&] { return waiter.load() != nullptr; },
                            "waiter to start");
    goro::sleep_for(20ms);  // it parks in recv
    rt::g_dump_pins.fetch_add(1);
    waiter.load()->dump_pin.store(true);
    ch.send(1);  // readies it
    goro::blocking([&] {
      std::this_thread::sleep_for(100ms);
      ran_while_pinned = ran.load();
      waiter.load()->dump_pin.store(false);
      rt::g_dump_pins.fetch_sub(1);
    });
    for (int i = 0; i < 2000 && !ran.load(); ++i) goro::sleep_for(1ms);
  });
  EXPECT_FALSE(ran_while_pinned) << "a pinned fiber ran during its dump";
  EXPECT_TRUE(ran.load()) << "the fiber never ran after it was unpinned";
}

}  // namespace
