// Copyright goro authors.
//
// In-process loopback pairs (net/internal/loopback.h, poll.h "on_written"):
// a write on one end of a TCP connection whose other end is in this process
// readies that end's parked reader at once, on the writer's P, and the
// poller drops the stale epoll events those bytes leave behind. These tests
// check that the hand-off happens (and only for such pairs), that it loses
// no wake-up and no byte under stress, that no connection starves when
// there are more pairs than a P's ring holds, and that Ps kept busy by
// hand-offs still poll for other sockets.

#include "net/internal/loopback.h"

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using goro::net::Conn;
using goro::net::Listener;
using Clock = std::chrono::steady_clock;

Listener must_listen(std::string_view net, std::string_view addr) {
  absl::StatusOr<Listener> ln = goro::net::listen(net, addr);
  EXPECT_TRUE(ln.ok()) << ln.status();
  return ln.ok() ? *ln : Listener();
}

// Dials ln and accepts: both ends of one connection.
std::pair<Conn, Conn> must_pair(Listener& ln) {
  std::pair<Conn, Conn> p;
  goro::Chan<int> accepted(1);
  // `accepted` by value: the handle keeps the channel alive until the
  // sender is out of send, after our recv has returned.
  goro::go([&p, &ln, accepted] {
    absl::StatusOr<Conn> c = ln.accept();
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) p.second = *c;
    accepted.send(1);
  });
  absl::StatusOr<Conn> c = goro::net::dial(
      ln.addr().find(':') == std::string::npos ? "unix" : "tcp", ln.addr());
  EXPECT_TRUE(c.ok()) << c.status();
  if (c.ok()) p.first = *c;
  (void)accepted.recv();
  return p;
}

// `rounds` 64-byte round trips between the two ends (the second echoes),
// each byte checked.
void ping_pong(Conn client, Conn server, int rounds) {
  goro_test::FiberGroup g;
  g.go([server]() mutable {
    char buf[64];
    for (;;) {
      goro::net::IoResult r = server.read_full(buf);
      if (!r.ok()) break;
      if (!server.write({buf, sizeof(buf)}).ok()) break;
    }
  });
  char out[64], in[64];
  for (int i = 0; i < rounds; ++i) {
    std::memset(out, 'a' + i % 26, sizeof(out));
    std::memcpy(out, &i, sizeof(i));
    ASSERT_TRUE(client.write({out, sizeof(out)}).ok());
    goro::net::IoResult r = client.read_full(in);
    ASSERT_TRUE(r.ok()) << r.status;
    ASSERT_EQ(std::memcmp(in, out, sizeof(in)), 0) << "round " << i;
  }
  (void)client.close_write();
}

using Pairs = std::vector<std::pair<Conn, Conn>>;

Pairs make_pairs(Listener& ln, int n) {
  Pairs pairs;
  for (int i = 0; i < n; ++i) pairs.push_back(must_pair(ln));
  return pairs;
}

void close_all(Pairs& pairs, Listener& ln) {
  for (auto& [a, b] : pairs) {
    (void)a.close();
    (void)b.close();
  }
  (void)ln.close();
}

// Echoes `Size`-byte messages on s until it fails (end of stream, close).
template <std::size_t Size>
void echo(goro_test::FiberGroup& g, Conn s) {
  g.go([s]() mutable {
    char b[Size];
    while (s.read_full(b).ok() && s.write({b, sizeof(b)}).ok()) {
    }
  });
}

// Sends 64-byte messages on c and reads each echo until *stop, counting
// round trips in *done; then half-closes c.
void ping_until(goro_test::FiberGroup& g, Conn c, const std::atomic<bool>* stop,
                std::atomic<int>* done) {
  g.go([c, stop, done]() mutable {
    char b[64] = {};
    while (!stop->load(std::memory_order_relaxed)) {
      if (!c.write({b, sizeof(b)}).ok() || !c.read_full(b).ok()) return;
      if (done != nullptr) done->fetch_add(1, std::memory_order_relaxed);
    }
    (void)c.close_write();
  });
}

struct Counts {
  std::uint64_t handoffs, polled;
};
Counts counts() {
  const goro::Stats s = goro::stats();
  return {s.io_handoffs, s.netpoll_readied};
}

