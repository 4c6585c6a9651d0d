// Copyright goro authors.
//
// goro::net's sockets on the netpoller (net/internal/poll.h): dial, listen,
// Listener, Conn and PacketConn. Errors are built in errors.cc, addresses
// parsed and resolved in addr.cc (net/internal/util.h).

#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "net/internal/poll.h"
#include "net/internal/socket.h"
#include "net/internal/util.h"
#include "runtime/blocking.h"
#include "runtime/go.h"
#include "runtime/internal/duration.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/park.h"
#include "runtime/this_fiber.h"
#include "sync/chan.h"
#include "sync/mutex.h"
#include "sync/select.h"
#include "sync/timer.h"

namespace goro::net {

namespace pi = goro::net_internal;
using impl::addr_error;
using impl::cat;
using impl::closed_error;
using impl::ended_error;
using impl::errno_error;
using impl::HostPort;
using impl::make_error;
using impl::Network;
using impl::numeric;
using impl::parse_network;
using impl::poll_error;
using impl::resolve;
using impl::split_host_port;
using impl::timeout_error;
using impl::to_ns;
using impl::unix_addr;
using pi::Mode;
using pi::PollErr;

// --- Sockets
// ------------------------------------------------------------------

using net_detail::Op;
using net_detail::Socket;

namespace {

// The deadline setters of Listener, Conn and PacketConn: `t` for the read
// and/or write direction (time_point{} clears it).
absl::Status set_deadlines(Socket* s, Deadline t, bool read, bool write) {
  Op op(s);
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s->pd, to_ns(t), read, write);
  return absl::OkStatus();
}

Addr sock_name(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  const int r = peer
                    ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                    : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (r != 0) return Addr();
  return Addr::from(reinterpret_cast<sockaddr*>(&ss), len);
}

// A new non-blocking socket registered with the netpoller.
absl::StatusOr<std::shared_ptr<Socket>> new_socket(int family, int type,
                                                   const std::string& net,
                                                   const std::string& what) {
  const int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error(cat(what, ": socket"), errno);
  return [&]() -> absl::StatusOr<std::shared_ptr<Socket>> {
    absl::StatusOr<pi::PollDesc*> pd = pi::open(fd);
    if (!pd.ok()) {
      ::close(fd);
      return absl::Status(pd.status().code(),
                          cat(what, ": ", pd.status().message()));
    }
    auto s = std::make_shared<Socket>();
    s->fd = fd;
    s->pd = *pd;
    s->net = net;
    s->tcp = type == SOCK_STREAM && family != AF_UNIX;
    return s;
  }();
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::int64_t now_ns() { return runtime_internal::mono_now_ns(); }

// Connects s to `to`, waiting at most until deadline_ns (0: none).
absl::Status connect_one(Socket* s, const Addr& to, std::int64_t deadline_ns,
                         const std::string& what) {
  int r;
  do {
    r = ::connect(s->fd, to.sa(), to.len());
  } while (r != 0 && errno == EINTR);
  if (r == 0) return absl::OkStatus();
  if (errno != EINPROGRESS) return errno_error(what, errno);
  if (deadline_ns != 0) pi::set_deadline(s->pd, deadline_ns, false, true);
  for (;;) {
    if (PollErr e = pi::wait(s->pd, Mode::kWrite); e != PollErr::kNone) {
      return poll_error(what, e);
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      return errno_error(what, errno);
    }
    if (err == EINPROGRESS || err == EALREADY || err == EINTR) continue;
    if (err != 0) return errno_error(what, err);
    if (sock_name(s->fd, true).empty()) continue;  // not connected yet
    break;
  }
  if (deadline_ns != 0) pi::set_deadline(s->pd, 0, false, true);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Conn> dial_impl(std::string_view network,
                               std::string_view address,
                               std::int64_t deadline_ns, const Context* ctx) {
  const std::string what0 = cat("dial ", network);
  absl::StatusOr<Network> net = parse_network("dial", network, false);
  if (!net.ok()) return net.status();
  const std::string what = cat(what0, " ", address);
  if (runtime_internal::runtime_epoch() == 0) {
    return absl::FailedPreconditionError(
        cat(what, ": no goro runtime is running"));
  }
  if (ctx != nullptr && !ctx->err().ok()) return ctx->err();
  std::vector<Addr> addrs;
  if (net->family == AF_UNIX) {
    absl::StatusOr<Addr> a = unix_addr(what, address);
    if (!a.ok()) return a.status();
    addrs.push_back(*a);
  } else {
    absl::StatusOr<HostPort> hp = split_host_port(what0, address);
    if (!hp.ok()) return hp.status();
    absl::StatusOr<std::vector<Addr>> r =
        resolve(*net, *hp, false, deadline_ns, ctx, what);
    if (!r.ok()) return r.status();
    addrs = std::move(*r);
  }
  absl::Status last;
  for (const Addr& to : addrs) {
    const std::string w = cat(what0, " ", to.to_string());
    absl::StatusOr<std::shared_ptr<Socket>> s =
        new_socket(to.sa()->sa_family, SOCK_STREAM, net->name, w);
    if (!s.ok()) return s.status();
    // A Context ends the dial by expiring the connect's deadline.
    Chan<Unit> stop(0), watcher_done(0);
    std::shared_ptr<Socket> sock = *s;
    if (ctx != nullptr && ctx->done()) {
      goro::go([c = *ctx, stop, watcher_done, sock]() mutable {
        goro::select(
            recv_case(c.done(),
                      [&] { pi::set_deadline(sock->pd, -1, false, true); }),
            recv_case(stop));
        watcher_done.close();
      });
    }
    last = connect_one(sock.get(), to, deadline_ns, w);
    if (ctx != nullptr && ctx->done()) {
      stop.close();
      (void)watcher_done.recv();
      if (!last.ok() && !ctx->err().ok()) last = ctx->err();
    }
    if (last.ok()) {
      sock->local = sock_name(sock->fd, false);
      sock->remote = sock_name(sock->fd, true);
      if (sock->tcp) set_nodelay(sock->fd);
      if (net->family == AF_UNIX) sock->remote = to;
      if (sock->tcp) {
        sock->loopback_key =
            pi::loopback_register(sock->pd, sock->local, sock->remote);
      }
      pi::set_deadline(sock->pd, 0, true, true);
      return Conn(std::move(sock));
    }
    sock->close_once();
    if (is_timeout(last) || (ctx != nullptr && !ctx->err().ok())) {
      return last;
    }
  }
  return last;
}

absl::StatusOr<Conn> dial(std::string_view network, std::string_view address) {
  return dial_impl(network, address, 0, nullptr);
}

absl::StatusOr<Conn> dial(std::string_view network, std::string_view address,
                          std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) {  // already passed
    return timeout_error(cat("dial ", network, " ", address));
  }
  // A bound past the end of the clock (nanoseconds::max() for "forever")
  // is none (0): now + timeout would overflow into the past.
  std::int64_t d = runtime_internal::add_saturating(now_ns(), timeout.count());
  if (d == std::numeric_limits<std::int64_t>::max()) d = 0;
  return dial_impl(network, address, d, nullptr);
}

absl::StatusOr<Conn> dial(const Context& ctx, std::string_view network,
                          std::string_view address) {
  std::int64_t d = 0;
  if (std::optional<TimePoint> t = ctx.deadline()) {
    d = std::max<std::int64_t>(1, to_ns(*t));
  }
  return dial_impl(network, address, d, &ctx);
}

absl::StatusOr<Listener> listen(std::string_view network,
                                std::string_view address) {
  const std::string what0 = cat("listen ", network);
  absl::StatusOr<Network> net = parse_network("listen", network, false);
  if (!net.ok()) return net.status();
  const std::string what = cat(what0, " ", address);
  if (runtime_internal::runtime_epoch() == 0) {
    return absl::FailedPreconditionError(
        cat(what, ": no goro runtime is running"));
  }
  std::vector<Addr> addrs;
  if (net->family == AF_UNIX) {
    absl::StatusOr<Addr> a = unix_addr(what, address);
    if (!a.ok()) return a.status();
    addrs.push_back(*a);
  } else {
    absl::StatusOr<HostPort> hp = split_host_port(what0, address);
    if (!hp.ok()) return hp.status();
    absl::StatusOr<std::vector<Addr>> r =
        resolve(*net, *hp, true, 0, nullptr, what);
    if (!r.ok()) return r.status();
    addrs = std::move(*r);
  }
  absl::Status last;
  for (const Addr& at : addrs) {
    const int family = at.sa()->sa_family;
    absl::StatusOr<std::shared_ptr<Socket>> s =
        new_socket(family, SOCK_STREAM, net->name, what);
    if (!s.ok()) return s.status();
    Socket* sock = s->get();
    const int one = 1, zero = 0;
    if (family != AF_UNIX) {
      ::setsockopt(sock->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (family == AF_INET6) {
      // "tcp" with the wildcard listens on IPv4 too (Go's dual stack).
      const int v6only = net->family == AF_INET6 ? 1 : 0;
      ::setsockopt(sock->fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only ? &one : &zero,
                   sizeof(int));
    }
    if (::bind(sock->fd, at.sa(), at.len()) != 0 ||
        ::listen(sock->fd, SOMAXCONN) != 0) {
      last = errno_error(cat(what0, " ", at.to_string()), errno);
      sock->close_once();
      continue;
    }
    sock->local = family == AF_UNIX ? at : sock_name(sock->fd, false);
    if (family == AF_UNIX && address[0] != '@') {
      sock->unlink_path = std::string(address);
    }
    return Listener(std::move(*s));
  }
  return last;
}

absl::StatusOr<Conn> Listener::accept() {
  Socket* s = s_.get();
  Op op(s);
  if (absl::Status st = op.start("accept"); !st.ok()) return st;
  goro::Mutex& mu = s->rmu;
  std::lock_guard<goro::Mutex> g(mu);
  for (;;) {
    if (PollErr e = pi::check(s->pd, Mode::kRead); e != PollErr::kNone) {
      return poll_error(cat("accept ", s->desc()), e);
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const int fd = ::accept4(s->fd, reinterpret_cast<sockaddr*>(&ss), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      absl::StatusOr<pi::PollDesc*> pd = pi::open(fd);
      if (!pd.ok()) {
        ::close(fd);
        return absl::Status(pd.status().code(), cat("accept ", s->desc(), ": ",
                                                    pd.status().message()));
      }
      auto c = std::make_shared<Socket>();
      c->fd = fd;
      c->pd = *pd;
      c->net = s->net;
      c->tcp = s->tcp;
      c->local = sock_name(fd, false);
      c->remote = Addr::from(reinterpret_cast<sockaddr*>(&ss), len);
      if (c->tcp) {
        set_nodelay(fd);
        c->loopback_key = pi::loopback_register(c->pd, c->local, c->remote);
      }
      return Conn(std::move(c));
    }
    const int e = errno;
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e == EAGAIN) {
      if (PollErr w = pi::wait(s->pd, Mode::kRead); w != PollErr::kNone) {
        return poll_error(cat("accept ", s->desc()), w);
      }
      continue;
    }
    return errno_error(cat("accept ", s->desc()), e);
  }
}

std::string Listener::addr() const {
  return s_ != nullptr ? s_->local.to_string() : "";
}

absl::Status Listener::close() {
  if (s_ == nullptr) return absl::FailedPreconditionError("close: no socket");
  if (!s_->close_once()) return closed_error(cat("close ", s_->desc()));
  return absl::OkStatus();
}

absl::Status Listener::set_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/true, /*write=*/true);
}

// --- Conn -------------------------------------------------------------------

absl::StatusOr<std::size_t> Conn::read(std::span<char> buf) {
  Socket* s = s_.get();
  Op op(s);
  if (absl::Status st = op.start("read"); !st.ok()) return st;
  std::lock_guard<goro::Mutex> g(s->rmu);
  if (PollErr e = pi::check(s->pd, Mode::kRead); e != PollErr::kNone) {
    return poll_error(cat("read ", s->desc()), e);
  }
  if (buf.empty()) return std::size_t{0};
  for (;;) {
    const ssize_t n = ::read(s->fd, buf.data(), buf.size());
    if (n >= 0) {
      if (n > 0) pi::on_read(s->pd, static_cast<std::size_t>(n));
      return static_cast<std::size_t>(n);
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      if (PollErr w = pi::wait(s->pd, Mode::kRead); w != PollErr::kNone) {
        return poll_error(cat("read ", s->desc()), w);
      }
      continue;
    }
    return errno_error(cat("read ", s->desc()), e);
  }
}

IoResult Conn::read_full(std::span<char> buf) {
  IoResult r;
  while (r.n < buf.size()) {
    absl::StatusOr<std::size_t> n = read(buf.subspan(r.n));
    if (!n.ok()) {
      r.status = n.status();
      return r;
    }
    if (*n == 0) {
      r.status = make_error(absl::StatusCode::kOutOfRange,
                            r.n == 0 ? "EOF" : "unexpected EOF", "eof");
      return r;
    }
    r.n += *n;
  }
  return r;
}

IoResult Conn::write(std::string_view data) {
  IoResult r;
  Socket* s = s_.get();
  Op op(s);
  if (absl::Status st = op.start("write"); !st.ok()) {
    r.status = st;
    return r;
  }
  std::lock_guard<goro::Mutex> g(s->wmu);
  for (;;) {
    if (PollErr e = pi::check(s->pd, Mode::kWrite); e != PollErr::kNone) {
      r.status = poll_error(cat("write ", s->desc()), e);
      return r;
    }
    if (r.n == data.size() && !data.empty()) return r;
    const ssize_t n =
        ::send(s->fd, data.data() + r.n, data.size() - r.n, MSG_NOSIGNAL);
    if (n >= 0) {
      r.n += static_cast<std::size_t>(n);
      if (n > 0) pi::on_written(s->pd, static_cast<std::size_t>(n));
      if (r.n == data.size()) return r;
      continue;
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      if (PollErr w = pi::wait(s->pd, Mode::kWrite); w != PollErr::kNone) {
        r.status = poll_error(cat("write ", s->desc()), w);
        return r;
      }
      continue;
    }
    r.status = errno_error(cat("write ", s->desc()), e);
    return r;
  }
}

absl::Status Conn::close() {
  if (s_ == nullptr) return absl::FailedPreconditionError("close: no socket");
  if (!s_->close_once()) return closed_error(cat("close ", s_->desc()));
  return absl::OkStatus();
}

absl::Status Conn::close_write() {
  Op op(s_.get());
  if (absl::Status st = op.start("close_write"); !st.ok()) return st;
  if (::shutdown(s_->fd, SHUT_WR) != 0) {
    return errno_error(cat("close_write ", s_->desc()), errno);
  }
  return absl::OkStatus();
}

absl::Status Conn::set_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/true, /*write=*/true);
}

