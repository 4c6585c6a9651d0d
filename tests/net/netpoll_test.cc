// Copyright goro authors.
//
// The netpoller inside the scheduler (net/internal/poll.h,
// runtime/internal/find_work.cc "The netpoller"): no lost wake-up between
// EAGAIN and the park, no epoll_ctl in steady state, I/O next to a spinner
// on one proc and next to a fiber inside blocking(), timers while an M is
// blocked in epoll, and the I/O waiter count.

#include <atomic>
#include <chrono>
#include <string>

#include "goro.h"
#include "gtest/gtest.h"
#include "net/internal/loopback.h"
#include "net/internal/poll.h"
#include "runtime/internal/park.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using goro::net::Conn;
using goro::net::Listener;
using Clock = std::chrono::steady_clock;

// Unlinked (net/internal/loopback.h): these tests watch the poller, which
// an in-process pair's hand-offs would bypass.
std::pair<Conn, Conn> loopback_pair(Listener* keep) {
  goro::net_internal::loopback_set_linking(false);
  absl::StatusOr<Listener> ln = goro::net::listen("tcp", "127.0.0.1:0");
  EXPECT_TRUE(ln.ok()) << ln.status();
  *keep = *ln;
  absl::StatusOr<Conn> c = goro::net::dial("tcp", ln->addr());
  EXPECT_TRUE(c.ok()) << c.status();
  absl::StatusOr<Conn> s = ln->accept();
  EXPECT_TRUE(s.ok()) << s.status();
  return {*c, *s};
}

// Ping-pong of one byte: each side parks in read until the other writes,
// so every round trip crosses the EAGAIN -> park window on both sides.
// A lost wake-up leaves a reader parked with its byte delivered: the long
// read deadline then turns the hang into a timeout that names the round.
void ping_pong(Conn a, Conn b, int rounds, goro_test::FiberGroup* g) {
  const auto guard = Clock::now() + 5s;
  ASSERT_TRUE(a.set_read_deadline(guard).ok());
  ASSERT_TRUE(b.set_read_deadline(guard).ok());
  g->go([b, rounds]() mutable {
    char x;
    for (int i = 0; i < rounds; ++i) {
      absl::StatusOr<std::size_t> n = b.read({&x, 1});
      ASSERT_TRUE(n.ok() && *n == 1)
          << "echo side, round " << i << ": " << n.status()
          << " (a lost wake-up: the byte was sent)";
      ASSERT_TRUE(b.write({&x, 1}).ok());
    }
  });
  char x = 'p';
  for (int i = 0; i < rounds; ++i) {
    ASSERT_TRUE(a.write({&x, 1}).ok());
    absl::StatusOr<std::size_t> n = a.read({&x, 1});
    ASSERT_TRUE(n.ok() && *n == 1)
        << "ping side, round " << i << ": " << n.status()
        << " (a lost wake-up: the byte was sent)";
  }
}

// poll.h: no lost wake-up between EAGAIN and the park, on 2 procs (the
// reader parks on one thread while the poller readies it on the other).
TEST(Netpoll, PingPongLosesNoWakeUp) {
  const int kRounds = goro_test::Scaled(20000, 2000);
  goro::run(goro_test::Procs(2), [&] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    // Several pairs at once, so that Ms both poll and park.
    for (int k = 0; k < 3; ++k) {
      g.go([&] {
        Listener l2;
        auto [c, d] = loopback_pair(&l2);
        ping_pong(c, d, kRounds, &g);
      });
    }
    ping_pong(a, b, kRounds, &g);
  });
}

