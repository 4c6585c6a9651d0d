// Copyright goro authors.
//
// goro::net: TCP, UDP and Unix sockets for fibers, Go's net package.
//
//   goro::run([] {
//     auto ln = goro::net::listen("tcp", "127.0.0.1:0");
//     if (!ln.ok()) return;
//     goro::go([ln = *ln]() mutable {
//       for (;;) {
//         auto c = ln.accept();
//         if (!c.ok()) return;                 // closed: is_closed(c.status())
//         goro::go([c = *c]() mutable {        // one fiber per connection
//           char buf[4096];
//           for (;;) {
//             auto n = c.read(buf);
//             if (!n.ok() || *n == 0) return;  // error, or end of stream
//             if (!c.write({buf, *n}).ok()) return;
//           }
//         });
//       }
//     });
//     auto c = goro::net::dial("tcp", ln->addr());
//     ...
//   });
//
// What: a fiber that calls read, write, accept or dial on a socket that is
// not ready parks; its thread runs other fibers, and the fiber resumes when
// epoll reports the socket ready (the netpoller, docs/net.md). Sockets are
// non-blocking (SOCK_NONBLOCK|SOCK_CLOEXEC, accept4), registered once with
// an edge-triggered epoll for their lifetime; every operation tries the
// system call first and waits only on EAGAIN.
//
// Handles. Conn, Listener and PacketConn are handles like Chan: copies share
// one socket; close() closes it for every copy; the last handle to go
// closes it if nobody did, so a fiber parked in read never outlives the
// object it reads from. A default-constructed handle has no socket: every
// operation returns kFailedPrecondition.
//
// Concurrency. One reader and one writer may use a Conn at once, from
// different fibers or threads (more are serialised, in arrival order); a
// close() from any fiber wakes both with is_closed(), and the fd is closed
// when the last operation in progress leaves it.
//
// Callers. Fibers park. A plain thread (or a fiber inside goro::blocking)
// may use sockets while a runtime runs, as it may use a Chan: it blocks in
// poll(2) on the socket, noticing a close or a deadline within 20 ms.
// Creating a socket needs a running runtime, and a socket belongs to the
// runtime it was created in: once that goro::run has returned, every
// operation on it except close() returns kFailedPrecondition ("goro runtime
// has ended"). Fibers parked in I/O when main returns never resume (like
// any parked fiber, see run.h); their sockets stay open until their handles
// are destroyed.
//
// Errors (absl::Status). The message names the operation, the network and
// the address, as Go's: "dial tcp 127.0.0.1:1: connection refused",
// "read tcp 127.0.0.1:40000->127.0.0.1:8080: connection reset by peer". The
// code follows absl::ErrnoToStatus for errno failures (ECONNREFUSED is
// kUnavailable, ECONNRESET kUnavailable, ...). Three kinds have helpers:
//   * is_timeout: a deadline (or dial timeout) passed; kDeadlineExceeded,
//     "i/o timeout".
//   * is_closed: the socket was closed by this program (close() on any
//     handle); kFailedPrecondition, "use of closed network connection".
//   * is_temporary: worth retrying later -- EMFILE/ENFILE/ENOBUFS/ENOMEM
//     and ECONNABORTED from accept (back off: the echo server doubles a
//     5 ms sleep up to 1 s, as Go's http.Server), and timeouts.
// A bad network is kInvalidArgument ("unknown network"), a malformed
// address kInvalidArgument ("missing port in address", ...), a host that
// does not resolve kNotFound ("no such host").
//
// Deadlines are absolute std::chrono::steady_clock times, kept per
// direction, and stay in force until changed (Go's semantics): once passed,
// every operation in that direction fails with is_timeout until the
// deadline is moved (time_point{} clears it). Moving a deadline while an
// operation is parked applies to that operation (extend it, or make it fire
// now). They run on the runtime's per-P timers: a parked fiber is woken
// within the timers' precision (tens of microseconds on an idle machine).
//
// Cost (docs/net.md, bench/README.md): a read or write that does not wait
// is one system call; one that waits adds a park and a wake-up (~1-2 us),
// and no epoll_ctl. A socket costs one fd, a 256-byte poll descriptor
// (recycled, never freed) and the handle's shared state.

#ifndef GORO_NET_NET_H_
#define GORO_NET_NET_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sync/context.h"

namespace goro::net {

using Deadline = std::chrono::steady_clock::time_point;

// The result of an operation that may transfer part of its data before it
// fails (Go's (n, err)): n bytes went through, then status.
struct IoResult {
  std::size_t n = 0;
  absl::Status status;
  bool ok() const { return status.ok(); }
};

bool is_timeout(const absl::Status& s);
bool is_closed(const absl::Status& s);
bool is_temporary(const absl::Status& s);

namespace net_detail {
struct Socket;
}  // namespace net_detail

// Addr: a socket address as a small value (no parsing or formatting per
// datagram). What PacketConn::read_from returns compares equal to the
// sender's local_addr(), and write_to accepts it.
class Addr {
 public:
  Addr() = default;
  // parse: a numeric "host:port" ("127.0.0.1:53", "[::1]:53"); no lookup.
  static absl::StatusOr<Addr> parse(std::string_view host_port);
  // "127.0.0.1:53", "[::1]:53"; "" for an empty Addr.
  std::string to_string() const;
  int port() const;
  bool empty() const { return len_ == 0; }
  friend bool operator==(const Addr& a, const Addr& b);
  friend bool operator!=(const Addr& a, const Addr& b) { return !(a == b); }

