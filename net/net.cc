// Copyright goro authors.
//
// goro::net on the netpoller (net/internal/poll.h): sockets, addresses,
// name resolution, and the errors of net.h.

#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "net/internal/poll.h"
#include "runtime/blocking.h"
#include "runtime/go.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/park.h"
#include "runtime/this_fiber.h"
#include "sync/chan.h"
#include "sync/mutex.h"
#include "sync/select.h"
#include "sync/timer.h"

namespace goro::net {

namespace pi = goro::net_internal;
using pi::Mode;
using pi::PollErr;

// --- Errors -----------------------------------------------------------------

namespace {

// String building (Debian's Abseil has its own string_view, so absl::StrCat
// does not take std::string_view).
inline void append(std::string& s, std::string_view v) { s.append(v); }
inline void append(std::string& s, const char* v) { s.append(v); }
inline void append(std::string& s, const std::string& v) { s.append(v); }
inline void append(std::string& s, long long v) { s += std::to_string(v); }
inline void append(std::string& s, absl::string_view v) {
  s.append(v.data(), v.size());
}
template <typename... A>
std::string cat(const A&... a) {
  std::string s;
  (append(s, a), ...);
  return s;
}

absl::string_view asv(std::string_view v) { return {v.data(), v.size()}; }

// Every error of this package carries its kind here ("closed", "timeout",
// "errno:N"), so that the helpers do not parse messages.
constexpr char kKindUrl[] = "goro.net/kind";

absl::Status make_error(absl::StatusCode code, std::string msg,
                        std::string_view kind) {
  absl::Status st(code, msg);
  st.SetPayload(kKindUrl, absl::Cord(asv(kind)));
  return st;
}

std::string errno_text(int e) {
  char buf[128];
  const char* s = strerror_r(e, buf, sizeof(buf));  // GNU: may return static
  std::string t = s;
  if (!t.empty() && t[0] >= 'A' && t[0] <= 'Z' &&
      !(t.size() > 1 && t[1] >= 'A' && t[1] <= 'Z')) {
    t[0] = static_cast<char>(t[0] - 'A' + 'a');  // Go's lower-case style
  }
  return t;
}

absl::Status errno_error(std::string_view what, int e) {
  return make_error(absl::ErrnoToStatus(e, "").code(),
                    cat(what, ": ", errno_text(e)),
                    cat("errno:", static_cast<long long>(e)));
}

absl::Status closed_error(std::string_view what) {
  return make_error(absl::StatusCode::kFailedPrecondition,
                    cat(what, ": use of closed network connection"), "closed");
}

absl::Status timeout_error(std::string_view what) {
  return make_error(absl::StatusCode::kDeadlineExceeded,
                    cat(what, ": i/o timeout"), "timeout");
}

absl::Status ended_error(std::string_view what) {
  return make_error(absl::StatusCode::kFailedPrecondition,
                    cat(what, ": goro runtime has ended"), "ended");
}

absl::Status poll_error(std::string_view what, PollErr e) {
  switch (e) {
    case PollErr::kClosing:
      return closed_error(what);
    case PollErr::kTimeout:
      return timeout_error(what);
    case PollErr::kNoRuntime:
      return ended_error(what);
    case PollErr::kNone:
      break;
  }
  return absl::OkStatus();
}

std::optional<std::string> kind_of(const absl::Status& s) {
  absl::optional<absl::Cord> c = s.GetPayload(kKindUrl);
  if (!c) return std::nullopt;
  return std::string(*c);
}

std::int64_t to_ns(Deadline t) {
  if (t == Deadline{}) return 0;
  const std::int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch())
          .count();
  return ns > 0 ? ns : -1;  // a time before the epoch: long past
}

}  // namespace

bool is_timeout(const absl::Status& s) {
  return s.code() == absl::StatusCode::kDeadlineExceeded;
}

bool is_closed(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition &&
         kind_of(s) == "closed";
}

