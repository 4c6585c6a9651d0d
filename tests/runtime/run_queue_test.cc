// Copyright goro authors.
//
// RunQueue (runtime/internal/run_queue.h): the owner's push/pop, overflow,
// stealing half, and a concurrent stress test with exact accounting: every
// element pushed by the owner is delivered exactly once, to the owner or to
// one of 1-3 thieves.

#include "runtime/internal/run_queue.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro::runtime_internal::RunQueue;

struct Item {
  int id;
};

std::vector<Item> MakeItems(int n) {
  std::vector<Item> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)].id = i;
  return v;
}

TEST(RunQueueTest, PushPopIsFifo) {
  RunQueue<Item, 8> q;
  auto items = MakeItems(8);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.pop(), nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.push(&items[i]));
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    Item* it = q.pop();
    ASSERT_NE(it, nullptr);
    EXPECT_EQ(it->id, i);
  }
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_TRUE(q.empty());
}

TEST(RunQueueTest, FullQueueRefusesPushAndWrapsAround) {
  RunQueue<Item, 8> q;
  auto items = MakeItems(1000);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(q.push(&items[i]));
  EXPECT_FALSE(q.push(&items[8]));
  EXPECT_EQ(q.size(), 8u);
  // Many laps around the ring, keeping 1..8 elements queued.
  int next_in = 8, next_out = 0;
  for (int lap = 0; lap < 100; ++lap) {
    const int k = 1 + lap % 8;
    for (int i = 0; i < k; ++i) {
      Item* it = q.pop();
      ASSERT_NE(it, nullptr);
      ASSERT_EQ(it->id, next_out % 1000);
      ++next_out;
    }
    for (int i = 0; i < k; ++i) ASSERT_TRUE(q.push(&items[next_in++ % 1000]));
    ASSERT_FALSE(q.push(&items[0]));
  }
}

TEST(RunQueueTest, TakeHalfForOverflowTakesTheOlderHalf) {
  RunQueue<Item, 16> q;
  auto items = MakeItems(16);
  Item* out[16] = {};
  // Only a full queue gives up half.
  ASSERT_TRUE(q.push(&items[0]));
  EXPECT_EQ(q.take_half_for_overflow(out), 0u);
  for (int i = 1; i < 16; ++i) ASSERT_TRUE(q.push(&items[i]));
  EXPECT_EQ(q.take_half_for_overflow(out), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i]->id, i);
  EXPECT_EQ(q.size(), 8u);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(q.pop()->id, i);
  EXPECT_EQ(q.pop(), nullptr);
}

TEST(RunQueueTest, StealIntoMovesHalfRoundedUp) {
  auto items = MakeItems(64);
  for (int n : {1, 2, 3, 7, 8, 16}) {
    RunQueue<Item, 16> victim, thief;
    for (int i = 0; i < n; ++i) ASSERT_TRUE(victim.push(&items[i]));
    const int take = n - n / 2;
    Item* run = victim.steal_into(thief);
    ASSERT_NE(run, nullptr) << n;
    // The oldest `take` move; the last of them is returned to run now, the
    // others are queued in the thief's ring in order.
    EXPECT_EQ(run->id, take - 1) << n;
    EXPECT_EQ(thief.size(), static_cast<std::uint32_t>(take - 1)) << n;
    for (int i = 0; i < take - 1; ++i) EXPECT_EQ(thief.pop()->id, i) << n;
    EXPECT_EQ(thief.pop(), nullptr);
    EXPECT_EQ(victim.size(), static_cast<std::uint32_t>(n - take)) << n;
    for (int i = take; i < n; ++i) EXPECT_EQ(victim.pop()->id, i) << n;
    EXPECT_EQ(victim.pop(), nullptr);
  }
  RunQueue<Item, 16> empty, thief;
  EXPECT_EQ(empty.steal_into(thief), nullptr);
  EXPECT_TRUE(thief.empty());
}