absl::Status Conn::set_read_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/true, /*write=*/false);
}

absl::Status Conn::set_write_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/false, /*write=*/true);
}

std::string Conn::local_addr() const {
  return s_ != nullptr ? s_->local.to_string() : "";
}

std::string Conn::remote_addr() const {
  return s_ != nullptr ? s_->remote.to_string() : "";
}

absl::Status Conn::set_no_delay(bool on) {
  Op op(s_.get());
  if (absl::Status st = op.start("set no delay"); !st.ok()) return st;
  if (!s_->tcp) return absl::OkStatus();
  const int v = on ? 1 : 0;
  if (::setsockopt(s_->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) != 0) {
    return errno_error(cat("set no delay ", s_->desc()), errno);
  }
  return absl::OkStatus();
}

// --- PacketConn
// ---------------------------------------------------------------

absl::StatusOr<PacketConn> listen_packet(std::string_view network,
                                         std::string_view address) {
  const std::string what0 = cat("listen ", network);
  absl::StatusOr<Network> net = parse_network("listen", network, true);
  if (!net.ok()) return net.status();
  const std::string what = cat(what0, " ", address);
  if (runtime_internal::runtime_epoch() == 0) {
    return absl::FailedPreconditionError(
        cat(what, ": no goro runtime is running"));
  }
  absl::StatusOr<HostPort> hp = split_host_port(what0, address);
  if (!hp.ok()) return hp.status();
  absl::StatusOr<std::vector<Addr>> r =
      resolve(*net, *hp, true, 0, nullptr, what);
  if (!r.ok()) return r.status();
  absl::Status last;
  for (const Addr& at : *r) {
    const int family = at.sa()->sa_family;
    absl::StatusOr<std::shared_ptr<Socket>> s =
        new_socket(family, SOCK_DGRAM, net->name, what);
    if (!s.ok()) return s.status();
    Socket* sock = s->get();
    if (family == AF_INET6) {
      const int v6only = net->family == AF_INET6 ? 1 : 0;
      ::setsockopt(sock->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(int));
    }
    if (::bind(sock->fd, at.sa(), at.len()) != 0) {
      last = errno_error(cat(what0, " ", at.to_string()), errno);
      sock->close_once();
      continue;
    }
    sock->local = sock_name(sock->fd, false);
    return PacketConn(std::move(*s));
  }
  return last;
}