// A pair's round trips go by hand-off, not through epoll: each write readies
// the parked reader directly, and the poller drops the events the bytes
// left (they would wake the reader again for nothing). Without the hand-off
// every wake-up is the poller's (about 2 per round trip); without the
// stale-event check the poller's spurious wake-ups come back.
TEST(LoopbackHandOff, PairsPingPongWithoutThePoller) {
  for (const char* where : {"127.0.0.1:0", "[::1]:0"}) {
    SCOPED_TRACE(where);
    goro::run(goro_test::Procs(2), [where] {
      Listener ln = must_listen("tcp", where);
      if (!ln) return;
      const std::uint64_t links0 = goro::net_internal::loopback_links();
      auto [client, server] = must_pair(ln);
      ASSERT_TRUE(client && server);
      EXPECT_EQ(goro::net_internal::loopback_links(), links0 + 1);
      const int kRounds = goro_test::Scaled(4000, 1000);
      const Counts c0 = counts();
      ping_pong(client, server, kRounds);
      const Counts c1 = counts();
      const std::uint64_t handoffs = c1.handoffs - c0.handoffs;
      const std::uint64_t polled = c1.polled - c0.polled;
      // 2 per round trip when each reader is parked at the write (nearly
      // always: the two fibers share a P).
      EXPECT_GE(handoffs, static_cast<std::uint64_t>(kRounds))
          << "polled " << polled;
      // A reader the kernel's late delivery sent back to epoll, now and
      // then; not one per round trip.
      EXPECT_LE(polled, static_cast<std::uint64_t>(kRounds / 10))
          << "handoffs " << handoffs;
      (void)ln.close();
    });
  }
}

// The reader a write wakes runs next on the writer's P, ahead of the fibers
// queued there, and so does the reader of its reply: a round trip takes no
// turn of the ring. Each round queues three fibers first; they must not run
// before the reply arrives. (A round may still lose: the kernel may defer a
// loopback delivery past the write, and the reader then waits for epoll.)
TEST(LoopbackHandOff, ARoundTripRunsAheadOfQueuedFibers) {
  const goro_test::CleanGoroEnv env;  // one P with a long slice: no preemption
  int ahead = 0;
  constexpr int kRounds = 20;
  goro::run(goro_test::OneProc(1s), [&] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    if (!ln) return;
    auto [client, server] = must_pair(ln);
    ASSERT_TRUE(client && server);
    goro_test::FiberGroup g;
    echo<64>(g, server);
    char b[64] = {};
    // A first round trip: the echo fiber is parked in its read from now on.
    ASSERT_TRUE(client.write({b, sizeof(b)}).ok());
    ASSERT_TRUE(client.read_full(b).ok());
    for (int round = 0; round < kRounds; ++round) {
      bool replied = false;
      bool overtaken = false;
      goro::WaitGroup queued;
      queued.add(3);
      for (int i = 0; i < 3; ++i) {
        goro::go([&] {
          if (!replied) overtaken = true;
          queued.done();
        });
      }
      ASSERT_TRUE(client.write({b, sizeof(b)}).ok());
      ASSERT_TRUE(client.read_full(b).ok());
      replied = true;
      queued.wait();
      if (!overtaken) ++ahead;
    }
    (void)client.close();
    (void)ln.close();
  });
  // Behind the ring (the hand-off before this rule) the queued fibers ran
  // first in every round.
  EXPECT_GE(ahead, kRounds * 3 / 4) << "of " << kRounds;
}

// ...but only for one round trip per turn while the ring is short: then
// the pair's next request waits behind the queued fibers. A fiber that
// yields in a loop beside a ping-ponging pair gets a turn per round trip;
// through runnext alone (up to kMaxRunnextStreak hand-offs in a row) it got
// one per 32.
TEST(LoopbackHandOff, APairTakesOneRoundTripPerTurn) {
  const goro_test::CleanGoroEnv env;
  constexpr int kRoundTrips = 640;
  int turns = 0;
  goro::run(goro_test::OneProc(1s), [&] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    if (!ln) return;
    auto [client, server] = must_pair(ln);
    ASSERT_TRUE(client && server);
    goro_test::FiberGroup g;
    echo<64>(g, server);
    std::atomic<bool> stop{false};
    goro::WaitGroup bystander;
    bystander.add(1);
    goro::go([&] {
      while (!stop.load()) {
        ++turns;
        goro::yield();
      }
      bystander.done();
    });
    char b[64] = {};
    for (int i = 0; i < kRoundTrips; ++i) {
      ASSERT_TRUE(client.write({b, sizeof(b)}).ok());
      ASSERT_TRUE(client.read_full(b).ok());
    }
    stop = true;
    bystander.wait();
    (void)client.close();
    (void)ln.close();
  });
  EXPECT_GE(turns, kRoundTrips / 2);
}