bool is_temporary(const absl::Status& s) {
  if (is_timeout(s)) return true;
  std::optional<std::string> k = kind_of(s);
  if (!k || k->rfind("errno:", 0) != 0) return false;
  int e = 0;
  if (!absl::SimpleAtoi(asv(std::string_view(*k).substr(6)), &e)) return false;
  switch (e) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
    case ECONNABORTED:
    case ECONNRESET:
    case EAGAIN:
    case ETIMEDOUT:
    case EINTR:
      return true;
    default:
      return false;
  }
}

// --- Addr -------------------------------------------------------------------

Addr Addr::from(const sockaddr* sa, socklen_t len) {
  Addr a;
  if (len > sizeof(a.ss_)) len = sizeof(a.ss_);
  std::memcpy(&a.ss_, sa, len);
  a.len_ = len;
  return a;
}

bool operator==(const Addr& a, const Addr& b) {
  if (a.len_ != b.len_) return false;
  if (a.len_ == 0) return true;
  const sockaddr* x = a.sa();
  if (x->sa_family != b.sa()->sa_family) return false;
  if (x->sa_family == AF_INET) {
    const auto* p = reinterpret_cast<const sockaddr_in*>(&a.ss_);
    const auto* q = reinterpret_cast<const sockaddr_in*>(&b.ss_);
    return p->sin_port == q->sin_port &&
           p->sin_addr.s_addr == q->sin_addr.s_addr;
  }
  if (x->sa_family == AF_INET6) {
    const auto* p = reinterpret_cast<const sockaddr_in6*>(&a.ss_);
    const auto* q = reinterpret_cast<const sockaddr_in6*>(&b.ss_);
    return p->sin6_port == q->sin6_port &&
           std::memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(in6_addr)) == 0 &&
           p->sin6_scope_id == q->sin6_scope_id;
  }
  return std::memcmp(&a.ss_, &b.ss_, a.len_) == 0;
}

std::string Addr::to_string() const {
  if (len_ == 0) return "";
  char buf[INET6_ADDRSTRLEN];
  switch (sa()->sa_family) {
    case AF_INET: {
      const auto* p = reinterpret_cast<const sockaddr_in*>(&ss_);
      inet_ntop(AF_INET, &p->sin_addr, buf, sizeof(buf));
      return cat(buf, ":", static_cast<long long>(ntohs(p->sin_port)));
    }
    case AF_INET6: {
      const auto* p = reinterpret_cast<const sockaddr_in6*>(&ss_);
      inet_ntop(AF_INET6, &p->sin6_addr, buf, sizeof(buf));
      return cat("[", buf, "]:", static_cast<long long>(ntohs(p->sin6_port)));
    }
    case AF_UNIX: {
      const auto* p = reinterpret_cast<const sockaddr_un*>(&ss_);
      const std::size_t n = len_ - offsetof(sockaddr_un, sun_path);
      if (n == 0) return "";
      if (p->sun_path[0] == '\0') {  // abstract: "@name", as Go prints it
        return cat("@", std::string_view(p->sun_path + 1, n - 1));
      }
      return std::string(p->sun_path, strnlen(p->sun_path, n));
    }
    default:
      return "?";
  }
}

int Addr::port() const {
  if (len_ == 0) return 0;
  if (sa()->sa_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&ss_)->sin_port);
  }
  if (sa()->sa_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss_)->sin6_port);
  }
  return 0;
}

