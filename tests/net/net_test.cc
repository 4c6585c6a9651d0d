// Copyright goro authors.
//
// goro::net over loopback: the guarantees of net/net.h (connections,
// end of stream, half close, deadlines, close waking parked operations,
// back-pressure, errors, IPv6, Unix, UDP, plain threads, after run).

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/park.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using goro::net::Conn;
using goro::net::Listener;
using Clock = std::chrono::steady_clock;

// Echoes every connection of `ln` until the listener is closed.
void serve_echo(Listener ln, goro_test::FiberGroup* g) {
  for (;;) {
    absl::StatusOr<Conn> c = ln.accept();
    if (!c.ok()) return;
    g->go([c = *c]() mutable {
      char buf[4096];
      for (;;) {
        absl::StatusOr<std::size_t> n = c.read(buf);
        if (!n.ok() || *n == 0) break;
        if (!c.write({buf, *n}).ok()) break;
      }
      (void)c.close();
    });
  }
}

Listener must_listen(std::string_view net, std::string_view addr) {
  absl::StatusOr<Listener> ln = goro::net::listen(net, addr);
  EXPECT_TRUE(ln.ok()) << ln.status();
  return ln.ok() ? *ln : Listener();
}

// A round trip of `msg` over c, checked byte for byte.
void round_trip(Conn& c, const std::string& msg) {
  goro::net::IoResult w = c.write(msg);
  ASSERT_TRUE(w.ok()) << w.status;
  std::string got(msg.size(), '\0');
  goro::net::IoResult r = c.read_full(std::span<char>(got.data(), got.size()));
  ASSERT_TRUE(r.ok()) << r.status;
  ASSERT_EQ(got, msg);
}

// net.h: the example; a listener's addr, accept, dial, echo, end of stream.
TEST(NetTcp, EchoRoundTripsAndEndOfStream) {
  goro::run(goro_test::Procs(2), [] {
    goro_test::FiberGroup g;
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    EXPECT_EQ(ln.addr().rfind("127.0.0.1:", 0), 0u) << ln.addr();
    g.go([ln, &g] { serve_echo(ln, &g); });
    absl::StatusOr<Conn> c = goro::net::dial("tcp", ln.addr());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->remote_addr(), ln.addr());
    EXPECT_EQ(c->local_addr().rfind("127.0.0.1:", 0), 0u);
    for (int i = 0; i < 100; ++i) round_trip(*c, "hello " + std::to_string(i));
    ASSERT_TRUE(c->close_write().ok());
    char b[8];
    absl::StatusOr<std::size_t> n = c->read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 0u) << "end of stream is 0 bytes, OK";
    EXPECT_TRUE(c->close().ok());
    EXPECT_TRUE(ln.close().ok());
  });
}

// Issue: 1,000 concurrent connections on loopback (RLIMIT_NOFILE raised).
TEST(NetTcp, ThousandConcurrentConnections) {
  rlimit rl;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  const int kConns = goro_test::Scaled(1000, 200);
  if (rl.rlim_cur < static_cast<rlim_t>(2 * kConns + 100)) {
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << rl.rlim_max;
  }
  goro::run(goro_test::Procs(2), [&] {
    goro_test::FiberGroup g;
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    g.go([ln, &g] { serve_echo(ln, &g); });
    std::vector<Conn> conns(static_cast<std::size_t>(kConns));
    std::atomic<int> ok{0};
    goro_test::SpawnAndWait(kConns, [&](int i) {
      absl::StatusOr<Conn> c = goro::net::dial("tcp", ln.addr());
      if (!c.ok()) {
        ADD_FAILURE() << c.status();
        return;
      }
      conns[static_cast<std::size_t>(i)] = *c;
    });
    // Every connection open at once; each does 5 round trips concurrently.
    goro_test::SpawnAndWait(kConns, [&](int i) {
      Conn& c = conns[static_cast<std::size_t>(i)];
      if (!c) return;
      for (int k = 0; k < 5; ++k) {
        std::string msg(64, static_cast<char>('a' + (i + k) % 26));
        msg += std::to_string(i);
        round_trip(c, msg);
      }
      ok.fetch_add(1);
      (void)c.close();
    });
    EXPECT_EQ(ok.load(), kConns);
    (void)ln.close();
  });
}