// Only pairs whose two ends are in this process are linked: a Unix socket
// (its client end has no name), and a TCP connection to a socket of another
// process's making (here, a raw socket no goro::net call registered), are
// not, and go through epoll as before.
TEST(LoopbackHandOff, OnlyInProcessTcpPairsAreLinked) {
  goro::run(goro_test::Procs(2), [] {
    const std::uint64_t links0 = goro::net_internal::loopback_links();
    // The abstract namespace: TEST_TMPDIR is longer than sun_path's 108
    // bytes under Bazel.
    Listener ul = must_listen(
        "unix", "@goro_loopback_test_" + std::to_string(::getpid()));
    ASSERT_TRUE(ul);
    auto [uc, us] = must_pair(ul);
    ASSERT_TRUE(uc && us);
    const Counts c0 = counts();
    ping_pong(uc, us, 200);
    EXPECT_EQ(counts().handoffs, c0.handoffs) << "unix pairs are not linked";
    (void)ul.close();

    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    absl::StatusOr<goro::net::Addr> a = goro::net::Addr::parse(ln.addr());
    ASSERT_TRUE(a.ok());
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(fd, a->sa(), a->len()), 0);
    absl::StatusOr<Conn> sc = ln.accept();
    ASSERT_TRUE(sc.ok()) << sc.status();
    EXPECT_EQ(goro::net_internal::loopback_links(), links0);
    const Counts c1 = counts();
    // The raw end answers from a plain thread, blocking.
    std::thread peer([fd] {
      char b[16];
      for (int i = 0; i < 50; ++i) {
        if (::recv(fd, b, sizeof(b), MSG_WAITALL) != sizeof(b)) return;
        if (::send(fd, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b)) return;
      }
    });
    char out[16] = "0123456789abcde", in[16];
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(sc->write({out, sizeof(out)}).ok());
      ASSERT_TRUE(sc->read_full(in).ok());
      ASSERT_EQ(std::memcmp(in, out, sizeof(in)), 0);
    }
    peer.join();
    ::close(fd);
    EXPECT_EQ(counts().handoffs, c1.handoffs);
    (void)sc->close();
    (void)ln.close();
  });
}

// read(2) calls this process made so far (/proc/self/io's syscr).
std::uint64_t read_calls() {
  FILE* f = std::fopen("/proc/self/io", "r");
  if (f == nullptr) return 0;
  char line[128];
  unsigned long long v = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "syscr: %llu", &v) == 1) break;
  }
  std::fclose(f);
  return v;
}

// The events the hand-offs leave in epoll are dropped, not turned into
// readiness: each would cost its reader a read that finds nothing (and a
// spurious wake-up if it was parked again). With 32 pairs keeping both Ps
// busy, the busy Ps' polls see one such event per message; a round trip
// then costs its 4 reads (2 that return the message, 2 that find nothing
// and park) and little more.
TEST(LoopbackHandOff, StaleEventsCostNoReads) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  goro::run(goro_test::Procs(2), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    constexpr int kPairs = 32, kRounds = 500;
    Pairs pairs = make_pairs(ln, kPairs);
    const std::uint64_t r0 = read_calls();
    goro_test::FiberGroup g;
    for (auto& [c, s] : pairs) {
      g.go([c, s] { ping_pong(c, s, kRounds); });
    }
    g.wait();
    const double per_rt =
        static_cast<double>(read_calls() - r0) / (kPairs * kRounds);
    std::printf("read(2) calls per round trip: %.2f\n", per_rt);
    EXPECT_LT(per_rt, 5.0);
    close_all(pairs, ln);
  });
}

int raise_nofile(int want) {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  return static_cast<int>(std::min<rlim_t>(rl.rlim_cur, want));
}

