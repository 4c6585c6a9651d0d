// Copyright goro authors.
//
// TimerHeap (runtime/internal/timer_heap.h): add/remove/run_expired ordering,
// the earliest() mirror, the armed/disarmed bookkeeping in Timer, and a
// concurrent stop-versus-fire race where every timer ends exactly one way.

#include "runtime/internal/timer_heap.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro::runtime_internal::Timer;
using goro::runtime_internal::TimerHeap;

struct Fired {
  std::vector<std::int64_t> whens;
  std::vector<int> ids;
};

struct Slot {
  Timer t;
  int id = 0;
  Fired* log = nullptr;
  std::atomic<int> fires{0};
};

void FireLog(void* arg) {
  auto* s = static_cast<Slot*>(arg);
  s->fires.fetch_add(1);
  // The runtime disarms before firing.
  EXPECT_EQ(s->t.heap, nullptr);
  EXPECT_EQ(s->t.index, -1);
  if (s->log != nullptr) {
    s->log->whens.push_back(s->t.when);
    s->log->ids.push_back(s->id);
  }
}

void Arm(Slot& s, std::int64_t when, int id, Fired* log) {
  s.t.when = when;
  s.t.fire = FireLog;
  s.t.arg = &s;
  s.id = id;
  s.log = log;
}

TEST(TimerHeapTest, EmptyHeap) {
  TimerHeap h;
  EXPECT_EQ(h.earliest(), 0);
  EXPECT_EQ(h.run_expired(1'000'000), 0);
  Slot s;
  Arm(s, 10, 0, nullptr);
  EXPECT_FALSE(h.remove(&s.t));  // never added
}

TEST(TimerHeapTest, AddReportsNewEarliestAndMirrorsIt) {
  TimerHeap h;
  Slot a, b, c, d;
  Arm(a, 100, 0, nullptr);
  Arm(b, 200, 1, nullptr);
  Arm(c, 50, 2, nullptr);
  Arm(d, 50, 3, nullptr);
  using Added = TimerHeap::Added;
  EXPECT_EQ(h.add(&a.t), Added::kEarliest);
  EXPECT_EQ(h.earliest(), 100);
  EXPECT_EQ(h.add(&b.t), Added::kNotEarliest);
  EXPECT_EQ(h.earliest(), 100);
  EXPECT_EQ(h.add(&c.t), Added::kEarliest);
  EXPECT_EQ(h.earliest(), 50);
  // Equal deadline: not strictly earlier.
  EXPECT_EQ(h.add(&d.t), Added::kNotEarliest);
  EXPECT_EQ(h.earliest(), 50);
  EXPECT_EQ(a.t.heap, &h);
  EXPECT_GE(a.t.index, 0);
  EXPECT_TRUE(h.remove(&a.t));
  EXPECT_TRUE(h.remove(&b.t));
  EXPECT_TRUE(h.remove(&c.t));
  EXPECT_TRUE(h.remove(&d.t));
  EXPECT_EQ(h.earliest(), 0);
}

// close() (the runtime's end, drop_timers): every timer is disarmed
// without firing, those with a drop are handed out for it, and the heap
// refuses later adds.
TEST(TimerHeapTest, CloseDisarmsAllAndRefusesLaterAdds) {
  TimerHeap h;
  std::vector<Slot> slots(10);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    Arm(slots[i], 100 + static_cast<std::int64_t>(i), static_cast<int>(i),
        nullptr);
    if (i % 2 == 0) {
      slots[i].t.drop = [](void* arg) {
        static_cast<Slot*>(arg)->id += 1000;  // marks it dropped
      };
    }
    h.add(&slots[i].t);
  }
  std::vector<TimerHeap::Dropped> out;
  h.close(&out);
  ASSERT_EQ(out.size(), 5u);
  for (const TimerHeap::Dropped& d : out) d.drop(d.arg);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(slots[i].t.heap, nullptr) << i;
    EXPECT_EQ(slots[i].t.index, -1) << i;
    EXPECT_EQ(slots[i].fires.load(), 0) << i;
    EXPECT_EQ(slots[i].id, static_cast<int>(i) + (i % 2 == 0 ? 1000 : 0))
        << "timer " << i << ": dropped iff it has a drop, once";
  }
  EXPECT_EQ(h.earliest(), 0);
  EXPECT_EQ(h.run_expired(1'000'000), 0);
  Slot late;
  Arm(late, 1, 99, nullptr);
  EXPECT_EQ(h.add(&late.t), TimerHeap::Added::kClosed);
  EXPECT_EQ(late.t.heap, nullptr);
  EXPECT_FALSE(h.remove(&late.t));
  EXPECT_EQ(h.earliest(), 0);
}

TEST(TimerHeapTest, RunExpiredFiresDueTimersInOrder) {
  TimerHeap h;
  Fired log;
  std::vector<std::int64_t> whens = {70, 10, 50, 30, 90, 20, 80, 40, 60, 100};
  std::vector<Slot> slots(whens.size());
  for (std::size_t i = 0; i < whens.size(); ++i) {
    Arm(slots[i], whens[i], static_cast<int>(i), &log);
    h.add(&slots[i].t);
  }
  EXPECT_EQ(h.earliest(), 10);
  EXPECT_EQ(h.run_expired(9), 0);
  EXPECT_EQ(h.run_expired(45), 4);  // 10 20 30 40
  EXPECT_EQ(log.whens, (std::vector<std::int64_t>{10, 20, 30, 40}));
  EXPECT_EQ(h.earliest(), 50);
  EXPECT_EQ(h.run_expired(50), 1);  // a deadline equal to now is due
  EXPECT_EQ(h.run_expired(1000), 5);
  EXPECT_EQ(log.whens, (std::vector<std::int64_t>{10, 20, 30, 40, 50, 60, 70,
                                                  80, 90, 100}));
  EXPECT_EQ(h.earliest(), 0);
  for (auto& s : slots) {
    EXPECT_EQ(s.fires.load(), 1);
    EXPECT_FALSE(h.remove(&s.t));  // fired timers are no longer armed
  }
}