// A plain blocking client socket connected to `addr` ("127.0.0.1:port"),
// for what a Conn does not expose (SO_LINGER).
int raw_connect(const std::string& addr) {
  absl::StatusOr<goro::net::Addr> a = goro::net::Addr::parse(addr);
  EXPECT_TRUE(a.ok()) << a.status();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(::connect(fd, a->sa(), a->len()), 0) << std::strerror(errno);
  return fd;
}

// Issue: a peer that resets mid-read.
TEST(NetTcp, PeerResetWakesAParkedReadWithTheError) {
  goro::run(goro_test::Procs(2), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    const int fd = raw_connect(ln.addr());
    absl::StatusOr<Conn> s = ln.accept();
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(::write(fd, "abc", 3), 3);
    absl::Status got;
    std::atomic<bool> done{false};
    std::string first;
    goro::go([&] {
      char b[16];
      absl::StatusOr<std::size_t> n = s->read(b);  // "abc"
      if (n.ok()) first.assign(b, *n);
      n = s->read(b);  // parks, then the reset
      got = n.ok() ? absl::InternalError("read returned OK") : n.status();
      done = true;
    });
    goro_test::AwaitInFiber(
        [] { return goro::runtime_internal::io_waiters() >= 1; },
        "the server's read to park");
    linger lg{1, 0};  // close sends RST
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    ::close(fd);
    goro_test::AwaitInFiber([&] { return done.load(); }, "the read to return");
    EXPECT_EQ(first, "abc");
    EXPECT_EQ(got.code(), absl::StatusCode::kUnavailable) << got;
    EXPECT_NE(got.message().find("read tcp 127.0.0.1:"),
              absl::string_view::npos)
        << got;
    EXPECT_NE(got.message().find("connection reset by peer"),
              absl::string_view::npos)
        << got;
    EXPECT_FALSE(goro::net::is_closed(got));
  });
}

// net.h: close_write (half close): the peer reads end of stream, and this
// side still reads the peer's reply.
TEST(NetTcp, HalfCloseLetsThePeerReplyAfterEndOfStream) {
  goro::run(goro_test::Procs(2), [] {
    goro_test::FiberGroup g;
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    g.go([ln]() mutable {
      absl::StatusOr<Conn> c = ln.accept();
      ASSERT_TRUE(c.ok());
      std::string all;
      char b[3];
      for (;;) {
        absl::StatusOr<std::size_t> n = c->read(b);
        ASSERT_TRUE(n.ok()) << n.status();
        if (*n == 0) break;
        all.append(b, *n);
      }
      ASSERT_TRUE(c->write("got:" + all).ok());
      ASSERT_TRUE(c->close().ok());
    });
    absl::StatusOr<Conn> c = goro::net::dial("tcp", ln.addr());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->write("request").ok());
    ASSERT_TRUE(c->close_write().ok());
    EXPECT_FALSE(c->write("more").ok()) << "writing after close_write fails";
    std::string reply;
    char b[64];
    for (;;) {
      absl::StatusOr<std::size_t> n = c->read(b);
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
      reply.append(b, *n);
    }
    EXPECT_EQ(reply, "got:request");
    goro::net::IoResult r = c->read_full(std::span<char>(b, 4));
    EXPECT_EQ(r.status.code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(r.n, 0u);
    (void)ln.close();
  });
}

// A connected pair over loopback (client, server side).
std::pair<Conn, Conn> pair_on(Listener& ln) {
  absl::StatusOr<Conn> c = goro::net::dial("tcp", ln.addr());
  EXPECT_TRUE(c.ok()) << c.status();
  absl::StatusOr<Conn> s = ln.accept();
  EXPECT_TRUE(s.ok()) << s.status();
  return {c.ok() ? *c : Conn(), s.ok() ? *s : Conn()};
}

// net.h "Deadlines": a deadline fires (is_timeout, kDeadlineExceeded), stays
// expired until changed, and clearing it lets reads through again.
TEST(NetDeadline, FiresStaysExpiredAndClears) {
  goro::run(goro_test::Procs(2), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    const auto t0 = Clock::now();
    ASSERT_TRUE(s.set_read_deadline(t0 + 30ms).ok());
    char b[8];
    absl::StatusOr<std::size_t> n = s.read(b);
    const auto took = Clock::now() - t0;
    ASSERT_FALSE(n.ok());
    EXPECT_TRUE(goro::net::is_timeout(n.status())) << n.status();
    EXPECT_TRUE(goro::net::is_temporary(n.status()));
    EXPECT_EQ(n.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(n.status().message().find("i/o timeout"),
              absl::string_view::npos);
    EXPECT_GE(took, 30ms) << "woken before its deadline";
    EXPECT_LT(took, 2s) << "liveness";
    // Stays expired, even with data waiting.
    ASSERT_TRUE(c.write("x").ok());
    n = s.read(b);
    EXPECT_TRUE(!n.ok() && goro::net::is_timeout(n.status()));
    // The write direction is unaffected.
    EXPECT_TRUE(s.write("y").ok());
    ASSERT_TRUE(s.set_read_deadline({}).ok());
    n = s.read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 1u);
    (void)ln.close();
  });
}