namespace {

// --- Networks and address parsing -------------------------------------------

struct Network {
  std::string name;        // as given: "tcp", "tcp4", "udp6", "unix"
  int family = AF_UNSPEC;  // AF_UNSPEC: IPv4 or IPv6
  int type = SOCK_STREAM;
};

absl::StatusOr<Network> parse_network(std::string_view op,
                                      std::string_view network, bool packet) {
  Network n;
  n.name = std::string(network);
  const std::string_view base = packet ? "udp" : "tcp";
  n.type = packet ? SOCK_DGRAM : SOCK_STREAM;
  if (network == base) {
    n.family = AF_UNSPEC;
  } else if (network.size() == 4 && network.substr(0, 3) == base &&
             network[3] == '4') {
    n.family = AF_INET;
  } else if (network.size() == 4 && network.substr(0, 3) == base &&
             network[3] == '6') {
    n.family = AF_INET6;
  } else if (!packet && network == "unix") {
    n.family = AF_UNIX;
  } else {
    return make_error(absl::StatusCode::kInvalidArgument,
                      cat(op, " ", network, ": unknown network ", network),
                      "address");
  }
  return n;
}

absl::Status addr_error(std::string_view what, std::string_view address,
                        std::string_view why) {
  return make_error(absl::StatusCode::kInvalidArgument,
                    cat(what, ": address ", address, ": ", why), "address");
}

struct HostPort {
  std::string host;
  int port = 0;
};

// Go's SplitHostPort, and a numeric port.
absl::StatusOr<HostPort> split_host_port(std::string_view what,
                                         std::string_view a) {
  HostPort hp;
  std::string_view host, port;
  if (!a.empty() && a[0] == '[') {
    const std::size_t end = a.find(']');
    if (end == std::string_view::npos) {
      return addr_error(what, a, "missing ']' in address");
    }
    if (end + 1 >= a.size() || a[end + 1] != ':') {
      return addr_error(what, a, "missing port in address");
    }
    host = a.substr(1, end - 1);
    port = a.substr(end + 2);
  } else {
    const std::size_t colon = a.rfind(':');
    if (colon == std::string_view::npos) {
      return addr_error(what, a, "missing port in address");
    }
    host = a.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return addr_error(what, a, "too many colons in address");
    }
    port = a.substr(colon + 1);
  }
  int p = -1;
  if (port.empty() || !absl::SimpleAtoi(asv(port), &p) || p < 0 || p > 65535 ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return addr_error(what, a, "invalid port");
  }
  hp.host = std::string(host);
  hp.port = p;
  return hp;
}

Addr ipv4(const in_addr& ip, int port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr = ip;
  sin.sin_port = htons(static_cast<std::uint16_t>(port));
  return Addr::from(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
}

Addr ipv6(const in6_addr& ip, int port) {
  sockaddr_in6 sin{};
  sin.sin6_family = AF_INET6;
  sin.sin6_addr = ip;
  sin.sin6_port = htons(static_cast<std::uint16_t>(port));
  return Addr::from(reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
}

// A numeric IP, or nullopt if `host` is not one.
std::optional<Addr> numeric(const std::string& host, int port) {
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return ipv4(a4, port);
  in6_addr a6;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return ipv6(a6, port);
  return std::nullopt;
}

bool family_ok(int want, int have) { return want == AF_UNSPEC || want == have; }

// --- Name resolution
// ----------------------------------------------------------

// Lookups in flight, each holding a thread inside goro::blocking. Counted
// down inside the blocking call itself, so that a lookup whose runtime ended
// (and whose fiber never resumes) still frees its place.
constexpr int kMaxLookups = 64;
std::atomic<int> g_lookups{0};

struct Lookup {
  absl::Status status;
  std::vector<Addr> addrs;
};

Lookup getaddrinfo_lookup(const std::string& host, int port, int family,
                          int type, const std::string& what) {
  Lookup r;
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = type;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    r.status =
        rc == EAI_NONAME || rc == EAI_NODATA
            ? make_error(absl::StatusCode::kNotFound,
                         cat(what, ": lookup ", host, ": no such host"), "dns")
            : make_error(absl::StatusCode::kUnavailable,
                         cat(what, ": lookup ", host, ": ", gai_strerror(rc)),
                         "dns");
    return r;
  }
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      r.addrs.push_back(
          ipv4(reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, port));
    } else if (ai->ai_family == AF_INET6) {
      r.addrs.push_back(
          ipv6(reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, port));
    }
  }
  ::freeaddrinfo(res);
  if (r.addrs.empty()) {
    r.status = make_error(absl::StatusCode::kNotFound,
                          cat(what, ": lookup ", host, ": no suitable address"),
                          "dns");
  }
  return r;
}

