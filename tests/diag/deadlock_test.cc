// Copyright goro authors.
//
// Deadlock detection (runtime/run.h, "Deadlock detection"; issue 11): a
// program whose fibers can never run again is reported -- message, dump of
// every fiber, exit 2, or DeadlockError with OnDeadlock::kThrow -- and a
// program that only sleeps, waits on a timer, is busy in blocking(), or
// waits for a plain thread that will wake it, or waits on the netpoller,
// never is.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

goro::Options Throwing(int procs = 2) {
  goro::Options o = goro_test::Procs(procs);
  o.on_deadlock = goro::OnDeadlock::kThrow;
  return o;
}

// main waits on a channel nobody sends to; "receiver" waits on another;
// "locker" waits on a Mutex main holds.
void DeadlockedProgram() {
  goro::Chan<int> never(0), never2(0);
  goro::Mutex mu;
  mu.lock();
  goro::go({.name = "receiver"}, [never2]() mutable { (void)never2.recv(); });
  goro::go({.name = "locker"}, [&mu] { mu.lock(); });
  goro::sleep_for(20ms);  // both park (a timer: not a deadlock meanwhile)
  (void)never.recv();
}

class DeadlockDeathTest : public testing::Test {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
  goro_test::CleanGoroEnv env_;
};

// issue 11: "a deadlocked program exits 2 with the message and every fiber
// in the dump (main, a fiber in chan receive with its name, one in mutex
// lock)".
TEST_F(DeadlockDeathTest, ExitsWithStatusTwoTheMessageAndEveryFiber) {
  EXPECT_EXIT(goro::run(goro_test::Procs(2), DeadlockedProgram),
              testing::ExitedWithCode(2),
              "goro: fatal error: all fibers are asleep - deadlock!\n\n"
              "(.|\n)*fiber [0-9]+ \"main\" \\[chan receive\\]:"
              "(.|\n)*fiber [0-9]+ \"receiver\" \\[chan receive\\]:"
              "(.|\n)*fiber [0-9]+ \"locker\" \\[mutex lock\\]:");
}

// kThrow: run throws DeadlockError holding the message and the dump.
TEST(DeadlockTest, ThrowModeThrowsDeadlockErrorWithTheDump) {
  goro_test::CleanGoroEnv env;
  std::string what;
  try {
    goro::run(Throwing(), DeadlockedProgram);
    ADD_FAILURE() << "run returned from a deadlocked program";
  } catch (const goro::DeadlockError& e) {
    what = e.what();
  }
  EXPECT_EQ(
      what.rfind("goro: fatal error: all fibers are asleep - deadlock!", 0), 0u)
      << what;
  EXPECT_NE(what.find("\"main\" [chan receive]"), std::string::npos) << what;
  EXPECT_NE(what.find("\"receiver\" [chan receive]"), std::string::npos)
      << what;
  EXPECT_NE(what.find("\"locker\" [mutex lock]"), std::string::npos) << what;
  // The runtime is gone and a new one works.
  EXPECT_EQ(goro::run([] { return 7; }), 7);
}

// A DeadlockError is a std::runtime_error (catchable as one).
TEST(DeadlockTest, DeadlockErrorIsARuntimeError) {
  goro_test::CleanGoroEnv env;
  EXPECT_THROW(goro::run(Throwing(1),
                         [] {
                           goro::Chan<int> c(0);
                           (void)c.recv();
                         }),
               std::runtime_error);
}

// select with no cases parks forever: a deadlock when alone.
TEST(DeadlockTest, SelectOnNilChannelsAloneIsADeadlock) {
  goro_test::CleanGoroEnv env;
  goro::Chan<int> nil;
  EXPECT_THROW(
      goro::run(Throwing(1), [&] { goro::select(goro::recv_case(nil)); }),
      goro::DeadlockError);
}

// Never reported: a program that is only sleeping. Every other fiber is
// parked for good while main sleeps; only the pending timer keeps it alive.
TEST(DeadlockTest, SleepingProgramIsNeverReported) {
  goro_test::CleanGoroEnv env;
  EXPECT_NO_THROW(goro::run(Throwing(), [] {
    goro::Chan<int> never(0);
    goro::go([never]() mutable { (void)never.recv(); });
    goro::sleep_for(300ms);
  }));
}

