// Copyright goro authors.

#include "sync/once.h"

#include <atomic>
#include <stdexcept>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

class OnceTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(OnceTest);

TEST_P(OnceTest, RunsExactlyOnceAndOthersWait) {
  run([] {
    goro_test::FiberGroup g;
    goro::Once once;
    std::atomic<int> runs{0};
    int value = 0;  // written by f, read after call(): TSan checks ordering
    for (int i = 0; i < 32; ++i) {
      g.go([&] {
        once.call([&] {
          runs.fetch_add(1);
          goro::sleep_for(std::chrono::milliseconds(1));  // others park
          value = 42;
        });
        EXPECT_EQ(value, 42);
      });
    }
    g.wait();
    EXPECT_EQ(runs.load(), 1);
    EXPECT_TRUE(once.done());
  });
}

TEST_P(OnceTest, ThrowLeavesItNotDone) {
  run([] {
    goro::Once once;
    EXPECT_THROW(once.call([] { throw std::runtime_error("x"); }),
                 std::runtime_error);
    EXPECT_FALSE(once.done());
    int n = 0;
    once.call([&] { ++n; });
    once.call([&] { ++n; });
    EXPECT_EQ(n, 1);
  });
}

}  // namespace