TEST(TimerHeapTest, RemoveKeepsTheHeapOrdered) {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    TimerHeap h;
    Fired log;
    const int n = 1 + static_cast<int>(rng() % 500);
    std::vector<Slot> slots(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      Arm(slots[static_cast<std::size_t>(i)],
          1 + static_cast<std::int64_t>(rng() % 1000), i, &log);
      h.add(&slots[static_cast<std::size_t>(i)].t);
    }
    std::vector<std::int64_t> remaining;
    for (int i = 0; i < n; ++i) {
      Slot& s = slots[static_cast<std::size_t>(i)];
      if (rng() % 3 == 0) {
        EXPECT_TRUE(h.remove(&s.t));
        EXPECT_FALSE(h.remove(&s.t));  // second remove: not armed
        EXPECT_EQ(s.t.heap, nullptr);
        EXPECT_EQ(s.t.index, -1);
      } else {
        remaining.push_back(s.t.when);
      }
    }
    std::sort(remaining.begin(), remaining.end());
    EXPECT_EQ(h.earliest(), remaining.empty() ? 0 : remaining.front());
    EXPECT_EQ(h.run_expired(2000), static_cast<int>(remaining.size()));
    EXPECT_EQ(log.whens, remaining) << "round " << round;
  }
}

TEST(TimerHeapTest, ReaddAfterRemoveOrFire) {
  TimerHeap h;
  Fired log;
  Slot s;
  Arm(s, 10, 0, &log);
  h.add(&s.t);
  ASSERT_TRUE(h.remove(&s.t));
  s.t.when = 20;
  EXPECT_EQ(h.add(&s.t), TimerHeap::Added::kEarliest);
  EXPECT_EQ(h.run_expired(30), 1);
  s.t.when = 40;
  EXPECT_EQ(h.add(&s.t), TimerHeap::Added::kEarliest);
  EXPECT_EQ(h.run_expired(50), 1);
  EXPECT_EQ(log.whens, (std::vector<std::int64_t>{20, 40}));
}

TEST(TimerHeapTest, RemoveFromAnotherHeapFails) {
  TimerHeap a, b;
  Slot s;
  Arm(s, 10, 0, nullptr);
  a.add(&s.t);
  EXPECT_FALSE(b.remove(&s.t));
  EXPECT_EQ(a.earliest(), 10);
  EXPECT_TRUE(a.remove(&s.t));
}

// fire() runs without the heap's lock: it may add timers (even due ones,
// which the same run_expired call then fires) and remove others.
struct Chain {
  TimerHeap* h;
  Slot next, victim;
  int fired_first = 0;
};

TEST(TimerHeapTest, FireMayAddAndRemoveTimers) {
  TimerHeap h;
  Fired log;
  Chain c{&h, {}, {}, 0};
  Arm(c.next, 15, 1, &log);
  Arm(c.victim, 18, 2, &log);
  h.add(&c.victim.t);
  Timer first;
  first.when = 10;
  first.arg = &c;
  first.fire = [](void* arg) {
    auto* ch = static_cast<Chain*>(arg);
    ++ch->fired_first;
    ch->h->add(&ch->next.t);                    // due now: fires in this call
    EXPECT_TRUE(ch->h->remove(&ch->victim.t));  // stopped before it fired
  };
  h.add(&first);
  EXPECT_EQ(h.run_expired(20), 2);
  EXPECT_EQ(c.fired_first, 1);
  EXPECT_EQ(log.ids, (std::vector<int>{1}));
  EXPECT_EQ(c.victim.fires.load(), 0);
  EXPECT_EQ(h.earliest(), 0);
}

// One thread fires (run_expired with a moving "now"), another stops timers
// (remove): every timer is either stopped (remove returned true) or fired,
// exactly one of the two.
TEST(TimerHeapStressTest, StopRacesWithFire) {
  const int kTimers = goro_test::Scaled(100000, 10000);
  TimerHeap h;
  std::vector<Slot> slots(static_cast<std::size_t>(kTimers));
  for (int i = 0; i < kTimers; ++i) {
    Arm(slots[static_cast<std::size_t>(i)], i + 1, i, nullptr);
    h.add(&slots[static_cast<std::size_t>(i)].t);
  }
  std::vector<std::uint8_t> stopped(static_cast<std::size_t>(kTimers));
  std::atomic<bool> start{false};
  std::thread firer([&] {
    while (!start.load()) {
    }
    for (std::int64_t now = 0; now <= kTimers; now += 7) h.run_expired(now);
    h.run_expired(kTimers + 1);
  });
  std::thread stopper([&] {
    while (!start.load()) {
    }
    // Stop every other timer, from the end backwards and from the front, so
    // some stops race with the firing front.
    for (int i = kTimers - 1; i >= 0; i -= 2) {
      stopped[static_cast<std::size_t>(i)] =
          h.remove(&slots[static_cast<std::size_t>(i)].t);
    }
  });
  start.store(true);
  firer.join();
  stopper.join();
  int fired = 0, stops = 0;
  for (int i = 0; i < kTimers; ++i) {
    const int f = slots[static_cast<std::size_t>(i)].fires.load();
    const int s = stopped[static_cast<std::size_t>(i)];
    ASSERT_EQ(f + s, 1) << "timer " << i << " fired " << f << " stopped " << s;
    fired += f;
    stops += s;
  }
  EXPECT_EQ(fired + stops, kTimers);
  EXPECT_EQ(h.earliest(), 0);
}

}  // namespace
