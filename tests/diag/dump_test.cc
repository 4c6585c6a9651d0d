// Copyright goro authors.
//
// goro::dump_fibers and the SIGQUIT dump (diag/dump.h; issue 11): Go's
// format with the wait reason, the name, frames with file:line, "created
// by"; fibers on other threads reported as unavailable; pinned fibers never
// run while their stacks are read; SIGQUIT dumps and exits 2 unless
// GORO_SIGQUIT=0 or the program had its own handler.

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;

// The lines the dump must name (kept next to the calls they point at).
int g_recv_line = 0;
int g_go_line = 0;
int g_dump_line = 0;

__attribute__((noinline)) int WaitForJob(goro::Chan<int> jobs) {
  g_recv_line = __LINE__ + 1;
  auto v = jobs.recv();
  return v ? *v : -1;  // not a tail call: this frame stays on the stack
}

__attribute__((noinline)) void TakeTheLock(goro::Mutex* mu) {
  mu->lock();
  mu->unlock();
}

std::string Dump() {
  std::ostringstream out;
  g_dump_line = __LINE__ + 1;
  goro::dump_fibers(out);
  return out.str();
}

// Starts "waiter" (chan receive in WaitForJob) and "locker" (mutex lock),
// waits until both are parked, calls body, then releases them.
template <typename F>
void WithParkedFibers(F body) {
  goro::Chan<int> jobs(0);
  goro::Mutex mu;
  mu.lock();
  goro::WaitGroup wg;
  wg.add(2);
  g_go_line = __LINE__ + 1;
  goro::go({.name = "waiter"}, [jobs, &wg] {
    WaitForJob(jobs);
    wg.done();
  });
  goro::go({.name = "locker"}, [&mu, &wg] {
    TakeTheLock(&mu);
    wg.done();
  });
  goro::sleep_for(30ms);  // both park
  body();
  jobs.send(1);
  mu.unlock();
  wg.wait();
}

std::string Block(const std::string& dump, const std::string& header_re) {
  std::smatch m;
  const std::regex re(header_re + "[^\n]*:\n((\t?[^\n]+\n)*)");
  if (!std::regex_search(dump, m, re)) return "";
  return m[0];
}

// diag/dump.h: header with id, name and wait reason; WaitForJob's frame
// with the file:line of its recv; "created by" with go()'s line.
TEST(DumpTest, ParkedFiberShowsReasonNameFrameLineAndCreator) {
  goro_test::CleanGoroEnv env;
  std::string dump;
  goro::run(goro_test::Procs(2),
            [&] { WithParkedFibers([&] { dump = Dump(); }); });
  const std::string waiter =
      Block(dump, "fiber [0-9]+ \"waiter\" \\[chan receive");
  ASSERT_FALSE(waiter.empty()) << dump;
  EXPECT_NE(waiter.find("WaitForJob(...)\n\ttests/diag/dump_test.cc:" +
                        std::to_string(g_recv_line) + " +0x"),
            std::string::npos)
      << waiter;
  EXPECT_NE(waiter.find("goro::Chan<int>::recv(...)\n\tsync/chan.h:"),
            std::string::npos)
      << waiter;
  EXPECT_NE(waiter.find("created by "), std::string::npos) << waiter;
  EXPECT_NE(waiter.find("\ttests/diag/dump_test.cc:" +
                        std::to_string(g_go_line) + "\n"),
            std::string::npos)
      << waiter;
  const std::string locker =
      Block(dump, "fiber [0-9]+ \"locker\" \\[mutex lock");
  ASSERT_FALSE(locker.empty()) << dump;
  EXPECT_NE(locker.find("TakeTheLock(...)\n\ttests/diag/dump_test.cc:"),
            std::string::npos)
      << locker;
  // The caller's own fiber: running, with the frame that called the dump.
  const std::string self = Block(dump, "fiber [0-9]+ \"main\" \\[running");
  ASSERT_FALSE(self.empty()) << dump;
  EXPECT_NE(self.find("tests/diag/dump_test.cc:" + std::to_string(g_dump_line)),
            std::string::npos)
      << self;
}