// Never reported: waiting on a timer channel.
TEST(DeadlockTest, WaitingOnATimerIsNeverReported) {
  goro_test::CleanGoroEnv env;
  EXPECT_NO_THROW(goro::run(Throwing(), [] {
    goro::Chan<int> never(0);
    goro::go([never]() mutable { (void)never.recv(); });
    auto t = goro::after(300ms);
    (void)t.recv();
  }));
}

// Never reported: a fiber inside goro::blocking() (its M is not idle) will
// wake the others when its call returns.
TEST(DeadlockTest, FiberBusyInBlockingIsNeverReported) {
  goro_test::CleanGoroEnv env;
  int got = 0;
  EXPECT_NO_THROW(goro::run(Throwing(), [&] {
    goro::Chan<int> ch(0);
    goro::go([ch]() mutable {
      goro::blocking([] { std::this_thread::sleep_for(300ms); });
      ch.send(5);
    });
    got = *ch.recv();
  }));
  EXPECT_EQ(got, 5);
}

// Never reported while a plain thread that could still wake a fiber is
// alive: it sends after a delay, with every fiber parked meanwhile.
TEST(DeadlockTest, PlainThreadThatSendsLaterIsWaitedFor) {
  goro_test::CleanGoroEnv env;
  int got = 0;
  EXPECT_NO_THROW(goro::run(Throwing(), [&] {
    goro::Chan<int> ch(0);
    std::thread t([ch]() mutable {
      std::this_thread::sleep_for(300ms);
      ch.send(9);
    });
    got = *ch.recv();
    t.join();  // plain join: the thread has sent, it ends at once
  }));
  EXPECT_EQ(got, 9);
}

// ... and once the last plain thread has exited without waking anyone, the
// deadlock is reported (the idle M rechecks), not before it exits.
TEST(DeadlockTest, ReportedOnceThePlainThreadExitsWithoutSending) {
  goro_test::CleanGoroEnv env;
  std::atomic<bool> exited{false};
  Clock::time_point exit_time{}, report_time{};
  try {
    goro::run(Throwing(), [&] {
      goro::Chan<int> ch(0);
      std::thread([&] {
        std::this_thread::sleep_for(200ms);
        exit_time = Clock::now();
        exited.store(true);
      }).detach();
      (void)ch.recv();
    });
    ADD_FAILURE() << "run returned";
  } catch (const goro::DeadlockError&) {
    report_time = Clock::now();
    EXPECT_TRUE(exited.load()) << "reported while the plain thread was alive";
  }
  ASSERT_TRUE(exited.load());
  // Liveness: the recheck comes every 100 ms; 5 s means it never came.
  EXPECT_LT(report_time - exit_time, 5s);
}

// Connects a plain TCP socket to "127.0.0.1:PORT" and closes it: no goro
// call, only the kernel can tell the runtime.
bool PosixConnect(const std::string& addr) {
  const std::size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port =
      htons(static_cast<std::uint16_t>(std::stoi(addr.substr(colon + 1))));
  if (inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return false;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0;
  ::close(fd);
  return ok;
}

// Never reported: a fiber waiting on the netpoller (rule 4 of
// runtime/internal/checkdead.cc). The only fiber blocks in accept; 300 ms
// later a thread connects with plain POSIX calls. That thread declared
// this_thread_never_wakes_fibers() -- true: it makes no goro call -- so
// the plain-thread rule does not hold the verdict off; only the I/O wait
// does, and only the kernel's readiness event wakes the fiber.
TEST(DeadlockTest, FiberWaitingOnTheNetpollerIsNeverReported) {
  goro_test::CleanGoroEnv env;
  bool accepted = false, connected = false;
  EXPECT_NO_THROW(goro::run(Throwing(), [&] {
    auto ln = goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok()) << ln.status();
    std::thread t([addr = ln->addr(), &connected] {
      goro::this_thread_never_wakes_fibers();
      std::this_thread::sleep_for(300ms);
      connected = PosixConnect(addr);
    });
    auto c = ln->accept();
    accepted = c.ok();
    goro::blocking([&] { t.join(); });
  }));
  EXPECT_TRUE(connected);
  EXPECT_TRUE(accepted);
}

}  // namespace
