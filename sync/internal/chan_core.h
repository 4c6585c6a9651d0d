// Copyright goro authors.
//
// ChanCore: the type-erased channel behind goro::Chan<T> (Go's hchan). The
// element type is known only through an ElemOps table, so one non-template
// implementation (chan_core.cc) serves every Chan<T> and select's mix of
// element types. Internal to sync/; users want sync/chan.h.
//
// Unbuffered channels follow Go's chan.go: everything under lock_, values
// pass from stack to stack. Buffered channels keep their values in a Ring
// (ring.h), a lock-free bounded queue: a send or receive that finds no
// parked fiber to serve or to queue behind never takes the lock. Parking
// still happens under lock_, and chan_core.cc explains how the two meet.
//
// Invariants:
//   (C1) At least one of sendq_ and recvq_ is empty, except briefly when one
//        fiber's select is queued on both sides of the same unbuffered
//        channel.
//   (C2) Buffered, whenever lock_ is free and no lock-free operation is
//        between its ring operation and its wait-queue check: recvq_
//        non-empty implies the ring is empty, and sendq_ non-empty implies
//        it is full. (Go keeps this always; here the lock-free operation
//        that breaks it restores it itself: see settle().)
//   (C3) closed_ goes from false to true once, under lock_, together with
//        the ring's close mark; after that nothing joins sendq_ or recvq_,
//        and close() has emptied both.
//
// Lock: lock_ (a SpinLock: preemption disabled while held) guards the wait
// queues and every change of closed_. The ring needs no lock. Wake-ups
// happen after unlock (WakeList), and after the last access to anything the
// woken fiber may free (its Waiter is on its stack).

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
#include "runtime/internal/locks.h"
#include "sync/internal/elem_ops.h"
#include "sync/internal/ring.h"
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

  std::size_t size() const { return cap_ == 0 ? 0 : ring_.size(); }
  std::size_t capacity() const { return cap_; }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

 private:
  friend class SelectCore;

  // The outcome of an operation attempted under lock_.
  enum class Try { kDone, kWouldBlock, kClosed };

  ChanCore(std::size_t cap, const ElemOps* ops, unsigned char* slots)
      : cap_(cap), ops_(ops), ring_(cap, ops, slots) {}
  void destroy();
  static std::size_t header_size(const ElemOps* ops);
  static std::size_t alloc_align(const ElemOps* ops);

  // A racy look for the non-blocking fast paths.
  bool full_relaxed() const {
    return cap_ == 0 ? recvq_empty_relaxed() : ring_.full_relaxed();
  }

  // Lock-free peeks at the wait queues, racy by design (the fast paths, and
  // the lock-free half of the hand-shake in chan_core.cc): they read only a
  // queue's atomic first_ word, never the links lock_ guards. The analysis
  // cannot tell that word from the rest of the guarded WaitQueue, hence
  // ABSL_NO_THREAD_SAFETY_ANALYSIS on these one-liners only.
  bool sendq_empty_relaxed() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return sendq_.empty_relaxed();
  }
  bool recvq_empty_relaxed() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return recvq_.empty_relaxed();
  }
  bool sendq_empty_seq_cst() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return sendq_.empty_seq_cst();
  }
  bool recvq_empty_seq_cst() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return recvq_.empty_seq_cst();
  }

  // The lock-free operations of buffered channels (ring, then the
  // hand-shake with parked waiters: settle_unlocked() if any). Callers first
  // check that nobody is parked whom the operation must not overtake.
  // Always inlined: they are most of an uncontended send or recv.
  [[gnu::always_inline]] Ring::Status push_lock_free(void* src) {
    return ring_lock_free</*kPush=*/true>(src);
  }
  [[gnu::always_inline]] Ring::Status pop_lock_free(void* dst) {
    return ring_lock_free</*kPush=*/false>(dst);
  }
  template <bool kPush>
  [[gnu::always_inline]] Ring::Status ring_lock_free(void* p) {
    // The runtime-lock count keeps async preemption out of the ring
    // operation's in-flight window (a fiber on this M spinning on that slot
    // would wait for the preempted one).
    runtime_internal::tls_locks_inc();
    const Ring::Status st = kPush ? ring_.push(p) : ring_.pop(p);
    // A push may serve a parked receiver, a pop make room for a sender.
    const bool peers = st == Ring::Status::kOk &&
                       !(kPush ? recvq_empty_seq_cst() : sendq_empty_seq_cst());
    runtime_internal::tls_locks_dec();
    if (peers) settle_unlocked();
    return st;
  }

  bool send_unbuffered(void* src, bool block);
  Recv recv_unbuffered(void* dst, bool block);
  // Buffered: the paths under lock_.
  bool send_slow(void* src, bool block);
  Recv recv_slow(void* dst, bool block);
  // Their shared locked path (`sending` picks the operation): tries under
  // lock_ and, if the operation would block and `block`, parks in its queue
  // until a peer or close completes it. kWouldBlock only when !block.
  Try locked_op(void* elem, bool block, bool sending);

  // The operations below run with lock_ held and leave it held; fibers to
  // wake go to `wl`, for the caller to wake after unlocking.
  //
  // try_send_locked: kClosed if closed; else hands *src to a parked
  // receiver or buffers it (kDone), or kWouldBlock.
  Try try_send_locked(void* src, WakeList& wl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // try_recv_locked: takes a value from a parked sender or the buffer into
  // dst (kDone), kClosed if closed and drained, else kWouldBlock.
  Try try_recv_locked(void* dst, WakeList& wl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // queue_to_park (buffered) links `self` (waiting with `elem`) into q, the
  // registering half of the hand-shake in chan_core.cc, and returns true if
  // the caller should park; false: it unlinked self again (and may have
  // dropped lock_ to wake wl), and the caller tries again.
  bool queue_to_park(WaitQueue* q, Waiter* self, void* elem, WakeList& wl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // settle (buffered only) restores (C2): gives buffered values to parked
  // receivers and moves parked senders' values into free slots.
  void settle(WakeList& wl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // One pass of settle over one queue: completes q's waiters through the
  // ring while it can serve them (receivers while it holds values, senders
  // while it has room); returns whether any completed.
  bool serve_from_ring(WaitQueue* q, bool senders, WakeList& wl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // settle_unlocked: lock, settle, unlock, wake -- the tail of a lock-free
  // operation that found a parked waiter.
  void settle_unlocked();
  // park_unlock parks the caller (recorded in `self`) and releases lock_.
  void park_unlock(Waiter* self, runtime_internal::WaitReason why)
      ABSL_UNLOCK_FUNCTION(lock_);

  // Read-mostly: refs_ changes only when handles are copied.
  std::atomic<std::int64_t> refs_{1};
  const std::size_t cap_;
  const ElemOps* const ops_;
  // Written under lock_ (C3); read lock-free too.
  std::atomic<bool> closed_{false};
  // Buffered channels' values; its two ends have cache lines of their own.
  Ring ring_;
  // The lock and the wait queues share a line: the lock-free paths read
  // only the queues' first_ words, which change when fibers park.
  alignas(64) SpinLock lock_;
  WaitQueue sendq_ ABSL_GUARDED_BY(lock_);
  WaitQueue recvq_ ABSL_GUARDED_BY(lock_);
};

}  // namespace sync_internal
}  // namespace goro

#endif  // GORO_SYNC_INTERNAL_CHAN_CORE_H_