// poll.h: a close that races a read on its way to park (after EAGAIN,
// before the fiber is published in the slot) still wakes it: the closer's
// "store closing, load slot" against the reader's "store kWait, load
// closing". A 1 s read deadline rescues a read whose wake-up was lost, so
// the loss shows as a read that took about 1 s instead of a hang.
TEST(Netpoll, CloseRacingAParkingReadWakesIt) {
  const int kRounds = goro_test::Scaled(3000, 300);
  goro::run(goro_test::Procs(2), [&] {
    absl::StatusOr<Listener> ln = goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok());
    int lost = 0, not_closed = 0;
    std::uint32_t rnd = 12345;
    for (int i = 0; i < kRounds; ++i) {
      absl::StatusOr<Conn> c = goro::net::dial("tcp", ln->addr());
      ASSERT_TRUE(c.ok()) << c.status();
      absl::StatusOr<Conn> s = ln->accept();
      ASSERT_TRUE(s.ok()) << s.status();
      ASSERT_TRUE(s->set_read_deadline(Clock::now() + 1s).ok());
      std::atomic<bool> started{false}, done{false};
      Clock::duration took{};
      absl::Status st;
      goro::go([&, s = *s]() mutable {
        started = true;
        {
          // Scoped: `n` shares its status with `st`, and must drop its
          // reference before `done` lets the main fiber destroy `st`.
          // Abseil is not built with TSan here, so its reference count's
          // ordering is invisible to it, and a last unref after `done`
          // was reported as a race with the main fiber's read of `st`.
          const auto t0 = Clock::now();
          char x;
          absl::StatusOr<std::size_t> n = s.read({&x, 1});
          took = Clock::now() - t0;
          st = n.ok() ? absl::InternalError("read OK") : n.status();
        }
        done = true;
      });
      // The reader runs on the other P (stolen) or after our yield; close
      // at a varying moment around its park.
      while (!started.load()) goro::yield();
      rnd = rnd * 1103515245 + 12345;
      for (std::uint32_t k = (rnd >> 16) % 3000; k > 0; --k) {
        __builtin_ia32_pause();
      }
      ASSERT_TRUE(s->close().ok());
      goro_test::AwaitInFiber([&] { return done.load(); }, "the read");
      if (took > 500ms) ++lost;
      if (!goro::net::is_closed(st)) ++not_closed;
      (void)c->close();
    }
    EXPECT_EQ(lost, 0) << "closes that raced a parking read were lost (the "
                          "read waited for its rescue deadline)";
    EXPECT_EQ(not_closed, 0);
  });
}

// poll.h: the same race, forced: the close lands exactly in the window
// between the reader finding its slot empty and storing kWait (through the
// test hook), where the closer finds nobody to wake. Only the reader's
// re-check after storing kWait can see it. Likewise for a deadline set to
// the past in that window.
TEST(Netpoll, CloseOrExpiryInThePreParkWindowIsSeenByTheReCheck) {
  static std::atomic<int> what{0};  // 1: close, 2: expire
  goro::run(goro_test::Procs(2), [&] {
    goro_test::WatchdogNote("a read whose close/expiry was lost");
    absl::StatusOr<Listener> ln = goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok());
    for (int mode = 1; mode <= 2; ++mode) {
      absl::StatusOr<Conn> c = goro::net::dial("tcp", ln->addr());
      absl::StatusOr<Conn> s = ln->accept();
      ASSERT_TRUE(c.ok() && s.ok());
      // The rescue: the peer sends a byte after 1 s, which wakes a reader
      // whose wake-up was lost (close and expiry stop the deadline timers,
      // so a deadline cannot): the loss shows as a 1 s read, not a hang.
      std::atomic<bool> rescued{false};
      goro_test::FiberGroup rescue;
      rescue.go([&, c = *c]() mutable {
        for (int k = 0; k < 100 && !rescued.load(); ++k) goro::sleep_for(10ms);
        (void)c.write("x");
      });
      what = mode;
      goro::net_internal::g_test_before_wait.store(
          [](goro::net_internal::PollDesc* pd, goro::net_internal::Mode m) {
            if (m != goro::net_internal::Mode::kRead) return;
            const int w = what.exchange(0);
            if (w == 1) goro::net_internal::evict(pd);
            if (w == 2) goro::net_internal::set_deadline(pd, 1, true, false);
          });
      const auto t0 = Clock::now();
      char x;
      absl::StatusOr<std::size_t> n = s->read({&x, 1});
      const auto took = Clock::now() - t0;
      goro::net_internal::g_test_before_wait.store(nullptr);
      rescued = true;
      rescue.wait();
      EXPECT_EQ(what.load(), 0) << "the hook did not run";
      EXPECT_LT(took, 500ms)
          << (mode == 1 ? "close" : "expiry")
          << " in the pre-park window was lost: the read stayed parked until "
             "the peer's rescue byte 1 s later";
      EXPECT_FALSE(n.ok()) << "read "
                           << (mode == 1 ? "after close" : "expired");
      if (mode == 1) {
        EXPECT_TRUE(goro::net::is_closed(n.status())) << n.status();
      } else {
        EXPECT_TRUE(goro::net::is_timeout(n.status())) << n.status();
      }
      (void)c->close();
      (void)s->close();
    }
  });
}

