// Copyright goro authors.
//
// A timer that comes due on a P whose fiber never reaches a cooperative
// point (a call-free spinner), with asynchronous preemption off (as under
// ThreadSanitizer, or Options::async_preempt = false), while another P is
// idle: another M must take the idle P and run it (sysmon wakes one, as Go's
// sysmon does for "timers that should have already run"). Before that fix
// nobody ran it and the fiber waiting for it waited forever: the other M had
// gone idle before the timer was armed, so it slept with no deadline, and
// arming a timer on a P wakes no idle M.
//
// Two shapes. The plain one: main starts the spinner and waits at once; the
// spinner then usually runs on main's P after main parks, but the other M
// may also steal it, or look after the timer is armed (and keep it), so it
// reproduced the hang only sometimes (always under TSan). The hand-off one
// makes that order certain: the spinner first parks on a channel, main lets
// the other M go idle (it spins, call-free, for kSettle), then hands the
// spinner a value -- a hand-off puts the receiver into main's P's runnext
// and wakes no M -- and waits: the M switches from main to the spinner.
//
// Each run has a rescuer: a plain thread that stops the spinner if the
// waiter is not back within kRescueAfter, so that the bug shows as a late
// wake-up (a failed assertion) rather than a stuck test. The fix does not
// need it: the waiter is back within about two sysmon periods of its
// deadline.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 20ms;
// Far above a 20 ms wait plus sysmon's period (1 ms) on a loaded two-core
// machine, sanitizers included; far below what the bug produces (forever,
// here kRescueAfter).
constexpr auto kMedianBound = 300ms;
constexpr auto kRescueAfter = 2s;
// Runs that needed the rescuer before the test gives up (each costs
// kRescueAfter; the watchdog allows 10 s).
constexpr int kMaxRescued = 2;

// Long enough for the other M to find nothing and go idle, also under a
// sanitizer; far below the slice (no preemption request, which would make
// main's next call switch).
constexpr auto kSettle = 5ms;
constexpr auto kSlice = 50ms;

__attribute__((noinline)) std::uint64_t SpinUntil(
    const std::atomic<bool>& stop) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) ++n;
  return n;
}

goro::Options NoAsyncPreempt() {
  goro::Options o = goro_test::Procs(2);
  o.async_preempt = false;
  o.time_slice = kSlice;
  return o;
}

// Busy-waits for `d` without a call into goro (so without switching).
void SpinFor(Clock::duration d) {
  const auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

enum class Shape { kPlain, kHandOff };

// One run: the main fiber starts a call-free spinner, then `wait()`s (for
// about kWait, on a goro timer), then stops the spinner. Returns how long
// the wait took; *rescued: the rescuer had to stop the spinner.
Clock::duration OneRun(Shape shape, const std::function<void()>& wait,
                       bool* rescued) {
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  bool back = false;
  std::atomic<bool> rescue{false};
  std::thread rescuer([&] {
    std::unique_lock<std::mutex> l(mu);
    if (!cv.wait_for(l, kRescueAfter, [&] { return back; })) {
      rescue.store(true);
      stop.store(true);
    }
  });
  Clock::duration took{};
  goro::run(NoAsyncPreempt(), [&] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::Chan<int> start(0);  // unbuffered
    std::atomic<bool> parking{false};
    goro::go([&] {
      if (shape == Shape::kHandOff) {
        parking.store(true);
        start.recv();
      }
      SpinUntil(stop);
      wg.done();
    });
    if (shape == Shape::kHandOff) {
      goro_test::AwaitInFiber([&] { return parking.load(); }, "spinner");
      SpinFor(kSettle);
      start.send(1);
    }
    const auto t0 = Clock::now();
    wait();
    took = Clock::now() - t0;
    {
      std::lock_guard<std::mutex> l(mu);
      back = true;
    }
    cv.notify_one();
    stop.store(true);
    wg.wait();
  });
  rescuer.join();
  *rescued = rescue.load();
  return took;
}

void ExpectWaitsEnd(Shape shape, const std::string& what,
                    const std::function<void()>& wait) {
  goro_test::CleanGoroEnv env;
  goro_test::Samples s(what);
  int rescued_runs = 0;
  while (s.size() < goro_test::kMinTimingSamples) {
    goro_test::WatchdogNote(what + ", run " + std::to_string(s.size()));
    bool rescued = false;
    const Clock::duration took = OneRun(shape, wait, &rescued);
    EXPECT_GE(took, kWait) << what << " ended early";
    s.Add(took);
    if (rescued && ++rescued_runs >= kMaxRescued) break;
  }
  EXPECT_LT(rescued_runs, kMaxRescued)
      << what << ": the timer was run only once the spinner was stopped\n"
      << s.Summary();
  EXPECT_TRUE(goro_test::QuantileBelow(s, 0.5, kMedianBound));
}

// (a) goro::sleep_for: the sleeper's timer goes on the P it slept on, which
// then runs the spinner. The brief's repro as it comes, then in the order
// that always hung.
TEST(OverdueTimer, SleepBesideACallFreeSpinnerEnds) {
  ExpectWaitsEnd(Shape::kPlain, "sleep_for(20ms) beside a spinner",
                 [] { goro::sleep_for(kWait); });
}

TEST(OverdueTimer, SleepAfterAHandOffToACallFreeSpinnerEnds) {
  ExpectWaitsEnd(Shape::kHandOff, "sleep_for(20ms) after a hand-off",
                 [] { goro::sleep_for(kWait); });
}

// (b) A select timeout (goro::after: a timer whose firing sends on a
// channel) on a channel nobody sends on.
TEST(OverdueTimer, SelectTimeoutAfterAHandOffToACallFreeSpinnerFires) {
  ExpectWaitsEnd(Shape::kHandOff, "select timeout 20ms after a hand-off", [] {
    goro::Chan<int> never(0);  // nobody sends
    bool timed_out = false;
    goro::select(
        goro::recv_case(never, [](std::optional<int>) {}),
        goro::recv_case(goro::after(kWait), [&] { timed_out = true; }));
    EXPECT_TRUE(timed_out);
  });
}

// (c) A Context deadline: the timer's firing cancels the context, which
// closes its done() channel.
TEST(OverdueTimer, ContextDeadlineAfterAHandOffToACallFreeSpinnerFires) {
  ExpectWaitsEnd(Shape::kHandOff, "with_timeout(20ms) after a hand-off", [] {
    auto [ctx, cancel] = goro::with_timeout(goro::Context::background(), kWait);
    ctx.done().recv();
    EXPECT_FALSE(ctx.err().ok());
    cancel();
  });
}

}  // namespace