  // The raw address (for the implementation and for C APIs).
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss_); }
  socklen_t len() const { return len_; }
  static Addr from(const sockaddr* sa, socklen_t len);

 private:
  sockaddr_storage ss_{};
  socklen_t len_ = 0;
};

// Conn: a connected stream socket (TCP or Unix).
class Conn {
 public:
  Conn() = default;

  // read reads at most buf.size() bytes: what is available, waiting until
  // something is. 0 bytes with OK at end of stream (and for an empty buf).
  absl::StatusOr<std::size_t> read(std::span<char> buf);
  // read_full fills buf or fails: end of stream part-way is kOutOfRange
  // "unexpected EOF" (n says how much arrived); at once, n == 0 and
  // kOutOfRange "EOF".
  IoResult read_full(std::span<char> buf);
  // write writes all of data unless an error or deadline stops it; n says
  // how much went out either way.
  IoResult write(std::string_view data);

  // close closes the socket for every handle, waking parked operations with
  // is_closed. A second close returns is_closed.
  absl::Status close();
  // close_write shuts down the sending side (the peer reads end of stream);
  // reading continues.
  absl::Status close_write();

  absl::Status set_deadline(Deadline t);
  absl::Status set_read_deadline(Deadline t);
  absl::Status set_write_deadline(Deadline t);

  // "127.0.0.1:40000", "[::1]:8080", a Unix path; "" if unknown.
  std::string local_addr() const;
  std::string remote_addr() const;

  // set_no_delay sets TCP_NODELAY (on by default, as Go); no-op for Unix.
  absl::Status set_no_delay(bool on);

  explicit operator bool() const { return s_ != nullptr; }

 private:
  friend class Listener;
  friend absl::StatusOr<Conn> dial_impl(std::string_view, std::string_view,
                                        std::int64_t, const Context*);
  explicit Conn(std::shared_ptr<net_detail::Socket> s) : s_(std::move(s)) {}
  std::shared_ptr<net_detail::Socket> s_;
};

// Listener: a listening stream socket.
class Listener {
 public:
  Listener() = default;
  // accept waits for a connection. A close() of the listener (from any
  // fiber) wakes it with is_closed. EMFILE/ENFILE come back as errors that
  // is_temporary() recognises: back off and retry.
  absl::StatusOr<Conn> accept();
  // The bound address ("127.0.0.1:40000", "[::]:8080", a Unix path).
  std::string addr() const;
  // close stops listening (and removes the socket file of a Unix listener
  // it created).
  absl::Status close();
  // set_deadline bounds accept (is_timeout after it).
  absl::Status set_deadline(Deadline t);

  explicit operator bool() const { return s_ != nullptr; }

 private:
  friend absl::StatusOr<Listener> listen(std::string_view network,
                                         std::string_view address);
  explicit Listener(std::shared_ptr<net_detail::Socket> s) : s_(std::move(s)) {}
  std::shared_ptr<net_detail::Socket> s_;
};

// PacketConn: a UDP socket.
class PacketConn {
 public:
  PacketConn() = default;
  // read_from receives one datagram (truncated to buf) and its sender.
  absl::StatusOr<std::pair<std::size_t, Addr>> read_from(std::span<char> buf);
  // write_to sends data as one datagram to `to`.
  IoResult write_to(std::string_view data, const Addr& to);
  Addr local_addr() const;
  absl::Status close();
  absl::Status set_deadline(Deadline t);
  absl::Status set_read_deadline(Deadline t);
  absl::Status set_write_deadline(Deadline t);

  explicit operator bool() const { return s_ != nullptr; }

 private:
  friend absl::StatusOr<PacketConn> listen_packet(std::string_view network,
                                                  std::string_view address);
  explicit PacketConn(std::shared_ptr<net_detail::Socket> s)
      : s_(std::move(s)) {}
  std::shared_ptr<net_detail::Socket> s_;
};

// listen: networks "tcp" (IPv6 and IPv4: an empty host listens on both),
// "tcp4", "tcp6", "unix" (address: a path; "@name" for the abstract
// namespace). Addresses as Go writes them: "127.0.0.1:0", "[::1]:8080",
// ":0", "localhost:0". Port 0 picks a free port (see addr()).
absl::StatusOr<Listener> listen(std::string_view network,
                                std::string_view address);

// dial connects to address. A host name is resolved with getaddrinfo inside
// goro::blocking (numeric addresses never call it; at most 64 lookups run
// at once), and every resolved address is tried in order until one
// connects. With a timeout (or a Context, whose cancellation or deadline
// ends the dial: Go's DialContext) the bound covers resolution too; a lookup
// that outlives it finishes in the background. A timeout of zero or less
// has passed already: is_timeout at once (Go's DialTimeout reads 0 as no
// bound: use the two-argument dial for that); one beyond the clock's range
// (nanoseconds::max()) is no bound.
absl::StatusOr<Conn> dial(std::string_view network, std::string_view address);
absl::StatusOr<Conn> dial(std::string_view network, std::string_view address,
                          std::chrono::nanoseconds timeout);
absl::StatusOr<Conn> dial(const Context& ctx, std::string_view network,
                          std::string_view address);

// listen_packet: "udp", "udp4", "udp6" and a local address ("127.0.0.1:0").
absl::StatusOr<PacketConn> listen_packet(std::string_view network,
                                         std::string_view address);

}  // namespace goro::net

#endif  // GORO_NET_NET_H_