// net.h: a deadline moved later while a read is parked applies to that
// read (Go's semantics): it does not fire at the old time.
TEST(NetDeadline, ExtendedWhileParkedDoesNotFireEarly) {
  goro::run(goro_test::Procs(2), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    ASSERT_TRUE(s.set_read_deadline(Clock::now() + 40ms).ok());
    goro::go([c = c, s = s]() mutable {
      goro::sleep_for(10ms);
      ASSERT_TRUE(s.set_read_deadline(Clock::now() + 5s).ok());
      goro::sleep_for(90ms);  // well past the first deadline
      ASSERT_TRUE(c.write("late").ok());
    });
    char b[8];
    const auto t0 = Clock::now();
    absl::StatusOr<std::size_t> n = s.read(b);
    ASSERT_TRUE(n.ok()) << n.status() << " (the old deadline fired)";
    EXPECT_EQ(std::string(b, *n), "late");
    EXPECT_GE(Clock::now() - t0, 80ms);
    // And made earlier while parked, it fires now.
    goro::go([s = s]() mutable {
      goro::sleep_for(10ms);
      ASSERT_TRUE(s.set_read_deadline(Clock::now() - 1s).ok());
    });
    n = s.read(b);
    EXPECT_TRUE(!n.ok() && goro::net::is_timeout(n.status())) << n.status();
    (void)ln.close();
  });
}

// net.h "Deadlines": a parked fiber is woken within the timers' precision.
TEST(NetDeadline, ParkedReadWakesSoonAfterItsDeadline) {
  GORO_SKIP_TIMING_UNDER_SANITIZERS();
  goro_test::Samples late("read deadline 1 ms: lateness");
  goro::run(goro_test::Procs(2), [&] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    char b[8];
    for (int i = 0; i < 60; ++i) {
      const auto d = Clock::now() + 1ms;
      ASSERT_TRUE(s.set_read_deadline(d).ok());
      absl::StatusOr<std::size_t> n = s.read(b);
      ASSERT_TRUE(!n.ok() && goro::net::is_timeout(n.status()));
      late.Add(Clock::now() - d);
    }
    (void)ln.close();
  });
  // Documented: tens of us; a deadline rounded to a ms tick, or one that
  // waits for sysmon's 10 ms poll, fails it.
  EXPECT_TRUE(goro_test::QuantileBelow(late, 0.5, 700us));
}

// net.h "Concurrency": close from another fiber wakes a parked read and a
// parked write of the same Conn with is_closed; the handle's later
// operations fail the same way.
TEST(NetClose, CloseWakesAParkedReadAndAParkedWrite) {
  goro::run(goro_test::Procs(2), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    absl::Status rs, ws;
    std::atomic<int> done{0};
    std::size_t written = 0;
    goro::go([&, s = s]() mutable {
      char b[8];
      absl::StatusOr<std::size_t> n = s.read(b);
      rs = n.ok() ? absl::InternalError("read OK") : n.status();
      done.fetch_add(1);
    });
    goro::go([&, s = s]() mutable {
      const std::string big(1 << 20, 'z');  // the peer never reads
      for (;;) {
        goro::net::IoResult r = s.write(big);
        written += r.n;
        if (!r.ok()) {
          ws = r.status;
          break;
        }
      }
      done.fetch_add(1);
    });
    goro_test::AwaitInFiber(
        [] { return goro::runtime_internal::io_waiters() >= 2; },
        "a read and a write to park");
    ASSERT_TRUE(s.close().ok());
    goro_test::AwaitInFiber([&] { return done.load() == 2; }, "both to return");
    EXPECT_TRUE(goro::net::is_closed(rs)) << rs;
    EXPECT_TRUE(goro::net::is_closed(ws)) << ws;
    EXPECT_EQ(rs.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(rs.message().find("use of closed network connection"),
              absl::string_view::npos);
    EXPECT_GT(written, 0u) << "the write reports what went out";
    char b[4];
    EXPECT_TRUE(goro::net::is_closed(s.read(b).status()));
    EXPECT_TRUE(goro::net::is_closed(s.close()));
    (void)c.close();
    (void)ln.close();
  });
}

