// A SIGURG the program sends itself still reaches the handler the program
// installed before goro's (goro chains to it). In its own binary so that the
// program's handler is installed before the first goro::run.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>

#include "goro.h"
#include "gtest/gtest.h"

namespace {

std::atomic<int> g_caught{0};

void on_urg(int) { g_caught.fetch_add(1); }

TEST(SignalChain, ProgramSigurgReachesEarlierHandler) {
  struct sigaction sa = {};
  sa.sa_handler = on_urg;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGURG, &sa, nullptr), 0);
  goro::Options o;
  o.procs = 1;
  o.time_slice = std::chrono::microseconds(200);
  goro::run(o, [] {
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
      wg.done();
    });
    for (int i = 0; i < 5; ++i) {
      kill(getpid(), SIGURG);
      goro::sleep_for(std::chrono::milliseconds(5));
    }
    stop = true;
    wg.wait();
    // goro's own preemption kept working meanwhile.
    EXPECT_GT(goro::stats().preemptions_async, 0u);
  });
  // kill() may deliver to any thread; each one is chained exactly once.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (g_caught.load() < 5 && std::chrono::steady_clock::now() < deadline) {
    usleep(1000);
  }
  EXPECT_EQ(g_caught.load(), 5);
}

}  // namespace
