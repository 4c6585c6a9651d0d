// Copyright goro authors.
//
// A P's local run queue: a bounded ring that one owner fills and empties and
// any other P may steal half of (Go's p.runq, runqput/runqget/runqgrab).
//
// Roles: push() and pop() are for the owner P only; steal_into() is for any
// thief. head_ is advanced by consumers (owner pop and thieves) with a CAS;
// tail_ is written only by the owner.
//
// Ordering:
//   * push stores the slot (relaxed) then tail_ with release; a consumer loads
//     tail_ with acquire before reading slots, so it sees the fiber pointer and
//     everything the producer wrote before queueing the fiber.
//   * A consumer reads slots, then CASes head_ forward with release (acq_rel
//     for a thief, which also publishes the slots it read as free); the owner
//     loads head_ with acquire before overwriting a slot, so it never reuses a
//     slot a thief is still copying.
//   * ABA: head_ and tail_ are free-running 32-bit counters. A thief whose
//     snapshot went stale (the owner popped, or another thief stole) fails its
//     CAS because head_ moved; a slot it copied can only have been overwritten
//     after head_ moved past it, so the CAS rejects such a copy. A wrap of the
//     full 2^32 between a thief's load and CAS is not a practical concern (Go
//     makes the same argument).
//   * Slots are accessed atomically (relaxed) because a thief may read a slot
//     the owner is overwriting; the CAS then fails and the read value is
//     discarded. Making that race explicit keeps ThreadSanitizer quiet and
//     the code honest.
//   * The slots are plain pointers, left uninitialised and accessed through
//     std::atomic_ref: every slot in [head_, tail_) was stored before tail_
//     covered it, and nothing reads another. An array of std::atomic would
//     be zeroed by its constructor, faulting in every page of it (8 KiB per
//     P) at each run's start, spare Ps included, whether or not it is used.

#ifndef GORO_RUNTIME_INTERNAL_RUN_QUEUE_H_
#define GORO_RUNTIME_INTERNAL_RUN_QUEUE_H_

#include <atomic>
#include <cstdint>

namespace goro::runtime_internal {

template <typename T, std::uint32_t N = 256>
class RunQueue {
  static_assert((N & (N - 1)) == 0, "capacity must be a power of two");

 public:
  static constexpr std::uint32_t kCapacity = N;

  // Owner only. Returns false when full (the caller overflows to the global
  // queue, see take_half_for_overflow).
  bool push(T* t) {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    if (tl - h >= N) return false;
    slot(tl).store(t, std::memory_order_relaxed);
    tail_.store(tl + 1, std::memory_order_release);
    return true;
  }

  // Owner only. Returns null when empty.
  T* pop() {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      std::uint32_t tl = tail_.load(std::memory_order_relaxed);
      if (tl == h) return nullptr;
      T* t = slot(h).load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_release,
                                      std::memory_order_acquire)) {
        return t;
      }
    }
  }

  // Owner only, when push() failed: claims the older half of the queue and
  // copies it to out[0..N/2). Returns how many were claimed (N/2), or 0 if a
  // thief got there first and the caller should retry push().
  std::uint32_t take_half_for_overflow(T** out) {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    std::uint32_t n = (tl - h) / 2;
    if (n != N / 2) return 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      out[i] = slot(h + i).load(std::memory_order_relaxed);
    }
    if (!head_.compare_exchange_strong(h, h + n, std::memory_order_release,
                                       std::memory_order_relaxed)) {
      return 0;
    }
    return n;
  }

  // Thief: moves half of this queue (rounded up) into `to`, which must be the
  // thief's own, empty, queue. Returns one stolen element to run now, or null.
  T* steal_into(RunQueue& to) {
    std::uint32_t to_tail = to.tail_.load(std::memory_order_relaxed);
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      std::uint32_t tl = tail_.load(std::memory_order_acquire);
      std::uint32_t n = tl - h;
      if (n == 0) return nullptr;
      if (n > N) continue;  // torn snapshot: tail_ moved under us; reload
      n -= n / 2;
      for (std::uint32_t i = 0; i < n; ++i) {
        T* t = slot(h + i).load(std::memory_order_relaxed);
        to.slot(to_tail + i).store(t, std::memory_order_relaxed);
      }
      if (head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
        // Keep the last one to run; publish the rest in the thief's queue.
        --n;
        T* run = to.slot(to_tail + n).load(std::memory_order_relaxed);
        if (n > 0) to.tail_.store(to_tail + n, std::memory_order_release);
        return run;
      }
    }
  }

  bool empty() const {
    return head_.load(std::memory_order_acquire) ==
           tail_.load(std::memory_order_acquire);
  }
  std::uint32_t size() const {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_acquire);
    return tl - h > N ? 0 : tl - h;
  }

 private:
  std::atomic_ref<T*> slot(std::uint32_t i) {
    return std::atomic_ref<T*>(slots_[i % N]);
  }

  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  static_assert(std::atomic_ref<T*>::required_alignment <= alignof(T*));
  T* slots_[N];  // not initialised: see "Ordering" above
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_RUN_QUEUE_H_
