// Copyright goro authors.

#include "net/internal/loopback.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "runtime/internal/mutex.h"

namespace goro::net_internal {
namespace {

bool is_loopback(const net::Addr& a) {
  if (a.empty()) return false;
  const sockaddr* sa = a.sa();
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
           in6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

// The family, port and address of a (canonical: no flow label, no scope,
// no padding), so that both ends spell one address the same way.
void append_addr(std::string* out, const net::Addr& a) {
  const sockaddr* sa = a.sa();
  out->push_back(static_cast<char>(sa->sa_family));
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out->append(reinterpret_cast<const char*>(&in->sin_port), 2);
    out->append(reinterpret_cast<const char*>(&in->sin_addr), 4);
  } else {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out->append(reinterpret_cast<const char*>(&in6->sin6_port), 2);
    out->append(reinterpret_cast<const char*>(&in6->sin6_addr), 16);
  }
}

std::string key_of(const net::Addr& first, const net::Addr& second) {
  std::string k;
  k.reserve(38);
  append_addr(&k, first);
  append_addr(&k, second);
  return k;
}

// Guards g_waiting: sockets registered and not yet linked, by key
// (local, remote). A descriptor found here is open: its owner removes it
// (loopback_forget) before recycling it, under this lock.
runtime_internal::Mutex g_mu;
absl::flat_hash_map<std::string, PollDesc*>& waiting()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_mu) {
  static auto* m = new absl::flat_hash_map<std::string, PollDesc*>();
  return *m;
}
std::atomic<std::uint64_t> g_links{0};
std::atomic<bool> g_linking{true};

}  // namespace

std::string loopback_register(PollDesc* pd, const net::Addr& local,
                              const net::Addr& remote) {
  if (!g_linking.load(std::memory_order_relaxed) || !is_loopback(remote) ||
      local.empty() || local.sa()->sa_family != remote.sa()->sa_family) {
    return "";
  }
  std::string key = key_of(local, remote);
  const std::string reverse = key_of(remote, local);
  runtime_internal::MutexLock l(&g_mu);
  auto& w = waiting();
  if (auto it = w.find(reverse); it != w.end()) {
    link_peers(pd, it->second);
    w.erase(it);
    g_links.fetch_add(1, std::memory_order_relaxed);
    return "";
  }
  w[key] = pd;
  return key;
}

void loopback_forget(const std::string& key, PollDesc* pd) {
  if (key.empty()) return;
  runtime_internal::MutexLock l(&g_mu);
  auto& w = waiting();
  if (auto it = w.find(key); it != w.end() && it->second == pd) w.erase(it);
}

std::uint64_t loopback_links() {
  return g_links.load(std::memory_order_relaxed);
}

void loopback_set_linking(bool on) {
  g_linking.store(on, std::memory_order_relaxed);
}

}  // namespace goro::net_internal