// DESIGN "one registration per fd for its lifetime": steady-state I/O
// makes no epoll_ctl call.
TEST(Netpoll, SteadyStateMakesNoEpollCtl) {
  goro::run(goro_test::Procs(2), [] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    const std::uint64_t before = goro::net_internal::epoll_ctl_calls();
    ping_pong(a, b, 2000, &g);
    g.wait();
    EXPECT_EQ(goro::net_internal::epoll_ctl_calls(), before);
    // Control: opening a socket does register it.
    Listener l2;
    auto pair = loopback_pair(&l2);
    EXPECT_GT(goro::net_internal::epoll_ctl_calls(), before);
  });
}

// Issue: preemption of a spinning fiber while others do I/O on one proc.
// The spinner never blocks; the I/O fibers make progress only if it is
// preempted and the poller's readied fibers get the proc.
TEST(Netpoll, SpinnerIsPreemptedWhileOthersDoIoOnOneProc) {
  if (goro_test::kTsan) GTEST_SKIP() << "needs asynchronous preemption";
  goro::run(goro_test::OneProc(1ms), [] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> spins{0};
    g.go([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        spins.fetch_add(1, std::memory_order_relaxed);
      }
    });
    goro::yield();  // let it start spinning
    const auto t0 = Clock::now();
    ping_pong(a, b, 200, &g);
    const auto took = Clock::now() - t0;
    stop = true;
    EXPECT_GT(spins.load(), 0u) << "the spinner never ran";
    // Each round waits at most a slice or two for the spinner: ~1-3 ms. A
    // poller that only runs when the proc idles never finishes (the
    // read deadline fails it at 5 s).
    EXPECT_LT(took, 4s);
  });
}

// Issue: I/O fibers with procs = 1 while another fiber is in blocking():
// the P is handed off, and the poller serves the I/O fibers meanwhile.
TEST(Netpoll, IoProceedsWhileAFiberIsInBlockingOnOneProc) {
  goro::run(goro_test::Procs(1), [] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    std::atomic<bool> in_call{false}, io_done{false}, io_done_first{false};
    g.go([&] {
      goro::blocking([&] {
        in_call = true;
        const auto until = Clock::now() + 3s;
        while (!io_done.load() && Clock::now() < until) {
          std::this_thread::sleep_for(1ms);
        }
        io_done_first = io_done.load();
      });
    });
    goro_test::AwaitInFiber([&] { return in_call.load(); },
                            "the fiber to enter blocking()");
    ping_pong(a, b, 500, &g);
    io_done = true;
    g.wait();
    EXPECT_TRUE(io_done_first.load())
        << "I/O waited for the blocking call to return";
  });
}

// find_work.cc "The netpoller": while an M is blocked in epoll, timers still
// fire on time (the poller sleeps until the earliest timer, with ns
// precision, and an earlier timer breaks its sleep).
TEST(Netpoll, SleepsAreOnTimeWhileAnMIsBlockedInEpoll) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  goro_test::Samples late("sleep_for(1ms) lateness with a reader parked");
  goro::run(goro_test::Procs(2), [&] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    g.go([b]() mutable {
      char x;
      (void)b.read({&x, 1});  // parked for the whole test: io_waiters > 0
    });
    goro_test::AwaitInFiber(
        [] { return goro::runtime_internal::io_waiters() >= 1; },
        "the reader to park");
    for (int i = 0; i < 100; ++i) {
      const auto t0 = Clock::now();
      goro::sleep_for(1ms);
      late.Add(Clock::now() - t0 - 1ms);
    }
    (void)a.write("x");
  });
  // Documented: tens of us. A poller that rounds to a ms tick, or ignores a
  // timer added after it blocked, is late by ms.
  EXPECT_TRUE(goro_test::QuantileBelow(late, 0.5, 700us));
}

// scheduler.h Hooks / park.h io_waiters: fibers parked in I/O are counted
// (for a deadlock detector) and uncounted when they leave.
TEST(Netpoll, IoWaitersCountsParkedFibers) {
  goro::run(goro_test::Procs(2), [] {
    goro_test::FiberGroup g;
    Listener ln;
    auto [a, b] = loopback_pair(&ln);
    EXPECT_EQ(goro::runtime_internal::io_waiters(), 0);
    for (int i = 0; i < 2; ++i) {
      g.go([b]() mutable {
        char x;
        (void)b.read({&x, 1});
      });
    }
    goro_test::AwaitInFiber(
        [] { return goro::runtime_internal::io_waiters() == 1; },
        "one reader parked (the other queues on the read lock)");
    ASSERT_TRUE(a.write("xy").ok());
    g.wait();
    EXPECT_EQ(goro::runtime_internal::io_waiters(), 0);
  });
}

}  // namespace
