// Copyright goro authors.
//
// Ring: the buffer of a buffered channel. A bounded multi-producer,
// multi-consumer queue of type-erased elements (Dmitry Vyukov's bounded MPMC
// queue, with a close mark), usable with or without the channel's lock.
// Internal to sync/; ChanCore is its only user.
//
// Positions. head_ and tail_ hold positions lap * one_lap_ + index, with
// index < cap_: the position after p is p + 1 or the start of the next lap,
// never a division. mark_ (a power of two above every index, one_lap_ / 2)
// is the close mark, only ever set in tail_.
//
// Stamps. Every slot starts with a stamp that says whose turn it is:
//   stamp == p      empty; the push at position p may fill it;
//   stamp == p + 1  full; filled by the push at p, the pop at p may take it.
// The pop at p leaves p + one_lap_: the same slot's push position one lap
// later. So a slot's stamp only grows, and no ABA is possible on it: a
// stamp value names one position, used once (positions are 64-bit and never
// wrap in practice: 2^64 / one_lap_ laps).
//
// An operation claims its position with a CAS on tail_ (push) or head_
// (pop), then moves the element, then publishes the slot's next stamp.
// Between the CAS and the publication it is "in flight"; an operation on the
// other end that meets an in-flight slot waits for it (spins), so the answers
// are exact: a push reports kFull only if the ring was full (tail == head +
// one lap) at one instant during the call, a pop kEmpty only if it was
// empty (head == tail). Callers keep in-flight windows short: they hold the
// runtime-lock count (no async preemption inside the window).
//
// Ordering:
//   * Stamp stores are release, stamp loads acquire: what a pusher did before
//     the push (and the element's bytes) happens before the pop that takes
//     it returns; a pop's read of a slot happens before the next lap's
//     overwrite.
//   * The CASes on head_ and tail_, the loads in empty_seq_cst() and
//     full_seq_cst(), and close() are seq_cst: ChanCore's detection of
//     parked waiters is a Dekker handshake between these and a seq_cst
//     flag in its wait queues (see chan_core.cc).
//   * close() sets the mark with a seq_cst fetch_or on tail_. A push whose
//     CAS comes later fails and reports kClosed; a pop that finds the ring
//     empty with the mark set reports kClosed and sees everything done
//     before the close.

#ifndef GORO_SYNC_INTERNAL_RING_H_
#define GORO_SYNC_INTERNAL_RING_H_

#include <sched.h>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <new>

#include "sync/internal/elem_ops.h"

namespace goro::sync_internal {

class Ring {
 public:
  enum class Status { kOk, kEmpty, kFull, kClosed };

  // The layout of the slot array for elements described by `ops`: each
  // slot is an 8-byte stamp followed by the element.
  static std::size_t slot_align(const ElemOps* ops) {
    return ops->align > 8 ? ops->align : 8;
  }
  static std::size_t slot_stride(const ElemOps* ops) {
    const std::size_t a = slot_align(ops);
    return (a + ops->size + a - 1) / a * a;
  }