// Resolves `host` (not numeric) with getaddrinfo in a background fiber
// inside goro::blocking; waits until deadline_ns (0: none) or ctx is done.
absl::StatusOr<std::vector<Addr>> lookup(const std::string& host, int port,
                                         int family, int type,
                                         std::int64_t deadline_ns,
                                         const Context* ctx,
                                         const std::string& what) {
  // Wait for a free lookup slot (polling: lookups are rare and slow).
  while (g_lookups.fetch_add(1, std::memory_order_acq_rel) >= kMaxLookups) {
    g_lookups.fetch_sub(1, std::memory_order_acq_rel);
    if (deadline_ns != 0 && runtime_internal::mono_now_ns() >= deadline_ns) {
      return timeout_error(what);
    }
    if (ctx != nullptr && !ctx->err().ok()) return ctx->err();
    goro::sleep_for(std::chrono::milliseconds(1));
  }
  Chan<Lookup> ch(1);  // buffered: the lookup never waits for us
  goro::go([ch, host, port, family, type, what]() mutable {
    Lookup r = goro::blocking([&] {
      Lookup res = getaddrinfo_lookup(host, port, family, type, what);
      g_lookups.fetch_sub(1, std::memory_order_acq_rel);
      return res;
    });
    ch.send(std::move(r));
  });
  std::optional<Lookup> got;
  if (deadline_ns == 0 && ctx == nullptr) {
    got = ch.recv();
  } else {
    Chan<TimePoint> timer;         // nil: never ready
    std::optional<goro::Timer> t;  // stopped when we return
    if (deadline_ns != 0) {
      t.emplace(std::chrono::nanoseconds(std::max<std::int64_t>(
          0, deadline_ns - runtime_internal::mono_now_ns())));
      timer = t->c();
    }
    Chan<Unit> done = ctx != nullptr ? ctx->done() : Chan<Unit>();
    absl::Status why;
    goro::select(
        recv_case(ch, [&](std::optional<Lookup> v) { got = std::move(v); }),
        recv_case(timer, [&] { why = timeout_error(what); }),
        recv_case(done, [&] { why = ctx->err(); }));
    if (!why.ok()) return why;
  }
  if (!got) return absl::InternalError("lookup: no result");
  if (!got->status.ok()) return got->status;
  return std::move(got->addrs);
}

// The addresses to try for host:port on `net`. passive: for listen (an
// empty host is the wildcard); else an empty host is the local system.
absl::StatusOr<std::vector<Addr>> resolve(const Network& net,
                                          const HostPort& hp, bool passive,
                                          std::int64_t deadline_ns,
                                          const Context* ctx,
                                          const std::string& what) {
  std::vector<Addr> out;
  if (hp.host.empty()) {
    if (passive) {
      if (net.family != AF_INET) out.push_back(ipv6(in6addr_any, hp.port));
      if (net.family != AF_INET6) {
        in_addr any{};
        any.s_addr = htonl(INADDR_ANY);
        out.push_back(ipv4(any, hp.port));
      }
    } else {
      if (net.family != AF_INET6) {
        in_addr lo{};
        lo.s_addr = htonl(INADDR_LOOPBACK);
        out.push_back(ipv4(lo, hp.port));
      }
      if (net.family != AF_INET) out.push_back(ipv6(in6addr_loopback, hp.port));
    }
    return out;
  }
  if (std::optional<Addr> a = numeric(hp.host, hp.port)) {
    if (!family_ok(net.family, a->sa()->sa_family)) {
      return make_error(
          absl::StatusCode::kInvalidArgument,
          cat(what, ": address ", hp.host, ": no suitable address"), "address");
    }
    out.push_back(*a);
    return out;
  }
  return lookup(hp.host, hp.port, net.family, net.type, deadline_ns, ctx, what);
}

absl::StatusOr<Addr> unix_addr(std::string_view what, std::string_view path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) {
    return addr_error(what, path, "invalid unix socket path");
  }
  std::memcpy(sun.sun_path, path.data(), path.size());
  if (path[0] == '@') sun.sun_path[0] = '\0';  // abstract namespace
  return Addr::from(
      reinterpret_cast<sockaddr*>(&sun),
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                             (path[0] == '@' ? 0 : 1)));
}

}  // namespace

// --- Sockets
// ------------------------------------------------------------------

