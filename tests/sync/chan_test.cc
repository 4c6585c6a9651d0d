// Copyright goro authors.

#include "sync/chan.h"

#include <algorithm>
#include <atomic>
#include <concepts>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/sync/test_util.h"

namespace {

class ChanTest : public goro_test::SyncTest {};
GORO_INSTANTIATE_SYNC_TEST(ChanTest);

TEST(ChanBasics, NegativeCapacityThrows) {
  EXPECT_THROW(goro::Chan<int>(-1), std::invalid_argument);
}

// chan.h: every operation on a nil channel but select throws
// std::logic_error (select never chooses its cases: select_test).
TEST(ChanBasics, EveryNilChannelOperationThrows) {
  goro::Chan<int> nil;
  EXPECT_FALSE(nil);
  EXPECT_THROW(nil.send(1), std::logic_error);
  EXPECT_THROW(nil.recv(), std::logic_error);
  EXPECT_THROW(nil.try_send(1), std::logic_error);
  const int one = 1;
  EXPECT_THROW(nil.try_send(one), std::logic_error);
  EXPECT_THROW(nil.try_recv(), std::logic_error);
  EXPECT_THROW(nil.close(), std::logic_error);
  EXPECT_THROW(nil.size(), std::logic_error);
  EXPECT_THROW(nil.capacity(), std::logic_error);
  EXPECT_THROW(nil.closed(), std::logic_error);
  EXPECT_THROW(for (int v : nil)(void) v, std::logic_error);
  EXPECT_TRUE(nil == goro::Chan<int>());
}

TEST(ChanBasics, ChanClosedIsLogicError) {
  static_assert(std::is_base_of_v<std::logic_error, goro::ChanClosed>);
  goro::Chan<int> ch(1);
  ch.close();
  EXPECT_THROW(ch.close(), goro::ChanClosed);
  EXPECT_THROW(ch.send(1), goro::ChanClosed);
  EXPECT_THROW(ch.try_send(1), goro::ChanClosed);
  EXPECT_EQ(ch.recv(), std::nullopt);
}

TEST(ChanBasics, HandlesShareOneChannel) {
  goro::Chan<int> a(4);
  goro::Chan<int> b = a;
  EXPECT_TRUE(a == b);
  a.send(7);
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(b.try_recv(), 7);
  goro::Chan<int> c(4);
  EXPECT_FALSE(a == c);
}

// Non-trivial elements left in the buffer are destroyed with the channel
// (ASan's leak checker verifies it).
TEST(ChanBasics, BufferedStringsDestroyed) {
  goro::Chan<std::string> ch(8);
  for (int i = 0; i < 5; ++i) ch.send(std::string(100, 'a' + i));
  EXPECT_EQ(*ch.recv(), std::string(100, 'a'));
  EXPECT_EQ(ch.size(), 4u);
}

// chan.h: a Chan is a handle; every channel operation is callable on a
// const Chan (a by-value lambda capture needs no `mutable`). Checked at
// compile time: without the const overloads this file does not build.
template <typename C>
concept ConstHandleOps = requires(const C& c, typename C::value_type v) {
  c.send(std::move(v));
  { c.recv() } -> std::same_as<std::optional<typename C::value_type>>;
  { c.try_send(std::move(v)) } -> std::same_as<bool>;
  { c.try_recv() } -> std::same_as<std::optional<typename C::value_type>>;
  c.try_recv_status();
  c.close();
  c.begin();
  c.end();
};
static_assert(ConstHandleOps<goro::Chan<int>>);
static_assert(ConstHandleOps<goro::Chan<std::unique_ptr<int>>>);

TEST_P(ChanTest, ConstHandlesSendReceiveCloseAndRange) {
  run([] {
    const goro::Chan<int> ch(0);
    const goro::Chan<int> done(1);
    // Captured by value, not mutable: the closure's copies are const.
    goro::go([ch, done] {
      for (int i = 0; i < 3; ++i) ch.send(i);
      ch.close();
      done.send(1);
    });
    std::vector<int> got;
    for (int v : ch) got.push_back(v);  // range-for on a const Chan
    EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(done.recv(), 1);
    const auto recv_in_const_lambda = [done] { return done.try_recv(); };
    EXPECT_EQ(recv_in_const_lambda(), std::nullopt);
  });
}

// chan.h, try_recv_status: kEmpty while open and empty, kReceived while
// values are buffered (closed or not), kClosed once closed and drained --
// the three outcomes Go's `select { case v, ok := <-c: ...; default: }`
// distinguishes, which try_recv folds into one empty optional.
TEST_P(ChanTest, TryRecvStatusTellsEmptyFromClosedAndDrained) {
  run([] {
    for (int cap : {0, 2}) {
      // Not SCOPED_TRACE: gtest keeps its trace stack per thread, and this
      // fiber parks and may resume on another one.
      goro::Chan<int> ch(cap);
      goro::RecvAttempt<int> r = ch.try_recv_status();
      EXPECT_EQ(r.status, goro::RecvStatus::kEmpty) << "cap " << cap;
      EXPECT_TRUE(r.empty());
      EXPECT_FALSE(r.value.has_value());
      goro_test::FiberGroup g;
      // Buffered: a value sent before close is still received. Unbuffered:
      // a parked sender makes the receive ready.
      g.go([ch] { ch.send(7); });
      goro_test::AwaitInFiber(
          [&] {
            r = ch.try_recv_status();
            return !r.empty();
          },
          "the sender's value");
      EXPECT_EQ(r.status, goro::RecvStatus::kReceived) << "cap " << cap;
      EXPECT_TRUE(r.received());
      EXPECT_EQ(r.value, 7);
      g.wait();
      if (cap > 0) {
        ch.send(8);
        ch.close();
        r = ch.try_recv_status();  // closed, not drained: still a value
        EXPECT_EQ(r.status, goro::RecvStatus::kReceived);
        EXPECT_EQ(r.value, 8);
      } else {
        ch.close();
      }
      for (int i = 0; i < 2; ++i) {  // closed and drained, for good
        r = ch.try_recv_status();
        EXPECT_EQ(r.status, goro::RecvStatus::kClosed)
            << "cap " << cap << ", attempt " << i;
        EXPECT_TRUE(r.closed());
        EXPECT_FALSE(r.value.has_value());
      }
      EXPECT_EQ(ch.try_recv(), std::nullopt);  // try_recv: unchanged
    }
  });
}

// A plain thread (not a fiber) gets the same three outcomes.
TEST(ChanBasics, TryRecvStatusFromAPlainThread) {
  goro::Chan<std::string> ch(1);
  EXPECT_TRUE(ch.try_recv_status().empty());
  ch.send("x");
  ch.close();
  goro::RecvAttempt<std::string> r = ch.try_recv_status();
  EXPECT_TRUE(r.received());
  EXPECT_EQ(r.value, "x");
  EXPECT_TRUE(ch.try_recv_status().closed());
  goro::Chan<int> nil;
  EXPECT_THROW(nil.try_recv_status(), std::logic_error);
}

TEST_P(ChanTest, UnbufferedPingPong) {
  run([] {
    goro_test::FiberGroup g;
    goro::Chan<int> ping(0), pong(0);
    g.go([ping, pong]() mutable {
      for (;;) {
        auto v = ping.recv();
        if (!v) break;
        pong.send(*v + 1);
      }
      pong.close();
    });
    const int n = goro_test::Scaled(10000, 1000);
    for (int i = 0; i < n; ++i) {
      ping.send(i);
      ASSERT_EQ(pong.recv(), i + 1);
    }
    ping.close();
    EXPECT_EQ(pong.recv(), std::nullopt);
  });
}

TEST_P(ChanTest, BufferedFifoSizeCapacity) {
  run([] {
    goro_test::FiberGroup g;
    goro::Chan<int> ch(3);
    EXPECT_EQ(ch.capacity(), 3u);
    EXPECT_TRUE(ch.try_send(1));
    EXPECT_TRUE(ch.try_send(2));
    EXPECT_TRUE(ch.try_send(3));
    EXPECT_FALSE(ch.try_send(4));
    EXPECT_EQ(ch.size(), 3u);
    EXPECT_EQ(ch.try_recv(), 1);
    EXPECT_TRUE(ch.try_send(4));
    EXPECT_EQ(ch.recv(), 2);
    EXPECT_EQ(ch.recv(), 3);
    EXPECT_EQ(ch.recv(), 4);
    EXPECT_EQ(ch.try_recv(), std::nullopt);
    EXPECT_EQ(ch.size(), 0u);
  });
}

TEST_P(ChanTest, TryOpsOnUnbuffered) {
  run([] {
    goro_test::FiberGroup g;
    goro::Chan<int> ch(0);
    EXPECT_FALSE(ch.try_send(1));  // nobody receiving
    EXPECT_EQ(ch.try_recv(), std::nullopt);
    std::atomic<bool> got{false};
    goro::WaitGroup wg;
    wg.add(1);
    g.go([&, ch]() mutable {
      EXPECT_EQ(ch.recv(), 42);
      got = true;
      wg.done();
    });
    // Once the receiver is parked, try_send hands over directly.
    while (!ch.try_send(42)) goro::yield();
    wg.wait();
    EXPECT_TRUE(got);
    g.go([ch]() mutable { ch.send(5); });
    std::optional<int> v;
    while (!(v = ch.try_recv())) goro::yield();
    EXPECT_EQ(v, 5);
  });
}

TEST_P(ChanTest, MoveOnly) {
  run([] {
    goro_test::FiberGroup g;
    goro::Chan<std::unique_ptr<int>> ch(1);
    ch.send(std::make_unique<int>(1));
    g.go([ch]() mutable { ch.send(std::make_unique<int>(2)); });
    auto a = ch.recv();
    auto b = ch.recv();
    ASSERT_TRUE(a && *a && b && *b);
    EXPECT_EQ(**a, 1);
    EXPECT_EQ(**b, 2);
    auto p = std::make_unique<int>(3);
    EXPECT_TRUE(ch.try_send(std::move(p)));
    auto q = std::make_unique<int>(4);
    EXPECT_FALSE(ch.try_send(std::move(q)));
    ASSERT_NE(q, nullptr);  // not moved from on failure
    EXPECT_EQ(*q, 4);
  });
}

TEST_P(ChanTest, RangeForEndsOnClose) {
  run([] {
    goro_test::FiberGroup g;
    for (int cap : {0, 1, 16}) {
      goro::Chan<int> ch(cap);
      g.go([ch]() mutable {
        for (int i = 0; i < 100; ++i) ch.send(i);
        ch.close();
      });
      int expect = 0;
      for (int v : ch) EXPECT_EQ(v, expect++);
      EXPECT_EQ(expect, 100);
    }
  });
}

TEST_P(ChanTest, CloseWakesParkedReceivers) {
  run([] {
    goro_test::FiberGroup g;
    for (int cap : {0, 4}) {
      goro::Chan<int> ch(cap);
      const int n = 20;
      std::atomic<int> woke{0};
      goro::WaitGroup wg;
      wg.add(n);
      for (int i = 0; i < n; ++i) {
        g.go([&, ch]() mutable {
          EXPECT_EQ(ch.recv(), std::nullopt);
          woke.fetch_add(1);
          wg.done();
        });
      }
      goro::sleep_for(std::chrono::milliseconds(2));
      ch.close();
      wg.wait();
      EXPECT_EQ(woke.load(), n);
    }
  });
}

// Senders parked when the channel closes throw, and their values are not
// delivered: exactly the values of senders that returned normally arrive.
TEST_P(ChanTest, CloseAgainstParkedSenders) {
  run([] {
    goro_test::FiberGroup g;
    for (int round = 0; round < goro_test::Scaled(20, 2); ++round) {
      for (int cap : {0, 2}) {
        goro::Chan<int> ch(cap);
        const int n = 16;
        std::atomic<int> ok{0}, threw{0};
        std::atomic<long> ok_sum{0};
        goro::WaitGroup wg;
        wg.add(n);
        for (int i = 0; i < n; ++i) {
          g.go([&, ch, i]() mutable {
            try {
              ch.send(i);
              ok.fetch_add(1);
              ok_sum.fetch_add(i);
            } catch (const goro::ChanClosed&) {
              threw.fetch_add(1);
            }
            wg.done();
          });
        }
        // Receive a few concurrently with the close.
        int got = 0;
        long got_sum = 0;
        for (int i = 0; i < round % 5; ++i) {
          auto v = ch.recv();
          ASSERT_TRUE(v);
          ++got;
          got_sum += *v;
        }
        goro::yield();
        ch.close();
        wg.wait();
        for (int v : ch) {  // drain the buffer
          ++got;
          got_sum += v;
        }
        EXPECT_EQ(ok.load() + threw.load(), n);
        EXPECT_EQ(ok.load(), got);
        EXPECT_EQ(ok_sum.load(), got_sum);
      }
    }
  });
}

// Many producers and consumers; every value arrives exactly once and each
// producer's values arrive in order at each consumer.
TEST_P(ChanTest, MpmcExactlyOnceAndPerProducerFifo) {
  run([] {
    goro_test::FiberGroup g;
    for (int cap : {0, 1, 64}) {
      const int producers = 6, consumers = 5;
      const int per = goro_test::Scaled(3000, 300);
      goro::Chan<std::uint64_t> ch(cap);
      std::vector<std::vector<std::uint64_t>> got(consumers);
      goro::WaitGroup pw, cw;
      pw.add(producers);
      cw.add(consumers);
      for (int p = 0; p < producers; ++p) {
        g.go([&, ch, p]() mutable {
          for (int i = 0; i < per; ++i) {
            ch.send((std::uint64_t(p) << 32) | std::uint64_t(i));
            if (i % 97 == 0) goro::yield();
          }
          pw.done();
        });
      }
      for (int c = 0; c < consumers; ++c) {
        g.go([&, ch, c]() mutable {
          for (auto v : ch) got[c].push_back(v);
          cw.done();
        });
      }
      pw.wait();
      ch.close();
      cw.wait();
      std::vector<int> count(producers * per, 0);
      for (auto& g : got) {
        std::vector<int> last(producers, -1);
        for (auto v : g) {
          int p = int(v >> 32), i = int(v & 0xffffffff);
          ASSERT_LT(p, producers);
          ASSERT_LT(i, per);
          EXPECT_GT(i, last[p]) << "per-producer FIFO violated";
          last[p] = i;
          ++count[p * per + i];
        }
      }
      for (int k = 0; k < producers * per; ++k) {
        ASSERT_EQ(count[k], 1) << "value " << k;
      }
    }
  });
}

// Buffered channels whose capacity is not a power of two, over many laps of
// the ring: FIFO, size(), and try_send/try_recv at exactly full/empty.
TEST_P(ChanTest, BufferedOddCapacitiesManyLaps) {
  run([] {
    for (int cap : {1, 3, 5, 7}) {
      goro::Chan<int> ch(cap);
      int in = 0, out = 0;
      for (int round = 0; round < 100; ++round) {
        const int fill = 1 + round % cap;
        for (int i = 0; i < fill && ch.size() < std::size_t(cap); ++i) {
          ch.send(in++);
        }
        if (ch.size() == std::size_t(cap)) {
          EXPECT_FALSE(ch.try_send(-1));
        }
        const int drain = 1 + (round * 3) % cap;
        for (int i = 0; i < drain && ch.size() > 0; ++i) {
          EXPECT_EQ(ch.recv(), out++);
        }
        EXPECT_EQ(ch.size(), std::size_t(in - out));
      }
      while (auto v = ch.try_recv()) EXPECT_EQ(*v, out++);
      EXPECT_EQ(in, out);
      EXPECT_EQ(ch.size(), 0u);
    }
  });
}

// Receivers parked on an empty buffered channel are served by senders that
// find no receiver queued when they look (the lock-free path's hand-shake
// with parking receivers), and senders parked on a full one get room from
// receivers: every value arrives exactly once.
TEST_P(ChanTest, BufferedParkedWaitersServedExactlyOnce) {
  run([] {
    goro_test::FiberGroup g;
    for (int round = 0; round < goro_test::Scaled(50, 5); ++round) {
      const int cap = 1 + round % 4, n = 8;
      goro::Chan<int> ch(cap);
      std::atomic<long> sum{0};
      std::atomic<int> count{0};
      goro::WaitGroup rw;
      rw.add(n);
      for (int i = 0; i < n; ++i) {
        g.go([&, ch]() mutable {
          auto v = ch.recv();
          ASSERT_TRUE(v);
          sum.fetch_add(*v);
          count.fetch_add(1);
          rw.done();
        });
      }
      if (round % 2 == 0) goro::yield();  // let some of them park
      for (int i = 1; i <= n; ++i) ch.send(i);
      rw.wait();
      EXPECT_EQ(count.load(), n);
      EXPECT_EQ(sum.load(), long(n) * (n + 1) / 2);

      // Now the other way round: senders parked on a full channel.
      goro::WaitGroup sw;
      sw.add(n);
      for (int i = 0; i < n; ++i) {
        g.go([&, ch, i]() mutable {
          ch.send(100 + i);
          sw.done();
        });
      }
      if (round % 2 == 1) goro::yield();
      long got = 0;
      for (int i = 0; i < n; ++i) got += *ch.recv();
      sw.wait();
      EXPECT_EQ(got, 100L * n + long(n) * (n - 1) / 2);
      EXPECT_EQ(ch.size(), 0u);
    }
  });
}

// Senders that keep a buffered channel busy (mostly the lock-free path, not
// parked) race close(): each send either returns -- and then its value is
// received exactly once -- or throws ChanClosed and delivered nothing.
TEST_P(ChanTest, BufferedSendsRacingCloseLoseNothing) {
  run([] {
    goro_test::FiberGroup g;
    for (int round = 0; round < goro_test::Scaled(30, 3); ++round) {
      goro::Chan<std::uint64_t> ch(1 + round % 9);
      const int senders = 4, receivers = 2;
      std::atomic<long> sent{0}, received{0};
      std::atomic<std::uint64_t> sent_sum{0}, received_sum{0};
      goro::WaitGroup sw, rw;
      sw.add(senders);
      rw.add(receivers);
      for (int s = 0; s < senders; ++s) {
        g.go([&, ch, s]() mutable {
          for (std::uint64_t i = 1;; ++i) {
            const std::uint64_t v = (std::uint64_t(s + 1) << 40) | i;
            try {
              ch.send(v);
            } catch (const goro::ChanClosed&) {
              break;
            }
            sent.fetch_add(1);
            sent_sum.fetch_add(v);
          }
          sw.done();
        });
      }
      for (int r = 0; r < receivers; ++r) {
        g.go([&, ch]() mutable {
          for (std::uint64_t v : ch) {
            received.fetch_add(1);
            received_sum.fetch_add(v);
          }
          rw.done();
        });
      }
      // The main fiber receives too, then closes (it does not wait for the
      // others' progress in a yield loop: under TSan there is no preemption
      // to break a chain of hand-offs that never yields to it).
      for (int i = 0; i < 100 + round * 7; ++i) {
        const std::uint64_t v = *ch.recv();
        received.fetch_add(1);
        received_sum.fetch_add(v);
      }
      ch.close();
      sw.wait();
      rw.wait();
      EXPECT_EQ(received.load(), sent.load());
      EXPECT_EQ(received_sum.load(), sent_sum.load());
    }
  });
}

// Plain threads (not fibers) can send and receive too.
TEST_P(ChanTest, ThreadsAndFibers) {
  run([] {
    goro_test::FiberGroup g;
    goro::Chan<int> to_thread(0), from_thread(2);
    std::thread t([=]() mutable {
      for (auto v : to_thread) from_thread.send(v * 2);
      from_thread.close();
    });
    g.go([to_thread]() mutable {
      for (int i = 0; i < 200; ++i) to_thread.send(i);
      to_thread.close();
    });
    int i = 0;
    for (int v : from_thread) EXPECT_EQ(v, 2 * i++);
    EXPECT_EQ(i, 200);
    goro::blocking([&] { t.join(); });
  });
}

// chan.h: "parked senders and receivers are served first come, first
// served". One P and no asynchronous preemption, so that the order in which
// fibers park is the order in which they are started: each one runs, when
// the spawner yields, until it parks. Then the other side takes (gives) one
// value at a time.
TEST(ChanFifo, ParkedSendersAndReceiversAreServedInArrivalOrder) {
  goro::Options o = goro_test::Procs(1);
  // No preemption of any kind: a sender preempted at a cooperative point
  // before it parks would arrive after the next one (a hand-off chain
  // shares one slice, which TSan's slowness easily overruns).
  o.async_preempt = false;
  o.time_slice = std::chrono::seconds(10);
  for (int cap : {0, 1}) {
    goro::run(o, [cap] {
      constexpr int kN = 6;
      goro::Chan<int> ch(cap);
      // Receivers first: the buffer is empty, so each parks.
      std::vector<int> got(kN, -1);
      goro_test::FiberGroup g;
      for (int i = 0; i < kN; ++i) {
        g.go([&, i, ch]() mutable {
          got[static_cast<std::size_t>(i)] = *ch.recv();
        });
        goro::yield();  // it runs until it parks in recv()
      }
      for (int v = 0; v < kN; ++v) ch.send(v);
      g.wait();
      for (int i = 0; i < kN; ++i) {
        EXPECT_EQ(got[static_cast<std::size_t>(i)], i)
            << "capacity " << cap << ": receiver " << i
            << " (in arrival order)";
      }
      // Senders: fill the buffer, then each extra sender parks.
      for (int k = 0; k < cap; ++k) ch.send(-1);
      for (int i = 0; i < kN; ++i) {
        g.go([i, ch]() mutable { ch.send(i); });
        goro::yield();  // it runs until it parks in send()
      }
      for (int k = 0; k < cap; ++k) EXPECT_EQ(ch.recv(), -1);
      for (int i = 0; i < kN; ++i) {
        EXPECT_EQ(ch.recv(), i) << "capacity " << cap << ": sender " << i;
      }
      g.wait();
    });
  }
}

// chan.h: a fiber woken by a channel operation runs next on the waker's
// thread (runnext). One P, several fibers queued: the main fiber sends to a
// parked receiver and yields; the receiver runs before the queued fibers.
// No preemption of any kind, so that only the scheduler's choice orders
// them.
TEST(ChanRunnext, WokenReceiverRunsBeforeFibersAlreadyQueued) {
  goro::Options o = goro_test::Procs(1);
  o.async_preempt = false;
  o.time_slice = std::chrono::seconds(10);
  std::vector<std::string> order;
  goro::run(o, [&] {
    goro::Chan<int> ch(0);
    goro_test::FiberGroup g;
    g.go([&, ch]() mutable {
      ch.recv();
      order.push_back("receiver");
    });
    goro::yield();  // the receiver runs until it parks in recv()
    ASSERT_TRUE(order.empty());
    // Three runnable fibers, queued (each go() puts the new one in runnext
    // and moves the previous one to the queue).
    for (int i = 0; i < 3; ++i) {
      g.go([&, i] { order.push_back("queued" + std::to_string(i)); });
    }
    ch.send(1);     // readies the receiver
    goro::yield();  // the receiver must run first
    g.wait();
  });
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], "receiver")
      << "the woken receiver did not run next on the sender's thread: the "
         "first to run after the sender yielded was "
      << order[0];
}

}  // namespace
