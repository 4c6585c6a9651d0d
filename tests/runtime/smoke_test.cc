#include <atomic>
#include <cstdio>

#include "goro.h"
#include "gtest/gtest.h"

TEST(Smoke, RunReturnsValue) {
  EXPECT_EQ(goro::run([] { return 7; }), 7);
}

TEST(Smoke, SpawnAndWait) {
  std::atomic<int> n{0};
  goro::run([&] {
    goro::WaitGroup wg;
    for (int i = 0; i < 1000; ++i) {
      wg.add(1);
      goro::go([&] {
        n.fetch_add(1);
        goro::yield();
        wg.done();
      });
    }
    wg.wait();
  });
  EXPECT_EQ(n.load(), 1000);
}

TEST(Smoke, Sleep) {
  goro::run([] {
    auto t0 = std::chrono::steady_clock::now();
    goro::sleep_for(std::chrono::milliseconds(5));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(5));
  });
}