// A fiber spinning on another thread is not unwound; one inside
// goro::blocking() is "blocking call".
TEST(DumpTest, FibersOnOtherThreadsAreReportedUnavailable) {
  goro_test::CleanGoroEnv env;
  std::string dump;
  goro::run(goro_test::Procs(2), [&] {
    std::atomic<bool> stop{false}, spinning{false}, in_call{false};
    goro::WaitGroup wg;
    wg.add(2);
    goro::go({.name = "spinner"}, [&] {
      spinning.store(true);
      while (!stop.load(std::memory_order_relaxed)) {
      }
      wg.done();
    });
    goro::go({.name = "caller"}, [&] {
      goro::blocking([&] {
        in_call.store(true);
        while (!stop.load()) std::this_thread::sleep_for(1ms);
      });
      wg.done();
    });
    while (!spinning.load() || !in_call.load()) goro::sleep_for(1ms);
    dump = Dump();
    stop.store(true);
    wg.wait();
  });
  EXPECT_TRUE(std::regex_search(
      dump, std::regex("fiber [0-9]+ \\[running\\]:\n\tfiber running on "
                       "other thread; stack unavailable\n")))
      << dump;
  EXPECT_TRUE(std::regex_search(
      dump, std::regex("fiber [0-9]+ \\[blocking call\\]:\n\tfiber running "
                       "on other thread; stack unavailable\n")))
      << dump;
}

// From a plain thread: the same dump; without a runtime, a plain message.
TEST(DumpTest, CallableFromAPlainThreadAndWithoutARuntime) {
  goro_test::CleanGoroEnv env;
  std::ostringstream none;
  goro::dump_fibers(none);
  EXPECT_EQ(none.str(), "goro: no runtime is running\n");
  std::string dump;
  goro::run(goro_test::Procs(1), [&] {
    WithParkedFibers([&] {
      std::thread t([&] { dump = Dump(); });
      goro::blocking([&] { t.join(); });
    });
  });
  EXPECT_FALSE(Block(dump, "fiber [0-9]+ \"waiter\" \\[chan receive").empty())
      << dump;
}

// Pinning: dumps taken over and over while fibers park and wake each other
// (every fiber's stack changes all the time) never read a stack that is
// being run: each dump parses, and every fiber seen parked in the ping-pong
// shows the ping-pong's own frame.
__attribute__((noinline)) void PingPong(goro::Chan<int> in, goro::Chan<int> out,
                                        int n) {
  for (int i = 0; i < n; ++i) {
    auto v = in.recv();
    if (!v) return;
    try {
      out.send(*v + 1);  // buffered: parks only in recv
    } catch (const goro::ChanClosed&) {
      return;
    }
  }
}

TEST(DumpTest, DumpsDuringPingPongOnlyReadPinnedStacks) {
  goro_test::CleanGoroEnv env;
  std::atomic<bool> done{false};
  std::vector<std::string> dumps;
  goro::run(goro_test::Procs(2), [&] {
    constexpr int kPairs = 8;
    goro::WaitGroup wg;
    for (int p = 0; p < kPairs; ++p) {
      goro::Chan<int> a(1), b(1);  // one token circulates
      wg.add(2);
      goro::go({.name = "ping"}, [a, b, &wg] {
        PingPong(a, b, 1 << 30);
        wg.done();
      });
      goro::go({.name = "pong"}, [a, b, &wg]() mutable {
        a.send(0);
        PingPong(b, a, 1 << 30);
        wg.done();
      });
      goro::go([a, b, &done]() mutable {
        while (!done.load()) goro::sleep_for(5ms);
        a.close();
        b.close();
      });
    }
    std::thread dumper([&] {
      for (int i = 0; i < goro_test::Scaled(20, 5); ++i)
        dumps.push_back(Dump());
    });
    goro::blocking([&] { dumper.join(); });
    done.store(true);
    wg.wait();
  });
  ASSERT_FALSE(dumps.empty());
  int parked_seen = 0;
  const std::regex parked(
      "fiber [0-9]+ \"p[io]ng\" \\[chan (send|receive)\\]:\n((\t?[^\n]+\n)*)");
  for (const std::string& d : dumps) {
    for (std::sregex_iterator it(d.begin(), d.end(), parked), end; it != end;
         ++it) {
      ++parked_seen;
      EXPECT_NE(
          (*it)[2].str().find("PingPong(...)\n\ttests/diag/dump_test.cc:"),
          std::string::npos)
          << (*it)[0];
    }
  }
  EXPECT_GT(parked_seen, 0);
}

