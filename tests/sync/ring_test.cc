// Copyright goro authors.
//
// Tests of sync/internal/ring.h, the lock-free buffer of buffered channels,
// on its own and with plain threads (no runtime): positions across many laps
// for capacities that are and are not powers of two, full/empty/closed
// answers, element lifetimes, alignment, and concurrent exactly-once
// delivery, also against a concurrent close.

#include "sync/internal/ring.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace {

using goro::sync_internal::ElemOps;
using goro::sync_internal::kElemOps;
using goro::sync_internal::Ring;
using Status = goro::sync_internal::Ring::Status;

// A ring with its own storage.
template <typename T>
class TestRing {
 public:
  explicit TestRing(std::size_t cap)
      : ops_(&kElemOps<T>),
        mem_(static_cast<unsigned char*>(
            ::operator new(cap* Ring::slot_stride(ops_) + 1,
                           std::align_val_t(Ring::slot_align(ops_))))),
        ring_(cap, ops_, mem_) {}
  ~TestRing() {
    ring_.destroy_all();
    ::operator delete(mem_, std::align_val_t(Ring::slot_align(ops_)));
  }
  Ring& operator*() { return ring_; }
  Ring* operator->() { return &ring_; }

  Status push(T v) {
    const Status st = ring_.push(&v);
    return st;  // v (moved from or not) is destroyed here
  }
  Status pop(T* out) {
    alignas(T) unsigned char raw[sizeof(T)];
    const Status st = ring_.pop(raw);
    if (st == Status::kOk) {
      T* p = std::launder(reinterpret_cast<T*>(raw));
      *out = std::move(*p);
      p->~T();
    }
    return st;
  }

 private:
  const ElemOps* ops_;
  unsigned char* mem_;
  Ring ring_;
};

class RingCapacity : public testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(Caps, RingCapacity,
                         testing::Values(1, 2, 3, 5, 7, 8, 64, 100, 1024));

// Fill and drain in uneven steps for many laps: FIFO order, exact sizes,
// kFull exactly at capacity and kEmpty exactly at zero.
TEST_P(RingCapacity, FifoAcrossLaps) {
  const int cap = GetParam();
  TestRing<std::int64_t> r(cap);
  std::int64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 200; ++round) {
    const int fill = 1 + (round * 7) % cap;
    for (int i = 0; i < fill; ++i) {
      const std::size_t before = r->size();
      if (before == static_cast<std::size_t>(cap)) {
        EXPECT_TRUE(r->full_relaxed());
        EXPECT_TRUE(r->full_seq_cst());
        EXPECT_EQ(r.push(-1), Status::kFull);
        break;
      }
      ASSERT_EQ(r.push(next_in++), Status::kOk);
      EXPECT_EQ(r->size(), before + 1);
    }
    const int drain = 1 + (round * 5) % cap;
    for (int i = 0; i < drain; ++i) {
      std::int64_t v = -1;
      if (r->size() == 0) {
        EXPECT_TRUE(r->empty_relaxed());
        EXPECT_TRUE(r->empty_seq_cst());
        EXPECT_EQ(r.pop(&v), Status::kEmpty);
        break;
      }
      ASSERT_EQ(r.pop(&v), Status::kOk);
      EXPECT_EQ(v, next_out++);
    }
  }
  // Fill to the brim, then drain completely.
  while (r.push(next_in) == Status::kOk) ++next_in;
  EXPECT_EQ(r->size(), static_cast<std::size_t>(cap));
  std::int64_t v;
  while (r.pop(&v) == Status::kOk) EXPECT_EQ(v, next_out++);
  EXPECT_EQ(next_out, next_in);
  EXPECT_EQ(r->size(), 0u);
}

// After close: pushes fail with kClosed, pops drain what is there and then
// report kClosed (not kEmpty); a second close reports false.
TEST_P(RingCapacity, CloseDrainsThenReportsClosed) {
  const int cap = GetParam();
  TestRing<int> r(cap);
  const int n = (cap + 1) / 2;
  for (int i = 0; i < n; ++i) ASSERT_EQ(r.push(i), Status::kOk);
  EXPECT_TRUE(r->close());
  EXPECT_FALSE(r->close());
  EXPECT_EQ(r.push(99), Status::kClosed);
  EXPECT_EQ(r->size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    int v = -1;
    ASSERT_EQ(r.pop(&v), Status::kOk);
    EXPECT_EQ(v, i);
  }
  int v;
  EXPECT_EQ(r.pop(&v), Status::kClosed);
  EXPECT_TRUE(r->empty_seq_cst());
}