namespace net_detail {

// One socket, shared by every handle. Life: created with its fd registered
// (pd); close() marks it closed (kClosed) and evicts the poll descriptor,
// which wakes parked operations; the fd is closed, and pd recycled, by
// whoever drops the last operation reference after that (kDestroyed), or by
// the destructor when the last handle goes.
struct Socket {
  int fd = -1;
  pi::PollDesc* pd = nullptr;
  std::string net;          // "tcp", "udp6", "unix", ...
  Addr local, remote;       // as bound / connected
  std::string unlink_path;  // a Unix listener's socket file
  bool tcp = false;

  // Operation references and the close state: refs * kRef | kClosed |
  // kDestroyed. acq_rel: the last reference's holder sees every other
  // holder's use of the fd before it closes it.
  static constexpr std::uint64_t kClosed = 1, kDestroyed = 2, kRef = 4;
  std::atomic<std::uint64_t> state{0};

  // One reader and one writer at a time (more are serialised): the wait
  // slots hold one waiter per direction.
  goro::Mutex rmu, wmu;

  Socket() = default;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() {
    const std::uint64_t s = state.load(std::memory_order_acquire);
    if (fd >= 0 && (s & kDestroyed) == 0) destroy();
  }

  bool incref() {
    if (state.fetch_add(kRef, std::memory_order_acquire) & kClosed) {
      decref();
      return false;
    }
    return true;
  }
  void decref() {
    const std::uint64_t s =
        state.fetch_sub(kRef, std::memory_order_acq_rel) - kRef;
    if (s == kClosed) {
      std::uint64_t expected = kClosed;
      if (state.compare_exchange_strong(expected, kClosed | kDestroyed,
                                        std::memory_order_acq_rel)) {
        destroy();
      }
    }
  }
  void destroy() {
    if (pd != nullptr) pi::close(pd);
    if (fd >= 0) ::close(fd);
    if (!unlink_path.empty()) ::unlink(unlink_path.c_str());
  }
  // close(): Go's fd.Close. Returns false if it was already closed.
  bool close_once() {
    if (!incref()) return false;
    if (state.fetch_or(kClosed, std::memory_order_acq_rel) & kClosed) {
      decref();
      return false;
    }
    pi::evict(pd);
    decref();
    return true;
  }

  std::string desc() const {
    const std::string l = local.to_string();
    const std::string r = remote.to_string();
    if (r.empty()) return cat(net, " ", l);
    return cat(net, " ", l, "->", r);
  }
};

}  // namespace net_detail

using net_detail::Socket;

namespace {

// An operation's reference to its socket (see Socket::state) and the
// runtime check of net.h ("Callers").
class Op {
 public:
  explicit Op(Socket* s) : s_(s) {}
  ~Op() {
    if (held_) s_->decref();
  }
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  absl::Status start(std::string_view op) {
    if (s_ == nullptr) {
      return absl::FailedPreconditionError(
          cat(op, ": no socket (default-constructed handle)"));
    }
    if (!s_->incref()) return closed_error(cat(op, " ", s_->desc()));
    held_ = true;
    if (s_->pd->epoch != runtime_internal::runtime_epoch()) {
      return ended_error(cat(op, " ", s_->desc()));
    }
    return absl::OkStatus();
  }

 private:
  Socket* s_;
  bool held_ = false;
};

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
  std::int64_t d = now_ns() + timeout.count();
  if (timeout.count() <= 0) d = -1;  // already passed
  if (d == -1) {
    return timeout_error(cat("dial ", network, " ", address));
  }
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
      if (c->tcp) set_nodelay(fd);
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
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), true, true);
  return absl::OkStatus();
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
    if (n >= 0) return static_cast<std::size_t>(n);
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
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), true, true);
  return absl::OkStatus();
}

absl::Status Conn::set_read_deadline(Deadline t) {
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), true, false);
  return absl::OkStatus();
}

absl::Status Conn::set_write_deadline(Deadline t) {
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), false, true);
  return absl::OkStatus();
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
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), true, true);
  return absl::OkStatus();
}

absl::Status PacketConn::set_read_deadline(Deadline t) {
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), true, false);
  return absl::OkStatus();
}

absl::Status PacketConn::set_write_deadline(Deadline t) {
  Op op(s_.get());
  if (absl::Status st = op.start("set deadline"); !st.ok()) return st;
  pi::set_deadline(s_->pd, to_ns(t), false, true);
  return absl::OkStatus();
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
