// Copyright goro authors.
//
// What the files of goro::net share: building its errors (errors.cc), the
// network names, address parsing and name resolution (addr.cc), used by the
// sockets (net.cc). Not for users: include "net/net.h".

#ifndef GORO_NET_INTERNAL_UTIL_H_
#define GORO_NET_INTERNAL_UTIL_H_

#include <netdb.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "net/internal/poll.h"
#include "net/net.h"

namespace goro::net::impl {

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

inline absl::string_view asv(std::string_view v) {
  return {v.data(), v.size()};
}

// --- errors.cc: every error carries its kind as a payload ("closed",
// "timeout", "errno:N", ...), which is_closed/is_temporary read.
absl::Status make_error(absl::StatusCode code, std::string msg,
                        std::string_view kind);
// "what: connection refused", the code from absl::ErrnoToStatus.
absl::Status errno_error(std::string_view what, int e);
absl::Status closed_error(std::string_view what);   // is_closed
absl::Status timeout_error(std::string_view what);  // is_timeout
absl::Status ended_error(std::string_view what);    // run has returned
absl::Status poll_error(std::string_view what, net_internal::PollErr e);
// A deadline as CLOCK_MONOTONIC ns: 0 for none, -1 for long past.
std::int64_t to_ns(Deadline t);

// --- addr.cc
struct Network {
  std::string name;        // as given: "tcp", "tcp4", "udp6", "unix"
  int family = AF_UNSPEC;  // AF_UNSPEC: IPv4 or IPv6
  int type = SOCK_STREAM;
};
absl::StatusOr<Network> parse_network(std::string_view op,
                                      std::string_view network, bool packet);
absl::Status addr_error(std::string_view what, std::string_view address,
                        std::string_view why);
struct HostPort {
  std::string host;
  int port = 0;
};
// Go's SplitHostPort, and a numeric port.
absl::StatusOr<HostPort> split_host_port(std::string_view what,
                                         std::string_view a);
// A numeric IP, or nullopt if `host` is not one.
std::optional<Addr> numeric(const std::string& host, int port);
// The addresses to try for host:port on `net`. passive: for listen (an
// empty host is the wildcard); else an empty host is the local system.
// Names are looked up with getaddrinfo inside goro::blocking, until
// deadline_ns (0: none) or until ctx (may be null) is done.
absl::StatusOr<std::vector<Addr>> resolve(const Network& net,
                                          const HostPort& hp, bool passive,
                                          std::int64_t deadline_ns,
                                          const Context* ctx,
                                          const std::string& what);
absl::StatusOr<Addr> unix_addr(std::string_view what, std::string_view path);

// For tests only: when set, name lookups call it instead of ::getaddrinfo,
// so that a test can make a lookup slow, or count lookups in flight,
// deterministically and without a DNS server (tests/net/resolve_test.cc:
// the dial timeout covers resolution; at most 64 lookups at once). Whatever
// it returns is freed with ::freeaddrinfo, so it must come from
// ::getaddrinfo. Null in programs; one relaxed load per lookup.
using GetaddrinfoFn = int (*)(const char* host, const char* service,
                              const addrinfo* hints, addrinfo** res);
extern std::atomic<GetaddrinfoFn> g_test_getaddrinfo;

}  // namespace goro::net::impl

#endif  // GORO_NET_INTERNAL_UTIL_H_