// net.h Listener::accept: close from another fiber wakes accept.
TEST(NetClose, ListenerCloseWakesAccept) {
  goro::run(goro_test::Procs(1), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    absl::Status st;
    std::atomic<bool> done{false};
    goro::go([&, ln]() mutable {
      st = ln.accept().status();
      done = true;
    });
    goro_test::AwaitInFiber(
        [] { return goro::runtime_internal::io_waiters() >= 1; },
        "accept to park");
    ASSERT_TRUE(ln.close().ok());
    goro_test::AwaitInFiber([&] { return done.load(); }, "accept to return");
    EXPECT_TRUE(goro::net::is_closed(st)) << st;
  });
}

// Issue: a slow reader with a fast writer: the writer parks on a full
// buffer, nothing is lost, every byte arrives in order.
TEST(NetTcp, BackPressureLosesNothing) {
  const std::size_t kTotal = goro_test::Scaled<std::size_t>(8 << 20, 2 << 20);
  goro::run(goro_test::Procs(2), [&] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    auto byte_at = [](std::size_t i) {
      return static_cast<char>((i * 131 + (i >> 12)) & 0xff);
    };
    goro::go([&, c = c]() mutable {
      std::string chunk;
      for (std::size_t off = 0; off < kTotal;) {
        const std::size_t n = std::min<std::size_t>(256 << 10, kTotal - off);
        chunk.resize(n);
        for (std::size_t i = 0; i < n; ++i) chunk[i] = byte_at(off + i);
        goro::net::IoResult r = c.write(chunk);
        ASSERT_TRUE(r.ok()) << r.status;
        ASSERT_EQ(r.n, n);
        off += n;
      }
      ASSERT_TRUE(c.close_write().ok());
    });
    std::size_t got = 0, bad = 0, reads = 0;
    std::vector<char> buf(7919);  // odd sizes, to cut across chunks
    for (;;) {
      absl::StatusOr<std::size_t> n = s.read(buf);
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
      for (std::size_t i = 0; i < *n; ++i) {
        if (buf[i] != byte_at(got + i)) ++bad;
      }
      got += *n;
      if (++reads % 64 == 0) goro::sleep_for(1ms);  // the slow reader
    }
    EXPECT_EQ(got, kTotal);
    EXPECT_EQ(bad, 0u);
    (void)ln.close();
  });
}

// Issue: an accept storm: many fibers dial at once, one acceptor.
TEST(NetTcp, AcceptStorm) {
  const int kDialers = goro_test::Scaled(500, 100);
  goro::run(goro_test::Procs(2), [&] {
    goro_test::FiberGroup g;
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    g.go([ln, &g] { serve_echo(ln, &g); });
    std::atomic<int> ok{0};
    goro_test::SpawnAndWait(kDialers, [&](int i) {
      absl::StatusOr<Conn> c = goro::net::dial("tcp", ln.addr());
      if (!c.ok()) {
        ADD_FAILURE() << c.status();
        return;
      }
      round_trip(*c, std::to_string(i));
      (void)c->close();
      ok.fetch_add(1);
    });
    EXPECT_EQ(ok.load(), kDialers);
    (void)ln.close();
  });
}

