// Copyright goro authors.
//
// goro::net at the edges of its inputs, as a new user's code reaches them:
// empty buffers, timeouts and deadlines at the ends of the clock, handles
// used after close, datagrams too big or sent nowhere, Unix paths too long.
// Each must give the documented result or a clear error, never a hang, a
// crash or undefined behaviour (net/net.h).

#include <chrono>
#include <cstddef>
#include <span>
#include <string>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;
using goro::net::Conn;
using goro::net::Deadline;
using goro::net::Listener;
using Clock = std::chrono::steady_clock;

struct Pair {
  Listener ln;
  Conn client;
  Conn server;
};

Pair must_pair() {
  Pair p;
  absl::StatusOr<Listener> ln = goro::net::listen("tcp", "127.0.0.1:0");
  EXPECT_TRUE(ln.ok()) << ln.status();
  if (!ln.ok()) return p;
  p.ln = *ln;
  absl::StatusOr<Conn> c = goro::net::dial("tcp", p.ln.addr());
  EXPECT_TRUE(c.ok()) << c.status();
  absl::StatusOr<Conn> s = p.ln.accept();
  EXPECT_TRUE(s.ok()) << s.status();
  if (c.ok()) p.client = *c;
  if (s.ok()) p.server = *s;
  return p;
}

// net.h Conn::read: "0 bytes with OK ... for an empty buf" -- at once, with
// nothing to read (a read that parked here would wait for bytes it cannot
// take; the 2 s deadline turns that hang into a failure).
TEST(NetEdges, EmptyBuffersReturnAtOnce) {
  goro::run(goro_test::Procs(1), [] {
    Pair p = must_pair();
    ASSERT_TRUE(p.client && p.server);
    ASSERT_TRUE(p.server.set_read_deadline(Clock::now() + 2s).ok());
    const auto t0 = Clock::now();
    absl::StatusOr<std::size_t> n = p.server.read(std::span<char>());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 0u);
    goro::net::IoResult full = p.server.read_full(std::span<char>());
    EXPECT_TRUE(full.ok()) << full.status;
    EXPECT_EQ(full.n, 0u);
    EXPECT_LT(Clock::now() - t0, 1s) << "an empty read waited for data";
    goro::net::IoResult w = p.client.write("");
    EXPECT_TRUE(w.ok()) << w.status;
    EXPECT_EQ(w.n, 0u);
    // The stream is untouched: the next byte written is the next read.
    ASSERT_TRUE(p.client.write("x").ok());
    char b[4];
    n = p.server.read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(std::string(b, *n), "x");
  });
}

// net.h dial: a timeout of zero or less has passed already (is_timeout at
// once); one so long that now + timeout does not fit in 64-bit nanoseconds
// (nanoseconds::max(), "forever") is no bound at all, not an overflow into
// the past.
TEST(NetEdges, DialTimeoutsAtTheEndsOfTheRange) {
  goro::run(goro_test::Procs(1), [] {
    absl::StatusOr<Listener> ln = goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok()) << ln.status();
    absl::StatusOr<Conn> c =
        goro::net::dial("tcp", ln->addr(), std::chrono::nanoseconds::max());
    EXPECT_TRUE(c.ok()) << c.status();
    c = goro::net::dial("tcp", ln->addr(), std::chrono::hours(24 * 365 * 200));
    EXPECT_TRUE(c.ok()) << c.status();
    c = goro::net::dial("tcp", ln->addr(), -1ns);
    EXPECT_TRUE(goro::net::is_timeout(c.status())) << c.status();
    c = goro::net::dial("tcp", ln->addr(), std::chrono::nanoseconds::min());
    EXPECT_TRUE(goro::net::is_timeout(c.status())) << c.status();
    c = goro::net::dial("tcp", ln->addr(), 0ns);
    EXPECT_TRUE(goro::net::is_timeout(c.status())) << c.status();
  });
}

