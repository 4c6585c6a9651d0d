// Copyright goro authors.
//
// sysmon's per-P decisions (runtime/internal/retake.h) against a fake clock:
// when a fiber has overrun its slice, when its thread is signalled or its
// P's spare lent, when a lent spare goes back, and when stranded work -- or
// a timer overdue on a busy P -- wakes an M.

#include "runtime/internal/retake.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace goro::runtime_internal {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kBase = 1'000'000'000;

class RetakeTest : public ::testing::Test {
 protected:
  RetakeTest() {
    pol_.slice = 10 * kMs;
    pol_.period = 1 * kMs;
    view_.running = true;
    view_.seq = 7;
    view_.has_m = true;
    view_.has_fiber = true;
  }

  // One sysmon round at `now_ms` ms after the clock's base (monotonic time
  // is never near 0); counts how often the thread state was read.
  RetakeActions round(std::int64_t now_ms) {
    const std::int64_t now = kBase + now_ms * kMs;
    RetakeActions a = watch_.observe(now, prev_, pol_, view_, [&] {
      ++state_reads_;
      return state_;
    });
    prev_ = now;
    return a;
  }

  // Rounds every period from `from` to `to` ms; returns the first time (ms)
  // a signal was asked for, or -1.
  std::int64_t first_signal(std::int64_t from, std::int64_t to) {
    for (std::int64_t t = from; t <= to; ++t) {
      if (round(t).signal) return t;
    }
    return -1;
  }

  RetakePolicy pol_;
  PView view_;
  PWatch watch_;
  std::int64_t prev_ = 0;
  char state_ = 'R';
  int state_reads_ = 0;
};

TEST_F(RetakeTest, AFiberWithinItsSliceIsLeftAlone) {
  for (int t = 0; t < 10; ++t) {
    RetakeActions a = round(t);
    EXPECT_FALSE(a.request_preempt) << "at " << t << " ms";
    EXPECT_FALSE(a.signal) << "at " << t << " ms";
  }
  EXPECT_EQ(state_reads_, 0) << "the /proc read is needed only on overrun";
}

TEST_F(RetakeTest, AnOverrunIsRequestedAndSignalledAfterOneSlice) {
  // First seen at 0 ms (no previous round): the slice ends at 10 ms.
  EXPECT_EQ(first_signal(0, 30), 10);
  EXPECT_TRUE(round(11).request_preempt);
}

TEST_F(RetakeTest, TheSliceStartsMidwayBetweenTheTwoRoundsAroundASwitch) {
  round(0);
  round(4);
  view_.seq = 8;  // switched between 4 and 6 ms: assume 5 ms
  round(6);
  EXPECT_FALSE(round(14).signal);
  EXPECT_TRUE(round(15).signal);
  EXPECT_EQ(watch_.slice_end(pol_, view_, kBase + 14 * kMs), kBase + 15 * kMs);
}

TEST_F(RetakeTest, ASwitchRestartsTheSlice) {
  round(0);
  round(9);
  view_.seq = 8;
  EXPECT_FALSE(round(10).signal);
  EXPECT_EQ(first_signal(11, 40), 20);
}

