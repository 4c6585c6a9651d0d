// Copyright goro authors.
//
// The socket behind every goro::net handle (Conn, Listener, PacketConn
// share one by shared_ptr) and an operation's reference to it. Not for
// users: include "net/net.h".

#ifndef GORO_NET_INTERNAL_SOCKET_H_
#define GORO_NET_INTERNAL_SOCKET_H_

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "net/internal/loopback.h"
#include "net/internal/poll.h"
#include "net/internal/util.h"
#include "net/net.h"
#include "runtime/internal/park.h"
#include "sync/mutex.h"

namespace goro::net::net_detail {

namespace pi = goro::net_internal;
using impl::cat;

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
  // Its entry among in-process loopback ends waiting for their peer
  // (loopback.h), or "".
  std::string loopback_key;

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
    if (pd != nullptr) {
      pi::loopback_forget(loopback_key, pd);
      pi::close(pd);
    }
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
    if (!s_->incref()) return impl::closed_error(cat(op, " ", s_->desc()));
    held_ = true;
    if (s_->pd->epoch != runtime_internal::runtime_epoch()) {
      return impl::ended_error(cat(op, " ", s_->desc()));
    }
    return absl::OkStatus();
  }

 private:
  Socket* s_;
  bool held_ = false;
};

}  // namespace goro::net::net_detail

#endif  // GORO_NET_INTERNAL_SOCKET_H_
