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

// context.h with_timeout: a timeout beyond the clock's range is a deadline
// that never passes (before, now + timeout overflowed into the past and the
// context was born expired).
TEST_P(ContextTest, ForeverTimeoutNeverExpires) {
  run([] {
    auto [ctx, cancel] = goro::with_timeout(goro::Context::background(),
                                            std::chrono::hours::max());
    goro::sleep_for(20ms);
    EXPECT_TRUE(ctx.err().ok()) << ctx.err();
    ASSERT_TRUE(ctx.deadline().has_value());
    EXPECT_EQ(*ctx.deadline(), std::chrono::steady_clock::time_point::max());
    cancel();
    EXPECT_TRUE(absl::IsCancelled(ctx.err()));
    // The other end: a deadline long past (time_point::min(), a timeout of
    // nanoseconds::min()) is born expired, not wrapped into the future.
    auto [old, cancel_old] =
        goro::with_deadline(goro::Context::background(),
                            std::chrono::steady_clock::time_point::min());
    EXPECT_TRUE(absl::IsDeadlineExceeded(old.err())) << old.err();
    auto [neg, cancel_neg] = goro::with_timeout(
        goro::Context::background(), std::chrono::nanoseconds::min());
    EXPECT_TRUE(absl::IsDeadlineExceeded(neg.err())) << neg.err();
    cancel_old();
    cancel_neg();
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
    for (int i = 0; i < goro_test::Scaled(1000, 100); ++i) {
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

// context.h: a derived context's deadline is the earlier of its parent's
// and its own -- it is cancelled with DeadlineExceeded when the parent's
// earlier deadline passes.
TEST_P(ContextTest, DeadlineIsTheEarlierOfParentsAndOwn) {
  run([] {
    auto [parent, cancel_parent] =
        goro::with_timeout(goro::Context::background(), 5ms);
    auto [child, cancel_child] = goro::with_timeout(parent, 60s);
    ASSERT_TRUE(child.deadline().has_value());
    ASSERT_TRUE(parent.deadline().has_value());
    EXPECT_EQ(*child.deadline(), *parent.deadline());
    // Closed in ~5 ms; give up (a liveness bound, not a timing figure) long
    // before the child's own 60 s deadline or the watchdog.
    // (A Timer, stopped afterwards: an after() still armed when run returns
    // is never freed.)
    bool gave_up = false;
    goro::Timer give_up(3s);
    goro::select(goro::recv_case(child.done()),
                 goro::recv_case(give_up.c(), [&] { gave_up = true; }));
    give_up.stop();
    EXPECT_FALSE(gave_up) << "the child waited for its own deadline";
    EXPECT_TRUE(absl::IsDeadlineExceeded(child.err()));
    // The other way round: the child's own deadline is the earlier one.
    auto [late, cancel_late] =
        goro::with_timeout(goro::Context::background(), 10s);
    auto [early, cancel_early] = goro::with_timeout(late, 5ms);
    EXPECT_LT(*early.deadline(), *late.deadline());
    EXPECT_EQ(early.done().recv(), std::nullopt);
    EXPECT_TRUE(absl::IsDeadlineExceeded(early.err()));
    EXPECT_TRUE(late.err().ok()) << "cancelling a child cancelled its parent";
    cancel_early();
    cancel_late();
    cancel_child();
    cancel_parent();
  });
}

}  // namespace
