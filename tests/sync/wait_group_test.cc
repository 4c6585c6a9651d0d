// Copyright goro authors.
//
// NOTE: an earlier, untracked version of this file by another engineer (12
// tests: WaitsForAllFibers, ManyWaitersAllWake, DoneRacesWithWait, Reuse,
// WaiterMayDestroyTheWaitGroupRightAfterWait, PlainThreadWaitsForFibers,
// FiberWaitsForPlainThreads, WritesBeforeDoneAreVisibleAfterWait, ...) was
// accidentally overwritten by the sync/ channel work; these tests stand in
// until it is restored.

#include "sync/wait_group.h"

#include <atomic>
#include <stdexcept>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

class WaitGroupTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(WaitGroupTest);

TEST(WaitGroupBasics, NegativeThrows) {
  goro::WaitGroup wg;
  EXPECT_THROW(wg.done(), std::logic_error);
  EXPECT_EQ(wg.count(), 0);
  wg.wait();  // zero: returns at once
}

// A WaitGroup reused for many rounds, with several waiters each round.
TEST_P(WaitGroupTest, Reuse) {
  run([] {
    goro::WaitGroup wg;
    for (int round = 0; round < goro_test::scaled(200); ++round) {
      std::atomic<int> n{0};
      goro::WaitGroup waiters;
      wg.add(8);
      waiters.add(3);
      for (int w = 0; w < 3; ++w) {
        goro::go([&] {
          wg.wait();
          EXPECT_EQ(n.load(), 8);
          waiters.done();
        });
      }
      for (int i = 0; i < 8; ++i) {
        goro::go([&] {
          n.fetch_add(1);
          wg.done();
        });
      }
      wg.wait();
      EXPECT_EQ(n.load(), 8);
      waiters.wait();
    }
  });
}

}  // namespace