// net.h "Errors": refused connections, bad addresses and networks.
TEST(NetErrors, ClearMessagesAndCodes) {
  goro::run(goro_test::Procs(1), [] {
    // A port nobody listens on: bind one, note it, close it.
    std::string addr;
    {
      Listener ln = must_listen("tcp", "127.0.0.1:0");
      addr = ln.addr();
      (void)ln.close();
    }
    absl::StatusOr<Conn> c = goro::net::dial("tcp", addr);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().message(),
              "dial tcp " + addr + ": connection refused");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(goro::net::is_timeout(c.status()));
    EXPECT_FALSE(goro::net::is_closed(c.status()));

    c = goro::net::dial("tcp", "127.0.0.1");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("missing port in address"),
              absl::string_view::npos)
        << c.status();
    c = goro::net::dial("tcp", "127.0.0.1:99999");
    EXPECT_NE(c.status().message().find("invalid port"),
              absl::string_view::npos)
        << c.status();
    c = goro::net::dial("tcp", "::1:80");
    EXPECT_NE(c.status().message().find("too many colons"),
              absl::string_view::npos)
        << c.status();
    c = goro::net::dial("tcp4", "[::1]:80");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument)
        << c.status();
    c = goro::net::dial("sctp", "127.0.0.1:80");
    EXPECT_EQ(c.status().message(), "dial sctp: unknown network sctp");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    absl::StatusOr<Listener> l = goro::net::listen("udp", "127.0.0.1:0");
    EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
    // A port in use.
    Listener a = must_listen("tcp", "127.0.0.1:0");
    l = goro::net::listen("tcp", a.addr());
    EXPECT_NE(l.status().message().find("address already in use"),
              absl::string_view::npos)
        << l.status();
    // A default-constructed handle.
    Conn none;
    char b[1];
    EXPECT_EQ(none.read(b).status().code(),
              absl::StatusCode::kFailedPrecondition);
    // dial with a timeout that has already passed.
    c = goro::net::dial("tcp", a.addr(), std::chrono::nanoseconds(0));
    EXPECT_TRUE(goro::net::is_timeout(c.status())) << c.status();
    // A cancelled Context ends the dial.
    auto [ctx, cancel] = goro::with_cancel(goro::Context::background());
    cancel();
    c = goro::net::dial(ctx, "tcp", a.addr());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kCancelled) << c.status();
    // And a live one dials.
    auto [ctx2, cancel2] = goro::with_timeout(goro::Context::background(), 5s);
    c = goro::net::dial(ctx2, "tcp", a.addr());
    EXPECT_TRUE(c.ok()) << c.status();
    cancel2();
    // Names resolve (getaddrinfo inside goro::blocking).
    absl::StatusOr<Listener> lh = goro::net::listen("tcp4", "localhost:0");
    ASSERT_TRUE(lh.ok()) << lh.status();
    c = goro::net::dial(
        "tcp4",
        "localhost:" +
            std::to_string(goro::net::Addr::parse(lh->addr())->port()),
        5s);
    EXPECT_TRUE(c.ok()) << c.status();
  });
}

// net.h Listener::accept: EMFILE comes back as an error is_temporary()
// recognises (and accept works again once fds are free).
TEST(NetErrors, AcceptOutOfFdsIsTemporary) {
  goro::run(goro_test::Procs(1), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    const int fd = raw_connect(ln.addr());
    rlimit old;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    const int lowest = ::dup(0);  // the next fd accept would get
    ASSERT_GE(lowest, 0);
    ::close(lowest);
    rlimit tight = old;
    tight.rlim_cur = static_cast<rlim_t>(lowest);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
    absl::StatusOr<Conn> c = ln.accept();
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    ASSERT_FALSE(c.ok());
    EXPECT_TRUE(goro::net::is_temporary(c.status())) << c.status();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(c.status().message().find("too many open files"),
              absl::string_view::npos)
        << c.status();
    c = ln.accept();  // the connection is still queued
    EXPECT_TRUE(c.ok()) << c.status();
    ::close(fd);
  });
}

// Issue: IPv6 loopback.
TEST(NetTcp, Ipv6Loopback) {
  goro::run(goro_test::Procs(2), [] {
    absl::StatusOr<Listener> ln = goro::net::listen("tcp6", "[::1]:0");
    if (!ln.ok()) GTEST_SKIP() << "no IPv6 loopback: " << ln.status();
    goro_test::FiberGroup g;
    EXPECT_EQ(ln->addr().rfind("[::1]:", 0), 0u) << ln->addr();
    g.go([ln = *ln, &g] { serve_echo(ln, &g); });
    absl::StatusOr<Conn> c = goro::net::dial("tcp", ln->addr());
    ASSERT_TRUE(c.ok()) << c.status();
    round_trip(*c, "over IPv6");
    EXPECT_EQ(c->remote_addr(), ln->addr());
    (void)c->close();
    (void)ln->close();
  });
}

// Issue: Unix sockets (a path, removed on close; and the abstract namespace).
TEST(NetUnix, EchoOverAPathAndAnAbstractName) {
  // TEST_TMPDIR is longer than sun_path's 108 bytes under Bazel.
  const std::string path =
      "/tmp/goro_net_test_" + std::to_string(getpid()) + ".sock";
  ::unlink(path.c_str());
  goro::run(goro_test::Procs(2), [&] {
    for (const std::string& where :
         {path, std::string("@goro_net_test_") + std::to_string(getpid())}) {
      goro_test::FiberGroup g;
      Listener ln = must_listen("unix", where);
      ASSERT_TRUE(ln);
      EXPECT_EQ(ln.addr(), where);
      g.go([ln, &g] { serve_echo(ln, &g); });
      absl::StatusOr<Conn> c = goro::net::dial("unix", where);
      ASSERT_TRUE(c.ok()) << c.status();
      for (int i = 0; i < 20; ++i) round_trip(*c, "unix " + std::to_string(i));
      (void)c->close();
      (void)ln.close();
      g.wait();
    }
  });
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file left behind";
}