// The minutes in the header (diag/dump.h): "[chan receive, 2 minutes]"
// once a fiber has waited that long, nothing under a minute, "1 minute" in
// the singular. park() dates the wait with sysmon's coarse clock
// (Fiber::wait_since); the test checks that date, then moves it back by
// whole minutes instead of waiting for them, and takes real dumps.
goro::runtime_internal::Fiber* FindFiber(const std::string& name) {
  using goro::runtime_internal::g_sched;
  goro::runtime_internal::Sched* s = g_sched.load();
  goro::runtime_internal::MutexLock l(&s->free_lock);
  for (auto* f = s->all_fibers; f != nullptr; f = f->all_next) {
    if (f->state.load() == goro::runtime_internal::FiberState::kWaiting &&
        f->name == name) {
      return f;
    }
  }
  return nullptr;
}

TEST(DumpTest, LongWaitsShowTheMinutes) {
  goro_test::CleanGoroEnv env;
  std::string header[4];
  std::int64_t parked_at = 0, now = 0;
  goro::run(goro_test::Procs(2), [&] {
    WithParkedFibers([&] {
      goro::runtime_internal::Fiber* waiter = FindFiber("waiter");
      ASSERT_NE(waiter, nullptr);
      parked_at = waiter->wait_since.load();
      now = goro::runtime_internal::g_coarse_now_ns.load();
      constexpr std::int64_t kMinute = 60'000'000'000;
      const std::int64_t back[4] = {0, kMinute + kMinute / 2, 2 * kMinute,
                                    61 * kMinute};
      for (int i = 0; i < 4; ++i) {
        waiter->wait_since.store(parked_at - back[i]);
        const std::string dump = Dump();
        std::smatch m;
        if (std::regex_search(dump, m,
                              std::regex("fiber [0-9]+ \"waiter\" [^\n]*"))) {
          header[i] = m[0];
        }
      }
      waiter->wait_since.store(parked_at);
    });
  });
  // Dated at the park, by a clock that runs (sysmon's), within the 30 ms
  // the fibers have been parked plus sysmon's longest sleep (100 ms).
  EXPECT_NE(parked_at, 0);
  EXPECT_LE(parked_at, now);
  EXPECT_LT(now - parked_at, 2'000'000'000);
  EXPECT_TRUE(std::regex_match(
      header[0], std::regex("fiber [0-9]+ \"waiter\" \\[chan receive\\]:")))
      << header[0];
  EXPECT_NE(header[1].find("[chan receive, 1 minute]:"), std::string::npos)
      << header[1];
  EXPECT_NE(header[2].find("[chan receive, 2 minutes]:"), std::string::npos)
      << header[2];
  EXPECT_NE(header[3].find("[chan receive, 61 minutes]:"), std::string::npos)
      << header[3];
}

class SigquitDeathTest : public testing::Test {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
  goro_test::CleanGoroEnv env_;
};

// SIGQUIT: the dump on stderr, then exit status 2.
TEST_F(SigquitDeathTest, DumpsEveryFiberAndExitsTwo) {
  EXPECT_EXIT(goro::run(goro_test::Procs(2),
                        [] {
                          WithParkedFibers([] {
                            kill(getpid(), SIGQUIT);
                            goro::sleep_for(10s);  // the dump thread exits
                          });
                        }),
              testing::ExitedWithCode(2),
              "SIGQUIT: quit\n\n(.|\n)*fiber [0-9]+ \"waiter\" \\[chan "
              "receive\\]:\n(.|\n)*WaitForJob\\(\\.\\.\\.\\)\n\ttests/diag/"
              "dump_test.cc:[0-9]+(.|\n)*\"locker\" \\[mutex lock\\]");
}

// run installs its SIGQUIT handler while main may already run.
void WaitForSigquitHandler() {
  struct sigaction sa;
  do {
    goro::yield();
    sigaction(SIGQUIT, nullptr, &sa);
  } while (sa.sa_handler == SIG_DFL);
}

// SIGQUIT while every P runs a spinning fiber: sysmon, which takes the
// dump, is busy preempting them and must still notice the hand-off.
TEST_F(SigquitDeathTest, DumpsWhileEveryProcSpins) {
  EXPECT_EXIT(goro::run(goro_test::Procs(2),
                        [] {
                          static std::atomic<bool> stop{false};
                          for (int i = 0; i < 2; ++i) {
                            goro::go([] {
                              while (!stop.load(std::memory_order_relaxed)) {
                              }
                            });
                          }
                          WaitForSigquitHandler();
                          kill(getpid(), SIGQUIT);
                          while (!stop.load(std::memory_order_relaxed)) {
                          }
                        }),
              testing::ExitedWithCode(2), "SIGQUIT: quit\n\n(.|\n)*fiber");
}

// SIGQUIT just before main returns: whichever comes first, sysmon's next
// round or run's end, takes the dump; the process never exits 0. raise()
// delivers to this thread before it returns (kill() to the process may
// reach another thread after run disarmed the handler: then SIGQUIT's
// default action), once run has installed the handler.
TEST_F(SigquitDeathTest, DumpsWhenRunEndsRightAfter) {
  EXPECT_EXIT(
      {
        goro::run(goro_test::Procs(1), [] {
          WaitForSigquitHandler();
          raise(SIGQUIT);
        });
        std::exit(0);
      },
      testing::ExitedWithCode(2), "SIGQUIT: quit");
}

// GORO_SIGQUIT=0: SIGQUIT keeps its default action (killed by the signal).
TEST_F(SigquitDeathTest, GoroSigquitZeroLeavesTheDefaultAction) {
  goro_test::ScopedEnv off("GORO_SIGQUIT", "0");
  EXPECT_EXIT(goro::run(goro_test::Procs(1),
                        [] {
                          kill(getpid(), SIGQUIT);
                          goro::sleep_for(10s);
                        }),
              testing::KilledBySignal(SIGQUIT), "");
}

std::atomic<int> g_program_handler_calls{0};

// A SIGQUIT handler the program installed before run is kept.
TEST(SigquitTest, AHandlerInstalledBeforeRunIsKept) {
  goro_test::CleanGoroEnv env;
  struct sigaction sa {
  }, old{};
  sa.sa_handler = [](int) { g_program_handler_calls.fetch_add(1); };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGQUIT, &sa, &old), 0);
  goro::run(goro_test::Procs(1), [] {
    kill(getpid(), SIGQUIT);
    for (int i = 0; i < 1000 && g_program_handler_calls.load() == 0; ++i) {
      goro::sleep_for(1ms);
    }
  });
  EXPECT_EQ(g_program_handler_calls.load(), 1);
  sigaction(SIGQUIT, &old, nullptr);
}

TEST(SigquitTest, BadGoroSigquitValueThrowsNamingIt) {
  goro_test::CleanGoroEnv env;
  goro_test::ScopedEnv bad("GORO_SIGQUIT", "yes");
  try {
    goro::run([] {});
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("GORO_SIGQUIT"), std::string::npos)
        << e.what();
  }
}

}  // namespace
