// Copyright goro authors.

#include "sync/context.h"

#include <atomic>
#include <chrono>
#include <tuple>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

using namespace std::chrono_literals;

class ContextTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(ContextTest);

TEST_P(ContextTest, CancelPropagatesToChildrenNotParents) {
  run([] {
    auto bg = goro::Context::background();
    EXPECT_TRUE(bg.err().ok());
    EXPECT_FALSE(bg.done());
    auto [a, cancel_a] = goro::with_cancel(bg);
    auto [b, cancel_b] = goro::with_cancel(a);
    auto [c, cancel_c] = goro::with_cancel(b);
    cancel_b();
    EXPECT_TRUE(a.err().ok());
    EXPECT_TRUE(absl::IsCancelled(b.err()));
    EXPECT_TRUE(absl::IsCancelled(c.err()));
    EXPECT_EQ(c.done().recv(), std::nullopt);  // closed
    cancel_b();                                // idempotent
    cancel_a();
    cancel_c();
    // A child of a cancelled context is born cancelled.
    auto [d, cancel_d] = goro::with_cancel(a);
    EXPECT_TRUE(absl::IsCancelled(d.err()));
    cancel_d();
  });
}

TEST_P(ContextTest, TimeoutWakesSelect) {
  run([] {
    auto [ctx, cancel] = goro::with_timeout(goro::Context::background(), 2ms);
    ASSERT_TRUE(ctx.deadline().has_value());
    goro::Chan<int> never(0);
    auto t0 = std::chrono::steady_clock::now();
    std::size_t i =
        goro::select(goro::recv_case(never), goro::recv_case(ctx.done()));
    EXPECT_EQ(i, 1u);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 1ms);
    EXPECT_TRUE(absl::IsDeadlineExceeded(ctx.err()));
    cancel();
    EXPECT_TRUE(absl::IsDeadlineExceeded(ctx.err()));  // never changes
  });
}

TEST_P(ContextTest, CancelWakesManyFibers) {
  run([] {
    goro_test::FiberGroup g;
    auto [ctx, cancel] = goro::with_cancel(goro::Context::background());
    auto [child, cancel_child] = goro::with_timeout(ctx, 10s);
    std::atomic<int> woke{0};
    for (int i = 0; i < 16; ++i) {
      g.go([&, c = child] {
        c.done().recv();
        woke.fetch_add(1);
      });
    }
    goro::yield();
    cancel();
    g.wait();
    EXPECT_EQ(woke.load(), 16);
    EXPECT_TRUE(absl::IsCancelled(child.err()));
    cancel_child();
  });
}

// A parent cancelled while a child's with_deadline arms its timer: the
// parent's cancel() cancels the child and reads its timer, which
// with_deadline used to write without the child's lock (a data race TSan
// reports: bazel test --config=tsan //tests/sync:context_test).
TEST_P(ContextTest, CancelParentWhileChildArmsDeadline) {
  run([] {
    for (int i = 0; i < goro_test::scaled(1000); ++i) {
      auto [parent, cancel_parent] =
          goro::with_cancel(goro::Context::background());
      goro::Context child = goro::Context::background();
      goro::CancelFunc cancel_child;
      std::atomic<bool> started{false};
      {
        goro_test::FiberGroup g;
        g.go([&, p = parent] {
          started.store(true, std::memory_order_release);
          std::tie(child, cancel_child) = goro::with_timeout(p, 10s);
        });
        g.go([&, cancel = cancel_parent] {
          while (!started.load(std::memory_order_acquire)) goro::yield();
          cancel();
        });
      }
      EXPECT_TRUE(absl::IsCancelled(child.err()));
      cancel_child();
    }
  });
}

}  // namespace