// Exact accounting under stress: many pairs (with up to four fibers each
// runnable, more than two half rings hold, so hand-offs also go through the
// global queue), messages of random size up
// to 24 KiB (partial reads; writes that fill the socket buffer and park),
// both directions at once. Every byte arrives, in order; nothing hangs (a
// lost wake-up stops a pair for good: the watchdog).
TEST(LoopbackHandOff, ManyPairsLoseNoByteAndNoWakeUp) {
  const int kPairs = goro_test::Scaled(
      static_cast<int>(goro::runtime_internal::kLocalRunQueueSize) / 2 + 100,
      60);
  if (raise_nofile(4 * kPairs + 100) < 4 * kPairs + 100) {
    GTEST_SKIP() << "RLIMIT_NOFILE too low";
  }
  goro::run(goro_test::Procs(2), [kPairs] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Pairs pairs = make_pairs(ln, kPairs);
    const int kMessages = goro_test::Scaled(20, 15);
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<int> bad{0};
    goro_test::FiberGroup g;
    for (int i = 0; i < kPairs; ++i) {
      for (int dir = 0; dir < 2; ++dir) {
        Conn from = dir == 0 ? pairs[i].first : pairs[i].second;
        Conn to = dir == 0 ? pairs[i].second : pairs[i].first;
        const std::uint32_t seed = static_cast<std::uint32_t>(i * 2 + dir + 1);
        // Writer: kMessages messages of pseudo-random sizes; each byte is a
        // function of its position in the stream.
        g.go([from, seed, kMessages]() mutable {
          std::uint32_t x = seed;
          std::uint64_t pos = 0;
          std::string m;
          for (int k = 0; k < kMessages; ++k) {
            x = x * 1664525u + 1013904223u;
            m.resize(1 + (x >> 8) % (24 * 1024));
            for (char& c : m) c = static_cast<char>((pos++ * 131 + seed) >> 3);
            if (!from.write(m).ok()) return;
          }
          (void)from.close_write();
        });
        // Reader: reads to end of stream in odd-sized pieces, checking.
        g.go([to, seed, &bytes, &bad]() mutable {
          std::uint64_t pos = 0;
          char buf[3001];
          for (;;) {
            absl::StatusOr<std::size_t> n = to.read(buf);
            if (!n.ok() || *n == 0) break;
            for (std::size_t j = 0; j < *n; ++j) {
              if (buf[j] != static_cast<char>((pos++ * 131 + seed) >> 3)) {
                bad.fetch_add(1);
                return;
              }
            }
          }
          bytes.fetch_add(pos);
        });
      }
    }
    g.wait();
    EXPECT_EQ(bad.load(), 0);
    // The writers' sizes, replayed.
    std::uint64_t want = 0;
    for (int i = 0; i < kPairs; ++i) {
      for (int dir = 0; dir < 2; ++dir) {
        std::uint32_t x = static_cast<std::uint32_t>(i * 2 + dir + 1);
        for (int k = 0; k < kMessages; ++k) {
          x = x * 1664525u + 1013904223u;
          want += 1 + (x >> 8) % (24 * 1024);
        }
      }
    }
    EXPECT_EQ(bytes.load(), want);
    close_all(pairs, ln);
  });
}

// More ping-pong pairs than two Ps' rings hold: the hand-offs past half a
// ring go to the global queue, which busy Ps must serve in fair shares (one
// fiber per 61 slices, Go's rate, starved some pairs for hundreds of
// milliseconds). Every pair makes progress comparable to the others'.
TEST(LoopbackHandOff, NoPairStarvesWhenTheyOutnumberTheRings) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  // Each pair keeps one fiber runnable; two half rings hold
  // kLocalRunQueueSize of them.
  const int kPairs =
      static_cast<int>(goro::runtime_internal::kLocalRunQueueSize) + 400;
  if (raise_nofile(2 * kPairs + 100) < 2 * kPairs + 100) {
    GTEST_SKIP() << "RLIMIT_NOFILE too low";
  }
  // The default slice, whatever GORO_TIMESLICE says: the share that the
  // 61st-slice check takes is what serves the global queue only while
  // slices are long. At 100 us every preemption takes a share too
  // (yield_impl), and the planted bug below passes there; the spread
  // between pairs is wider at 100 us (p90/p10 2.2-3.3 with the hand-off
  // chain, 1.4-1.9 without, ninth and tenth sessions) but no pair starves:
  // that is the same queues reordered by frequent preemptions.
  goro_test::ScopedEnv slice("GORO_TIMESLICE", std::nullopt);
  goro::Options o = goro_test::Procs(2);
  o.time_slice = 10ms;
  goro::run(o, [kPairs] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Pairs pairs = make_pairs(ln, kPairs);
    std::vector<std::atomic<int>> done(kPairs);
    std::atomic<bool> stop{false};
    goro_test::FiberGroup g;
    for (int i = 0; i < kPairs; ++i) {
      echo<64>(g, pairs[i].second);
      ping_until(g, pairs[i].first, &stop, &done[i]);
    }
    goro::sleep_for(1500ms);
    stop.store(true);
    g.wait();
    std::vector<int> n;
    for (auto& d : done) n.push_back(d.load());
    std::sort(n.begin(), n.end());
    const int median = n[n.size() / 2];
    const int p10 = n[n.size() / 10];
    std::printf(
        "round trips per pair in 1.5 s: min %d p10 %d median %d p90 %d max "
        "%d\n",
        n.front(), p10, median, n[n.size() * 9 / 10], n.back());
    EXPECT_GT(median, 10);
    // Fair service keeps the slowest tenth near the median and the busiest
    // tenth within a small factor of the slowest: p10/median 0.8-0.9 and
    // p90/p10 1.1-1.2 on the seventh session's machine, 0.62-0.91 and
    // 1.2-2.0 on the eighth's (4 runs). Serving the global queue one fiber
    // per 61 slices (planted at find_work.cc's 61-tick global_get) favours
    // the pairs that stay in the rings: p90/p10 3.6-11.6 in four planted
    // runs on the eighth session's machine (p10/median 0.16-0.59; on the
    // seventh's 29x and 0.14-0.64). A single pair sometimes gets 10-60x the
    // median (with 100 us slices, and on the eighth session's VM at the
    // default slice too; not explained yet: bench/README.md, seventh
    // session), so the busiest tenth is checked, not the busiest pair.
    const int p90 = n[n.size() * 9 / 10];
    EXPECT_GE(p10, median / 2);
    EXPECT_LE(p90, 3 * p10) << "p10 " << p10 << " median " << median << " p90 "
                            << p90 << " max " << n.back();
    close_all(pairs, ln);
  });
}