TEST(RunQueueTest, StealIntoAThiefWhoseCountersHaveWrapped) {
  // The thief's ring is empty but its head/tail are not at zero.
  RunQueue<Item, 8> victim, thief;
  auto items = MakeItems(20);
  for (int i = 0; i < 13; ++i) {
    ASSERT_TRUE(thief.push(&items[i]));
    ASSERT_EQ(thief.pop(), &items[i]);
  }
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(victim.push(&items[i]));
  Item* run = victim.steal_into(thief);
  ASSERT_EQ(run, &items[2]);
  EXPECT_EQ(thief.pop(), &items[0]);
  EXPECT_EQ(thief.pop(), &items[1]);
  EXPECT_EQ(thief.pop(), nullptr);
}

// Owner: pushes `kTotal` items, popping some itself and, when the ring is
// full, moving half to an "overflow" list (as runq_put does with the global
// queue). Thieves steal into their own rings and drain them. Every 2048
// items the owner stops popping until the thieves have emptied the queue, so
// they are guaranteed a share even when the owner is much faster. Each item
// must be delivered exactly once.
void Stress(int thieves) {
  const int kTotal = goro_test::Scaled(400000, 40000);
  auto items = MakeItems(kTotal);
  std::vector<std::atomic<std::uint8_t>> seen(static_cast<std::size_t>(kTotal));
  std::atomic<long> delivered_thieves{0};
  std::atomic<int> started{0};
  std::atomic<bool> done{false};
  RunQueue<Item, 256> q;

  // Returns false (and records a failure) for a pointer that is not an item.
  auto deliver = [&](Item* it) {
    if (it == nullptr || it < items.data() || it >= items.data() + kTotal) {
      ADD_FAILURE() << "bad element " << it;
      return;
    }
    seen[static_cast<std::size_t>(it->id)].fetch_add(1,
                                                     std::memory_order_relaxed);
  };

  std::vector<std::thread> ts;
  for (int t = 0; t < thieves; ++t) {
    ts.emplace_back([&] {
      RunQueue<Item, 256> mine;
      long n = 0;
      started.fetch_add(1);
      while (!done.load(std::memory_order_acquire) || !q.empty()) {
        Item* it = q.steal_into(mine);
        if (it == nullptr) {
          std::this_thread::yield();
          continue;
        }
        deliver(it);
        ++n;
        while (Item* more = mine.pop()) {
          deliver(more);
          ++n;
        }
      }
      delivered_thieves.fetch_add(n);
    });
  }
  while (started.load() < thieves) std::this_thread::yield();

  std::uint32_t rng = 12345;
  long own = 0, overflowed = 0;
  std::vector<Item*> batch(128);
  for (int i = 0; i < kTotal; ++i) {
    while (!q.push(&items[static_cast<std::size_t>(i)])) {
      const std::uint32_t n = q.take_half_for_overflow(batch.data());
      for (std::uint32_t k = 0; k < n; ++k) deliver(batch[k]);
      own += n;
      overflowed += n;
    }
    if (i % 2048 == 2047) {
      // Let the thieves take everything (bounded wait).
      const auto give_up =
          std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (!q.empty() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
      }
      continue;
    }
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    if (rng % 4 == 0) {
      if (Item* it = q.pop()) {
        deliver(it);
        ++own;
      }
    }
  }
  // Drain what is left, racing with the thieves.
  while (Item* it = q.pop()) {
    deliver(it);
    ++own;
  }
  done.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();

  EXPECT_EQ(own + delivered_thieves.load(), kTotal);
  long missing = 0, duplicated = 0;
  for (int i = 0; i < kTotal; ++i) {
    const int c = seen[static_cast<std::size_t>(i)].load();
    if (c == 0) ++missing;
    if (c > 1) ++duplicated;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(duplicated, 0);
  EXPECT_TRUE(q.empty());
  EXPECT_GT(delivered_thieves.load(), 0) << "thieves " << thieves;
  std::printf("thieves %d: owner %ld (overflowed %ld), thieves %ld\n", thieves,
              own, overflowed, delivered_thieves.load());
}

TEST(RunQueueStressTest, OneThief) { Stress(1); }
TEST(RunQueueStressTest, TwoThieves) { Stress(2); }
TEST(RunQueueStressTest, ThreeThieves) { Stress(3); }

}  // namespace