// Deadlines at the ends of steady_clock: max() never fires, any time before
// now (min(), the epoch's first nanosecond) has passed, time_point{} clears.
TEST(NetEdges, DeadlinesAtTheEndsOfTheClock) {
  goro::run(goro_test::Procs(1), [] {
    Pair p = must_pair();
    ASSERT_TRUE(p.client && p.server);
    char b[8];
    for (const Deadline past :
         {Deadline::min(), Deadline(1ns), Clock::now() - 1ms}) {
      ASSERT_TRUE(p.server.set_read_deadline(past).ok());
      absl::StatusOr<std::size_t> n = p.server.read(b);
      EXPECT_TRUE(goro::net::is_timeout(n.status()))
          << "deadline " << past.time_since_epoch().count() << ": "
          << n.status();
    }
    ASSERT_TRUE(p.server.set_read_deadline(Deadline::max()).ok());
    goro::go([c = p.client]() mutable {
      goro::sleep_for(20ms);  // the read below parks first
      (void)c.write("late");
    });
    absl::StatusOr<std::size_t> n = p.server.read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(std::string(b, *n), "late");
    ASSERT_TRUE(p.server.set_read_deadline(Deadline::min()).ok());
    ASSERT_TRUE(p.server.set_read_deadline(Deadline{}).ok());
    ASSERT_TRUE(p.client.write("ok").ok());
    n = p.server.read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(std::string(b, *n), "ok");
  });
}

// net.h Conn::close: "A second close returns is_closed"; after a close
// every operation on any handle returns is_closed, and the addresses can
// still be asked for.
TEST(NetEdges, HandlesUsedAfterClose) {
  goro::run(goro_test::Procs(1), [] {
    Pair p = must_pair();
    ASSERT_TRUE(p.client && p.server);
    Conn copy = p.client;
    const std::string local = p.client.local_addr();
    ASSERT_TRUE(p.client.close().ok());
    EXPECT_TRUE(goro::net::is_closed(p.client.close()));
    EXPECT_TRUE(goro::net::is_closed(copy.close()));
    char b[4];
    EXPECT_TRUE(goro::net::is_closed(copy.read(b).status()));
    goro::net::IoResult w = copy.write("x");
    EXPECT_TRUE(goro::net::is_closed(w.status)) << w.status;
    EXPECT_EQ(w.n, 0u);
    EXPECT_TRUE(goro::net::is_closed(copy.read_full(b).status));
    EXPECT_TRUE(goro::net::is_closed(copy.close_write()));
    EXPECT_TRUE(goro::net::is_closed(copy.set_deadline(Clock::now() + 1s)));
    EXPECT_TRUE(goro::net::is_closed(copy.set_no_delay(false)));
    (void)copy.local_addr();  // whatever it says, it must not crash
    (void)copy.remote_addr();
    // The peer sees end of stream.
    absl::StatusOr<std::size_t> n = p.server.read(b);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 0u);
    Listener l2 = p.ln;
    ASSERT_TRUE(p.ln.close().ok());
    EXPECT_TRUE(goro::net::is_closed(l2.close()));
    EXPECT_TRUE(goro::net::is_closed(l2.accept().status()));
    EXPECT_FALSE(local.empty());
  });
}

// UDP: a datagram bigger than UDP allows, and one sent to no address, are
// errors that say so (n = 0); the socket still works afterwards.
TEST(NetEdges, DatagramsTooBigOrSentNowhere) {
  goro::run(goro_test::Procs(1), [] {
    absl::StatusOr<goro::net::PacketConn> a =
        goro::net::listen_packet("udp4", "127.0.0.1:0");
    absl::StatusOr<goro::net::PacketConn> b =
        goro::net::listen_packet("udp4", "127.0.0.1:0");
    ASSERT_TRUE(a.ok() && b.ok());
    const std::string huge(70000, 'h');
    goro::net::IoResult w = a->write_to(huge, b->local_addr());
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(w.n, 0u);
    EXPECT_NE(w.status.message().find("message too long"),
              absl::string_view::npos)
        << w.status;
    w = a->write_to("x", goro::net::Addr());
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(w.status.code(), absl::StatusCode::kInvalidArgument) << w.status;
    w = a->write_to("fine", b->local_addr());
    ASSERT_TRUE(w.ok()) << w.status;
    char buf[16];
    ASSERT_TRUE(b->set_read_deadline(Clock::now() + 5s).ok());
    absl::StatusOr<std::pair<std::size_t, goro::net::Addr>> r =
        b->read_from(buf);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(std::string(buf, r->first), "fine");
    EXPECT_EQ(r->second, a->local_addr());
  });
}

// A Unix socket path longer than sockaddr_un holds is refused with a clear
// error (a copy into sun_path would overflow it).
TEST(NetEdges, UnixPathTooLongIsRefused) {
  goro::run(goro_test::Procs(1), [] {
    const std::string path = "/tmp/" + std::string(200, 'p');
    absl::StatusOr<Listener> ln = goro::net::listen("unix", path);
    EXPECT_EQ(ln.status().code(), absl::StatusCode::kInvalidArgument)
        << ln.status();
    absl::StatusOr<Conn> c = goro::net::dial("unix", path);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument)
        << c.status();
  });
}

}  // namespace
