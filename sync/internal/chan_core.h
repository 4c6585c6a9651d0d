// Copyright goro authors.
//
// ChanCore: the type-erased channel behind goro::Chan<T> (Go's hchan). The
// element type is known only through an ElemOps table, so one non-template
// implementation (chan_core.cc) serves every Chan<T> and select's mix of
// element types. Internal to sync/; users want sync/chan.h.
//
// Invariants (as Go's chan.go):
//   (C1) At least one of sendq_ and recvq_ is empty, except briefly when one
//        fiber's select is queued on both sides of the same unbuffered
//        channel.
//   (C2) Buffered: if recvq_ is non-empty, the buffer is empty (count_ == 0).
//   (C3) Buffered: if sendq_ is non-empty, the buffer is full.
//   (C4) count_ <= cap_; buffer slots [recvx_, recvx_ + count_) (mod cap_)
//        hold constructed elements, the other slots are raw storage.
//   (C5) closed_ goes from false to true once, under lock_; after that
//        nothing is queued on sendq_ or recvq_ and nothing joins them.
//
// Lock: lock_ (a SpinLock: preemption disabled while held) guards every
// field except the atomics read by the lock-free fast paths, which are
// written only under lock_. Never ready() a fiber while holding lock_ if it
// can be avoided: the wake happens after unlock, and after the last access to
// anything the woken fiber may free (its Waiter is on its stack).

#ifndef GORO_SYNC_INTERNAL_CHAN_CORE_H_
#define GORO_SYNC_INTERNAL_CHAN_CORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>

#include "absl/base/thread_annotations.h"
#include "sync/internal/spin_lock.h"
#include "sync/internal/waiter.h"

namespace goro {

// ChanClosed is thrown by a send on a closed channel (also by a send that was
// parked when the channel closed, and by a select whose chosen send case
// found the channel closed), and by closing a closed channel.
class ChanClosed : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace sync_internal {

// How to move and destroy elements of one type.
struct ElemOps {
  std::size_t size;
  std::size_t stride;  // size rounded up to the alignment
  std::size_t align;
  bool trivial;  // memcpy moves, destroy is a no-op
  void (*move_construct)(void* dst, void* src);  // dst is raw storage
  void (*destroy)(void* p);
};

template <typename T>
inline constexpr ElemOps kElemOps = {
    sizeof(T),
    (sizeof(T) + alignof(T) - 1) / alignof(T) * alignof(T),
    alignof(T),
    std::is_trivially_copyable_v<T>&& std::is_trivially_destructible_v<T>,
    [](void* dst, void* src) {
      ::new (dst) T(std::move(*static_cast<T*>(src)));
    },
    [](void* p) { static_cast<T*>(p)->~T(); },
};

class SelectCore;

class ChanCore {
 public:
  enum class Recv { kWouldBlock, kReceived, kClosed };

  // create makes a channel with one reference. Throws std::invalid_argument
  // for a negative capacity, std::bad_alloc.
  static ChanCore* create(std::int64_t capacity, const ElemOps* ops);

  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() {
    // acq_rel: the last owner sees every other owner's writes before freeing.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy();
  }

  // send moves *src into the channel. Blocks (parks) if `block`, else returns
  // false when it would block. Throws ChanClosed.
  bool send(void* src, bool block);
  // recv moves a value into the raw storage `dst` (kReceived), or reports
  // kClosed (closed and drained) or kWouldBlock (only if !block).
  Recv recv(void* dst, bool block);
  // close closes; throws ChanClosed if already closed.
  void close();

  std::size_t size() const { return count_.load(std::memory_order_relaxed); }
  std::size_t capacity() const { return cap_; }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

 private:
  friend class SelectCore;

  ChanCore(std::size_t cap, const ElemOps* ops, unsigned char* buf)
      : cap_(cap), ops_(ops), buf_(buf) {}
  void destroy();

  // Lock-free peeks for the non-blocking fast paths (see chan_core.cc).
  bool full_relaxed() const {
    if (cap_ == 0) return recvq_.empty_relaxed();
    return count_.load(std::memory_order_relaxed) == cap_;
  }
  bool empty_relaxed() const {
    if (cap_ == 0) return sendq_.empty_relaxed();
    return count_.load(std::memory_order_relaxed) == 0;
  }

  void move_elem(void* dst, void* src) const {
    if (ops_->trivial) {
      // Word-sized values (the common case: ints, pointers, small structs)
      // are copied inline; a call into libc's memcpy would cost more than
      // the rest of an uncontended send.
      switch (ops_->size) {
        case 4:
          std::memcpy(dst, src, 4);
          return;
        case 8:
          std::memcpy(dst, src, 8);
          return;
        case 16:
          std::memcpy(dst, src, 16);
          return;
        default:
          std::memcpy(dst, src, ops_->size);
          return;
      }
    } else {
      ops_->move_construct(dst, src);
    }
  }
  void destroy_elem(void* p) const {
    if (!ops_->trivial) ops_->destroy(p);
  }
  void* slot(std::size_t i) const { return buf_ + i * ops_->stride; }

  // The operations below run with lock_ held and leave it held.
  // send_to hands *src to the dequeued receiver w.
  void send_to(Waiter* w, void* src) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // recv_from takes a value for dst from the dequeued sender w (from the
  // buffer's head, refilled with w's value, when buffered).
  void recv_from(Waiter* w, void* dst) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void buf_put(void* src) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void buf_take(void* dst) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // park_unlock parks the caller (recorded in `self`) and releases lock_.
  void park_unlock(Waiter* self) ABSL_UNLOCK_FUNCTION(lock_);

  std::atomic<std::int64_t> refs_{1};
  const std::size_t cap_;
  const ElemOps* const ops_;
  unsigned char* const buf_;
  SpinLock lock_;
  // Written under lock_, read lock-free by the fast paths.
  std::atomic<std::size_t> count_{0};
  std::atomic<bool> closed_{false};
  std::size_t sendx_ ABSL_GUARDED_BY(lock_) = 0;
  std::size_t recvx_ ABSL_GUARDED_BY(lock_) = 0;
  WaitQueue sendq_ ABSL_GUARDED_BY(lock_);
  WaitQueue recvq_ ABSL_GUARDED_BY(lock_);
};

}  // namespace sync_internal
}  // namespace goro

#endif  // GORO_SYNC_INTERNAL_CHAN_CORE_H_