TEST_F(RetakeTest, SignalsAreSpacedByTheResignalInterval) {
  EXPECT_EQ(first_signal(0, 30), 10);
  watch_.signal_sent(kBase + 10 * kMs);
  // The period is 1 ms: asked again at the next round only.
  EXPECT_TRUE(round(11).signal);
  const std::int64_t t11 = kBase + 11 * kMs;
  watch_.signal_sent(t11);
  pol_.period = 20'000;  // 20 us: resignal is then the 100 us floor
  auto at = [&](std::int64_t now, std::int64_t prev) {
    return watch_.observe(now, prev, pol_, view_, [] { return 'R'; }).signal;
  };
  EXPECT_FALSE(at(t11 + 50'000, t11));
  EXPECT_TRUE(at(t11 + 100'000, t11 + 50'000));
}

TEST_F(RetakeTest, AThreadAsleepInTheKernelGetsItsSpareLentNotASignal) {
  state_ = 'S';
  round(0);
  RetakeActions a = round(10);
  EXPECT_TRUE(a.request_preempt);
  EXPECT_FALSE(a.lend_spare) << "asleep at one check: maybe only briefly";
  EXPECT_FALSE(a.signal);
  a = round(11);
  EXPECT_TRUE(a.lend_spare) << "asleep at two checks in a row: stuck";
  EXPECT_FALSE(a.signal);
}

// A thread stopped by a debugger ('t': gdb ptrace-stops it at each SIGURG
// it passes on) or by SIGSTOP ('T') is not stuck in the kernel: no spare,
// however often it is seen so, and a signal once it runs again.
TEST_F(RetakeTest, AThreadStoppedByADebuggerIsNotTakenForStuck) {
  round(0);
  for (int t = 10; t <= 20; ++t) {
    state_ = t % 2 == 0 ? 't' : 'T';
    const RetakeActions a = round(t);
    EXPECT_FALSE(a.lend_spare) << "at " << t << " ms";
    EXPECT_FALSE(a.signal) << "at " << t << " ms";
  }
  state_ = 'R';
  EXPECT_TRUE(round(21).signal) << "running again: signalled";
}

// A thread that sleeps only now and then (a page fault, a contended lock) is
// not stuck: no spare for sleeps that are not seen twice in a row.
TEST_F(RetakeTest, BriefSleepsBetweenRunningChecksLendNothing) {
  round(0);
  for (int t = 10; t <= 20; ++t) {
    state_ = t % 2 == 0 ? 'S' : 'R';
    EXPECT_FALSE(round(t).lend_spare) << "at " << t << " ms";
  }
}

// A fiber making raw blocking calls in a loop is 'R' only between them: a
// signal then would land in the next call as EINTR. Once seen asleep, it is
// signalled only after two running checks in a row.
TEST_F(RetakeTest, AThreadSeenInTheKernelIsSignalledOnlyWhenSeenRunningTwice) {
  state_ = 'S';
  round(0);
  round(10);
  EXPECT_TRUE(round(11).lend_spare);
  state_ = 'R';
  EXPECT_FALSE(round(12).signal) << "one running check after a sleep";
  state_ = 'S';
  EXPECT_FALSE(round(13).signal);
  state_ = 'R';
  EXPECT_FALSE(round(14).signal) << "the sleep in between starts over";
  EXPECT_TRUE(round(15).signal) << "running at two checks in a row";
  // A fresh run (the P switched) starts without that history.
  view_.seq = 8;
  round(16);
  EXPECT_TRUE(round(26).signal);
}

// Nothing else waits for a CPU: no signal, no spare, not even a look at the
// thread; the flag alone. Work that shows up later is signalled at once.
TEST_F(RetakeTest, NothingWaitingMeansNoSignalUntilSomethingDoes) {
  view_.others_wait = false;
  round(0);
  for (int t = 10; t <= 30; ++t) {
    const RetakeActions a = round(t);
    EXPECT_TRUE(a.request_preempt);
    EXPECT_FALSE(a.signal) << "at " << t << " ms";
    EXPECT_FALSE(a.lend_spare);
  }
  EXPECT_EQ(state_reads_, 0);
  view_.others_wait = true;
  EXPECT_TRUE(round(31).signal);
}

TEST_F(RetakeTest, AnUnknownThreadStateLendsNothing) {
  state_ = '?';
  round(0);
  RetakeActions a = round(10);
  EXPECT_FALSE(a.lend_spare);
  EXPECT_FALSE(a.signal);
}

TEST_F(RetakeTest, ASpareIsNeverSignalledNorLent) {
  view_.is_spare = true;
  round(0);
  EXPECT_FALSE(round(10).signal);
  state_ = 'D';
  EXPECT_FALSE(round(12).lend_spare);
  EXPECT_FALSE(round(13).lend_spare);
}

TEST_F(RetakeTest, WithoutAsyncPreemptionOnlyTheFlagIsSet) {
  view_.async_preempt = false;
  round(0);
  RetakeActions a = round(10);
  EXPECT_TRUE(a.request_preempt);
  EXPECT_FALSE(a.signal);
}

TEST_F(RetakeTest, TheSchedulerContextIsNotPreempted) {
  view_.has_fiber = false;
  round(0);
  RetakeActions a = round(20);
  EXPECT_FALSE(a.request_preempt);
  EXPECT_FALSE(a.signal);
}

TEST_F(RetakeTest, ALentSpareGoesBackWhenTheStuckThreadRunsAgain) {
  view_.spare_lent = true;
  state_ = 'S';
  round(0);
  EXPECT_FALSE(round(10).retire_spare) << "still stuck";
  state_ = 'R';
  EXPECT_TRUE(round(11).retire_spare);
}

TEST_F(RetakeTest, ALentSpareGoesBackWhenItsPSwitched) {
  view_.spare_lent = true;
  state_ = 'S';
  round(0);
  round(10);
  view_.seq = 8;
  EXPECT_TRUE(round(11).retire_spare);
}

TEST_F(RetakeTest, StrandedRingWorkWakesAnMAfterOnePeriod) {
  view_.ring_work = true;
  view_.others_idle = true;
  EXPECT_FALSE(round(0).wake_m);
  EXPECT_TRUE(round(1).wake_m);
}

TEST_F(RetakeTest, NoWakeWhenNobodyIsIdle) {
  view_.ring_work = true;
  view_.others_idle = false;
  for (int t = 0; t < 5; ++t) EXPECT_FALSE(round(t).wake_m);
}

TEST_F(RetakeTest, ARunnextOnAPThatKeepsSwitchingWakesNobody) {
  view_.runnext_work = true;
  view_.others_idle = true;
  for (int t = 0; t < 5; ++t) {
    view_.switches = static_cast<std::uint64_t>(t);
    EXPECT_FALSE(round(t).wake_m) << "at " << t << " ms";
  }
  // The P stopped switching: a period later its runnext counts as stranded.
  EXPECT_TRUE(round(5).wake_m);
}

// A timer overdue by a period while a P idles and nobody spins: its P runs
// a fiber that does not switch (no asynchronous preemption), and no M keeps
// it. Within the period an M sleeping until it normally runs it itself.
TEST_F(RetakeTest, ATimerOverdueByAPeriodWakesAnMWhenAPIdles) {
  const std::int64_t due = kBase + 20 * kMs;
  EXPECT_FALSE(wake_for_overdue_timer(due - kMs, due, pol_, true))
      << "not due yet";
  EXPECT_FALSE(wake_for_overdue_timer(due, due, pol_, true)) << "just due";
  EXPECT_FALSE(wake_for_overdue_timer(due + pol_.period - 1, due, pol_, true))
      << "within the grace";
  EXPECT_TRUE(wake_for_overdue_timer(due + pol_.period, due, pol_, true));
  EXPECT_TRUE(wake_for_overdue_timer(due + 60'000 * kMs, due, pol_, true))
      << "long overdue";
}

TEST_F(RetakeTest, AnOverdueTimerWakesNobodyWithoutAnIdlePOrWithASpinner) {
  // others_idle is false when every P is busy (the timer waits for a
  // switch) or an M already looks for work (it runs the timer).
  const std::int64_t due = kBase + 20 * kMs;
  EXPECT_FALSE(wake_for_overdue_timer(due + 10 * kMs, due, pol_, false));
}

TEST_F(RetakeTest, NoTimerWakesNobody) {
  EXPECT_FALSE(wake_for_overdue_timer(kBase, 0, pol_, true));
}

// The grace follows sysmon's period (a tenth of the slice, at least 20 us).
TEST_F(RetakeTest, TheOverdueGraceIsOnePeriod) {
  pol_.period = 20'000;
  const std::int64_t due = kBase + 20 * kMs;
  EXPECT_FALSE(wake_for_overdue_timer(due + 19'999, due, pol_, true));
  EXPECT_TRUE(wake_for_overdue_timer(due + 20'000, due, pol_, true));
}

// calm (sysmon may sleep until work arrives): a P that runs the same fiber
// as at the previous round, with nothing waiting, or an idle P. The first
// round has nothing to compare with.
TEST_F(RetakeTest, CalmOnlyWhenTheSameFiberRunsWithNothingWaiting) {
  view_.others_wait = false;
  round(0);
  EXPECT_FALSE(watch_.calm()) << "first round: nothing seen before";
  round(1);
  EXPECT_TRUE(watch_.calm());
  round(15);  // overrun: still calm, the flag alone is set
  EXPECT_TRUE(watch_.calm());

  view_.switches = 1;  // a switch since (a hand-off chain, same seq)
  round(16);
  EXPECT_FALSE(watch_.calm());
  round(17);
  EXPECT_TRUE(watch_.calm());

  view_.seq = 8;  // a new fiber
  round(18);
  EXPECT_FALSE(watch_.calm());
  round(19);
  EXPECT_TRUE(watch_.calm());

  view_.others_wait = true;
  round(20);
  EXPECT_FALSE(watch_.calm()) << "work waits for the P";
  view_.others_wait = false;
  round(21);
  EXPECT_TRUE(watch_.calm());

  view_.spare_lent = true;
  round(22);
  EXPECT_FALSE(watch_.calm()) << "a lent spare is watched every period";
  view_.spare_lent = false;

  view_.has_fiber = false;  // its M looks for work
  round(23);
  EXPECT_FALSE(watch_.calm());

  view_.running = false;
  round(24);
  EXPECT_TRUE(watch_.calm()) << "an idle P";
}

TEST_F(RetakeTest, ASpareIsNeverCalm) {
  view_.others_wait = false;
  view_.is_spare = true;
  for (int t = 0; t < 3; ++t) {
    round(t);
    EXPECT_FALSE(watch_.calm()) << "at " << t << " ms";
  }
}

}  // namespace
}  // namespace goro::runtime_internal
