// Copyright goro authors.
//
// Addresses in goro::net: Addr, network names, parsing "host:port" as Go
// does, and name resolution (getaddrinfo inside goro::blocking).

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "net/internal/util.h"
#include "net/net.h"
#include "runtime/blocking.h"
#include "runtime/go.h"
#include "runtime/internal/futex.h"
#include "runtime/this_fiber.h"
#include "sync/chan.h"
#include "sync/select.h"
#include "sync/timer.h"

namespace goro::net {

using impl::cat;

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

namespace impl {

// --- Networks and address parsing -------------------------------------------

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

std::atomic<GetaddrinfoFn> g_test_getaddrinfo{nullptr};

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
  GetaddrinfoFn gai = g_test_getaddrinfo.load(std::memory_order_relaxed);
  if (gai == nullptr) gai = ::getaddrinfo;
  const int rc = gai(host.c_str(), nullptr, &hints, &res);
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

}  // namespace impl

}  // namespace goro::net