// Issue: UDP round trips; read_from's address equals the sender's
// local_addr() and write_to accepts it.
TEST(NetUdp, RoundTripsAndSenderAddresses) {
  goro::run(goro_test::Procs(2), [] {
    absl::StatusOr<goro::net::PacketConn> a =
        goro::net::listen_packet("udp", "127.0.0.1:0");
    absl::StatusOr<goro::net::PacketConn> b =
        goro::net::listen_packet("udp4", "127.0.0.1:0");
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    goro::go([b = *b]() mutable {
      char buf[64];
      for (int i = 0; i < 50; ++i) {
        auto got = b.read_from(buf);
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_TRUE(
            b.write_to(std::string_view(buf, got->first), got->second).ok());
      }
    });
    char buf[64];
    for (int i = 0; i < 50; ++i) {
      const std::string msg = "datagram " + std::to_string(i);
      goro::net::IoResult w = a->write_to(msg, b->local_addr());
      ASSERT_TRUE(w.ok()) << w.status;
      EXPECT_EQ(w.n, msg.size());
      auto got = a->read_from(buf);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(std::string(buf, got->first), msg);
      EXPECT_EQ(got->second, b->local_addr()) << got->second.to_string();
    }
    // Deadlines apply to packet reads too.
    ASSERT_TRUE(a->set_read_deadline(Clock::now() + 10ms).ok());
    EXPECT_TRUE(goro::net::is_timeout(a->read_from(buf).status()));
    EXPECT_TRUE(a->close().ok());
    EXPECT_TRUE(goro::net::is_closed(a->read_from(buf).status()));
    (void)b->close();
  });
}

// net.h "Callers": a plain thread blocks on a socket while the runtime
// runs (and sees a close); after run, operations fail with
// kFailedPrecondition; with no runtime, nothing can be opened.
TEST(NetCallers, PlainThreadsAndAfterRun) {
  Conn keep;
  goro::run(goro_test::Procs(1), [&] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    std::string got;
    std::atomic<bool> got_it{false};
    std::thread t([&, s = s]() mutable {
      char b[16];
      absl::StatusOr<std::size_t> n = s.read(b);  // blocks in poll(2)
      if (n.ok()) got.assign(b, *n);
      got_it = true;
      n = s.read(b);  // until the close
      EXPECT_TRUE(!n.ok() && goro::net::is_closed(n.status())) << n.status();
    });
    goro::sleep_for(20ms);
    ASSERT_TRUE(c.write("to a thread").ok());
    goro_test::AwaitInFiber([&] { return got_it.load(); }, "the thread's read");
    ASSERT_TRUE(s.close().ok());
    goro::blocking([&] { t.join(); });
    EXPECT_EQ(got, "to a thread");
    keep = c;
    // An armed deadline timer outlives the runtime: closing after run must
    // not touch the runtime's (freed) timer heap (ASan checks this).
    ASSERT_TRUE(keep.set_read_deadline(Clock::now() + 1h).ok());
    (void)ln.close();
  });
  char b[4];
  absl::StatusOr<std::size_t> n = keep.read(b);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition)
      << n.status();
  EXPECT_FALSE(goro::net::is_closed(n.status()));
  EXPECT_NE(n.status().message().find("goro runtime has ended"),
            absl::string_view::npos);
  EXPECT_TRUE(keep.close().ok()) << "close works after run";
  absl::StatusOr<Listener> l = goro::net::listen("tcp", "127.0.0.1:0");
  EXPECT_EQ(l.status().code(), absl::StatusCode::kFailedPrecondition);
  // A second runtime works (its own epoll instance).
  goro::run(goro_test::Procs(1), [] {
    Listener ln = must_listen("tcp", "127.0.0.1:0");
    auto [c, s] = pair_on(ln);
    round_trip(c, "");  // nothing sent; still must not hang
    ASSERT_TRUE(c.write("again").ok());
    char buf[5];
    EXPECT_TRUE(s.read_full(buf).ok());
  });
}

}  // namespace