// A P kept busy by hand-offs never runs dry, so it never polls on its way
// to idling; it must still poll (every kBusyPollNs) for the sockets that
// depend on epoll. A connection to a plain thread (not linked) gets its
// replies within a fraction of a millisecond, not at sysmon's 10 ms poll.
TEST(LoopbackHandOff, BusyPsStillPollForOtherSockets) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  // The default slice, whatever GORO_TIMESLICE says. At 100 us sysmon's
  // rounds and the preemptions of threads the OS deschedules stretch every
  // turn of the queue (docs/net.md, "With very short time slices"): p90 1.1
  // to 5 ms with the busy poll, p50 2.8-3.9 ms without it, too close to
  // tell apart on two shared cores. At 10 ms: p50 0.35 ms with, 9.3-9.6 ms
  // without (tenth session).
  goro_test::ScopedEnv slice("GORO_TIMESLICE", std::nullopt);
  goro::Options o = goro_test::Procs(2);
  o.time_slice = 10ms;
  goro::run(o, [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    // Load: 16 in-process pairs ping-ponging on both Ps.
    std::atomic<bool> stop{false};
    goro_test::FiberGroup g;
    for (int i = 0; i < 16; ++i) {
      auto [c, s] = must_pair(ln);
      echo<64>(g, s);
      ping_until(g, c, &stop, nullptr);
    }
    // The probe: a goro echo fiber for a raw socket driven by a plain
    // thread, one ping every millisecond.
    absl::StatusOr<goro::net::Addr> a = goro::net::Addr::parse(ln.addr());
    ASSERT_TRUE(a.ok());
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(fd, a->sa(), a->len()), 0);
    absl::StatusOr<Conn> sc = ln.accept();
    ASSERT_TRUE(sc.ok()) << sc.status();
    echo<8>(g, *sc);
    goro_test::Samples rtt(
        "reply to a plain thread's socket while Ps are busy");
    std::thread probe([fd, &rtt] {
      char b[8] = "ping!!!";
      for (int i = 0; i < 200; ++i) {
        std::this_thread::sleep_for(1ms);
        const auto t0 = Clock::now();
        if (::send(fd, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b)) return;
        if (::recv(fd, b, sizeof(b), MSG_WAITALL) != sizeof(b)) return;
        rtt.Add(Clock::now() - t0);
      }
    });
    goro::blocking([&] { probe.join(); });
    stop.store(true);
    ::close(fd);
    g.wait();
    // Documented: a poll at least every 250 us while some P is busy; sysmon's
    // 10 ms poll alone puts the median near 5 ms.
    EXPECT_TRUE(goro_test::QuantileBelow(rtt, 0.5, 2ms));
    EXPECT_TRUE(goro_test::QuantileBelow(rtt, 0.9, 4ms));
    (void)sc->close();
    (void)ln.close();
  });
}

}  // namespace