// Non-trivial elements are moved in and out and destroyed exactly once; what
// is left at the end is destroyed by destroy_all (ASan reports a leak
// otherwise).
TEST(Ring, NonTrivialElementsAndLeftovers) {
  static std::atomic<int> live{0};
  struct Counted {
    std::unique_ptr<std::string> s;
    explicit Counted(std::string v) : s(new std::string(std::move(v))) {
      live.fetch_add(1);
    }
    Counted(Counted&& o) noexcept : s(std::move(o.s)) { live.fetch_add(1); }
    Counted& operator=(Counted&& o) noexcept {
      s = std::move(o.s);
      return *this;
    }
    ~Counted() { live.fetch_sub(1); }
  };
  {
    TestRing<Counted> r(3);
    for (int lap = 0; lap < 10; ++lap) {
      ASSERT_EQ(r.push(Counted("a" + std::to_string(lap))), Status::kOk);
      ASSERT_EQ(r.push(Counted("b" + std::to_string(lap))), Status::kOk);
      Counted out("x");
      ASSERT_EQ(r.pop(&out), Status::kOk);
      EXPECT_EQ(*out.s, (lap == 0 ? "a0" : "b" + std::to_string(lap - 1)));
      if (lap > 0) {
        ASSERT_EQ(r.pop(&out), Status::kOk);
        EXPECT_EQ(*out.s, "a" + std::to_string(lap));
      }
    }
    EXPECT_EQ(r->size(), 1u);
    EXPECT_EQ(live.load(), 1);  // the one left in the ring
  }
  EXPECT_EQ(live.load(), 0);
}

TEST(Ring, OverAlignedElements) {
  struct alignas(64) Wide {
    std::int64_t v[3];
  };
  const ElemOps* ops = &kElemOps<Wide>;
  EXPECT_EQ(Ring::slot_align(ops), 64u);
  EXPECT_EQ(Ring::slot_stride(ops) % 64, 0u);
  TestRing<Wide> r(5);
  for (int i = 0; i < 23; ++i) {
    ASSERT_EQ(r.push(Wide{{i, i + 1, i + 2}}), Status::kOk);
    Wide w{};
    ASSERT_EQ(r.pop(&w), Status::kOk);
    EXPECT_EQ(w.v[0], i);
    EXPECT_EQ(w.v[2], i + 2);
  }
}

// Producers and consumers on plain threads: every value is popped exactly
// once, and each consumer sees each producer's values in increasing order.
TEST_P(RingCapacity, ConcurrentExactlyOnce) {
  const int cap = GetParam();
  constexpr int kProducers = 3, kConsumers = 3;
  const int per = 20000;
  TestRing<std::uint64_t> r(cap);
  std::vector<std::vector<std::uint64_t>> got(kConsumers);
  std::atomic<int> consumed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per; ++i) {
        const std::uint64_t v = (std::uint64_t(p) << 32) | std::uint64_t(i);
        while (r.push(v) != Status::kOk) std::this_thread::yield();
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      std::uint64_t v;
      while (consumed.load(std::memory_order_relaxed) < kProducers * per) {
        if (r.pop(&v) == Status::kOk) {
          got[c].push_back(v);
          consumed.fetch_add(1, std::memory_order_relaxed);
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<int> count(kProducers * per, 0);
  for (const auto& g : got) {
    std::vector<std::int64_t> last(kProducers, -1);
    for (std::uint64_t v : g) {
      const int p = static_cast<int>(v >> 32), i = static_cast<int>(v);
      ASSERT_LT(p, kProducers);
      ASSERT_LT(i, per);
      EXPECT_GT(i, last[p]) << "per-producer order";
      last[p] = i;
      ++count[p * per + i];
    }
  }
  for (int k = 0; k < kProducers * per; ++k) ASSERT_EQ(count[k], 1) << k;
  EXPECT_EQ(r->size(), 0u);
}

// Close while producers push and consumers pop: every push that reported
// kOk is popped exactly once before the consumers see kClosed, and no push
// succeeds after close() returned.
TEST(Ring, CloseRacingPushesLosesNothing) {
  for (int round = 0; round < 50; ++round) {
    TestRing<std::uint64_t> r(1 + round % 7);
    constexpr int kProducers = 2, kConsumers = 2;
    std::atomic<std::uint64_t> pushed_sum{0}, popped_sum{0};
    std::atomic<int> pushed{0}, popped{0};
    std::atomic<bool> closed{false}, late_push{false};
    std::vector<std::thread> threads;
    for (int p = 0; p < kProducers; ++p) {
      threads.emplace_back([&, p] {
        for (std::uint64_t i = 1;; ++i) {
          const std::uint64_t v = (std::uint64_t(p + 1) << 40) | i;
          const bool was_closed = closed.load(std::memory_order_acquire);
          const Status st = r.push(v);
          if (st == Status::kClosed) return;
          if (st == Status::kOk) {
            if (was_closed) late_push.store(true);
            pushed.fetch_add(1);
            pushed_sum.fetch_add(v);
          } else {
            std::this_thread::yield();
          }
        }
      });
    }
    for (int c = 0; c < kConsumers; ++c) {
      threads.emplace_back([&] {
        std::uint64_t v;
        for (;;) {
          const Status st = r.pop(&v);
          if (st == Status::kClosed) return;
          if (st == Status::kOk) {
            popped.fetch_add(1);
            popped_sum.fetch_add(v);
          } else {
            std::this_thread::yield();
          }
        }
      });
    }
    while (pushed.load() < 200 + round * 10) std::this_thread::yield();
    ASSERT_TRUE(r->close());
    closed.store(true, std::memory_order_release);
    for (auto& t : threads) t.join();
    EXPECT_FALSE(late_push.load());
    EXPECT_EQ(popped.load(), pushed.load());
    EXPECT_EQ(popped_sum.load(), pushed_sum.load());
  }
}

}  // namespace