absl::StatusOr<std::pair<std::size_t, Addr>> PacketConn::read_from(
    std::span<char> buf) {
  Socket* s = s_.get();
  Op op(s);
  if (absl::Status st = op.start("read"); !st.ok()) return st;
  std::lock_guard<goro::Mutex> g(s->rmu);
  for (;;) {
    if (PollErr e = pi::check(s->pd, Mode::kRead); e != PollErr::kNone) {
      return poll_error(cat("read ", s->desc()), e);
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const ssize_t n = ::recvfrom(s->fd, buf.data(), buf.size(), 0,
                                 reinterpret_cast<sockaddr*>(&ss), &len);
    if (n >= 0) {
      return std::make_pair(static_cast<std::size_t>(n),
                            Addr::from(reinterpret_cast<sockaddr*>(&ss), len));
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      if (PollErr w = pi::wait(s->pd, Mode::kRead); w != PollErr::kNone) {
        return poll_error(cat("read ", s->desc()), w);
      }
      continue;
    }
    return errno_error(cat("read ", s->desc()), e);
  }
}

IoResult PacketConn::write_to(std::string_view data, const Addr& to) {
  IoResult r;
  Socket* s = s_.get();
  Op op(s);
  if (absl::Status st = op.start("write"); !st.ok()) {
    r.status = st;
    return r;
  }
  std::lock_guard<goro::Mutex> g(s->wmu);
  const std::string what =
      cat("write ", s->net, " ", s->local.to_string(), "->", to.to_string());
  for (;;) {
    if (PollErr e = pi::check(s->pd, Mode::kWrite); e != PollErr::kNone) {
      r.status = poll_error(what, e);
      return r;
    }
    const ssize_t n = ::sendto(s->fd, data.data(), data.size(), MSG_NOSIGNAL,
                               to.sa(), to.len());
    if (n >= 0) {
      r.n = static_cast<std::size_t>(n);
      return r;
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      if (PollErr w = pi::wait(s->pd, Mode::kWrite); w != PollErr::kNone) {
        r.status = poll_error(what, w);
        return r;
      }
      continue;
    }
    r.status = errno_error(what, e);
    return r;
  }
}

Addr PacketConn::local_addr() const {
  return s_ != nullptr ? s_->local : Addr();
}

absl::Status PacketConn::close() {
  if (s_ == nullptr) return absl::FailedPreconditionError("close: no socket");
  if (!s_->close_once()) return closed_error(cat("close ", s_->desc()));
  return absl::OkStatus();
}

absl::Status PacketConn::set_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/true, /*write=*/true);
}

absl::Status PacketConn::set_read_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/true, /*write=*/false);
}

absl::Status PacketConn::set_write_deadline(Deadline t) {
  return set_deadlines(s_.get(), t, /*read=*/false, /*write=*/true);
}

absl::StatusOr<Addr> Addr::parse(std::string_view host_port) {
  absl::StatusOr<HostPort> hp = split_host_port("parse", host_port);
  if (!hp.ok()) return hp.status();
  std::optional<Addr> a = numeric(hp->host, hp->port);
  if (!a) {
    return addr_error("parse", host_port, "not a numeric IP address");
  }
  return *a;
}

}  // namespace goro::net