  // A ring of `cap` slots in `slots`: cap * slot_stride(ops) bytes, aligned
  // to slot_align(ops), owned by the caller. cap 0 makes a ring that must
  // not be used (an unbuffered channel's).
  Ring(std::size_t cap, const ElemOps* ops, unsigned char* slots)
      : cap_(cap),
        mark_(std::bit_ceil(cap)),
        one_lap_(2 * std::bit_ceil(cap)),
        stride_(slot_stride(ops)),
        elem_off_(slot_align(ops)),
        ops_(ops),
        slots_(slots) {
    for (std::size_t i = 0; i < cap; ++i) {
      ::new (slots + i * stride_) std::atomic<std::uint64_t>(i);
    }
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // push moves *src into the ring (src stays constructed: the caller
  // destroys it). kOk, kFull, or kClosed once close() has run. Always
  // inlined (as pop): the call cost ~1.5 ns of an uncontended ~23 ns
  // send+recv pair.
  [[gnu::always_inline]] Status push(void* src) {
    std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    for (int spins = 0;; ++spins) {
      if (tail & mark_) return Status::kClosed;
      unsigned char* s = slot(tail);
      const std::uint64_t stamp = stamp_of(s).load(std::memory_order_acquire);
      if (stamp == tail) {
        if (tail_.compare_exchange_weak(tail, next(tail),
                                        std::memory_order_seq_cst,
                                        std::memory_order_relaxed)) {
          ops_->move(s + elem_off_, src);
          stamp_of(s).store(tail + 1, std::memory_order_release);
          return Status::kOk;
        }
        continue;  // the failed CAS reloaded tail
      }
      if (stamp + one_lap_ == tail + 1) {
        // The slot still holds the previous lap's element: full, unless its
        // pop is in flight (head already moved on).
        if (head_.load(std::memory_order_seq_cst) + one_lap_ == tail) {
          return Status::kFull;
        }
      }
      // A push at this position or a pop of this slot is in flight.
      backoff(spins);
      tail = tail_.load(std::memory_order_relaxed);
    }
  }

  // pop moves the oldest element into the raw storage dst. kOk, kEmpty, or
  // kClosed (empty and closed: nothing will ever arrive).
  [[gnu::always_inline]] Status pop(void* dst) {
    std::uint64_t head = head_.load(std::memory_order_relaxed);
    for (int spins = 0;; ++spins) {
      unsigned char* s = slot(head);
      const std::uint64_t stamp = stamp_of(s).load(std::memory_order_acquire);
      if (stamp == head + 1) {
        if (head_.compare_exchange_weak(head, next(head),
                                        std::memory_order_seq_cst,
                                        std::memory_order_relaxed)) {
          ops_->move(dst, s + elem_off_);
          ops_->destroy_elem(s + elem_off_);
          stamp_of(s).store(head + one_lap_, std::memory_order_release);
          return Status::kOk;
        }
        continue;
      }
      if (stamp == head) {
        // Not filled in this lap: empty, unless its push is in flight.
        const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
        if ((tail & ~mark_) == head) {
          return (tail & mark_) ? Status::kClosed : Status::kEmpty;
        }
      }
      backoff(spins);
      head = head_.load(std::memory_order_relaxed);
    }
  }

  // close sets the mark; false if it was set already.
  bool close() {
    return (tail_.fetch_or(mark_, std::memory_order_seq_cst) & mark_) == 0;
  }

  // Whether a pop would now find an element (or one in flight) -- false
  // means empty. Reads tail_ first: a push that claimed its position before
  // this read is counted (unless already popped).
  bool empty_seq_cst() const {
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst) & ~mark_;
    return tail == head_.load(std::memory_order_seq_cst);
  }
  // Whether the ring is full. Reads head_ first: a pop that claimed its
  // position before this read is counted.
  bool full_seq_cst() const {
    const std::uint64_t head = head_.load(std::memory_order_seq_cst);
    return (tail_.load(std::memory_order_seq_cst) & ~mark_) == head + one_lap_;
  }
  // Racy peeks for the non-blocking fast paths.
  bool empty_relaxed() const {
    return (tail_.load(std::memory_order_relaxed) & ~mark_) ==
           head_.load(std::memory_order_relaxed);
  }
  bool full_relaxed() const {
    return (tail_.load(std::memory_order_relaxed) & ~mark_) ==
           head_.load(std::memory_order_relaxed) + one_lap_;
  }

  // The number of elements (a snapshot: exact when nothing runs).
  std::size_t size() const {
    for (;;) {
      const std::uint64_t tail = tail_.load(std::memory_order_acquire);
      const std::uint64_t head = head_.load(std::memory_order_acquire);
      if (tail_.load(std::memory_order_acquire) != tail) continue;
      const std::uint64_t t = tail & ~mark_;
      const std::uint64_t ti = t & (mark_ - 1), hi = head & (mark_ - 1);
      if (hi < ti) return ti - hi;
      if (hi > ti) return cap_ - hi + ti;
      return t == head ? 0 : cap_;
    }
  }

  // destroy_all destroys the elements left in the ring. Only when no other
  // thread uses it.
  void destroy_all() {
    std::uint64_t head = head_.load(std::memory_order_acquire);
    const std::uint64_t tail = tail_.load(std::memory_order_acquire) & ~mark_;
    while (head != tail) {
      ops_->destroy_elem(slot(head) + elem_off_);
      head = next(head);
    }
  }

  std::size_t capacity() const { return cap_; }

 private:
  static std::atomic<std::uint64_t>& stamp_of(unsigned char* s) {
    return *std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(s));
  }
  unsigned char* slot(std::uint64_t pos) const {
    return slots_ + (pos & (mark_ - 1)) * stride_;
  }
  std::uint64_t next(std::uint64_t pos) const {
    return (pos & (mark_ - 1)) + 1 < cap_ ? pos + 1
                                          : (pos & ~(one_lap_ - 1)) + one_lap_;
  }
  // The other end's in-flight operation is a few instructions on a thread
  // that cannot be preempted by goro, but the kernel may deschedule it.
  static void backoff(int spins) {
    if (spins < 10) {
      for (int i = 0; i < (1 << spins); ++i) __builtin_ia32_pause();
    } else {
      sched_yield();
    }
  }

  // Read-only after construction.
  const std::size_t cap_;
  const std::uint64_t mark_;
  const std::uint64_t one_lap_;
  const std::size_t stride_;
  const std::size_t elem_off_;
  const ElemOps* const ops_;
  unsigned char* const slots_;
  // The two ends on cache lines of their own: producers and consumers on
  // different CPUs each keep one.
  alignas(64) std::atomic<std::uint64_t> head_{0};
  alignas(64) std::atomic<std::uint64_t> tail_{0};
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_RING_H_
