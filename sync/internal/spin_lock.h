// Copyright goro authors.
//
// SpinLock: the internal lock of every sync/ structure (channels, WaitGroup,
// Mutex's wait list). Most users want goro::Mutex instead.
//
// Right for critical sections of a few dozen instructions that never block:
// it spins, then yields the OS thread. Held with preemption disabled (the
// holder's thread counts it in no_preempt), so a holder is never parked by
// async preemption while a thread on the same P spins on it. May be held
// across park() and released by the park commit (the count belongs to the
// thread, and the commit runs on the same thread).
//
// SpinLockGuard (below) is its scoped guard; use it rather than
// std::lock_guard, which the thread-safety analysis cannot see through.
//
// Invariant: locked_ is true iff some thread holds the lock.
// Ordering: lock() acquires, unlock() releases; TSan sees a normal lock.

#ifndef GORO_SYNC_INTERNAL_SPIN_LOCK_H_
#define GORO_SYNC_INTERNAL_SPIN_LOCK_H_

#include <sched.h>

#include <atomic>

#include "absl/base/thread_annotations.h"
#include "runtime/internal/locks.h"

namespace goro::sync_internal {

class ABSL_LOCKABLE SpinLock {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    runtime_internal::tls_locks_inc();
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    lock_slow();
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    locked_.store(false, std::memory_order_release);
    runtime_internal::tls_locks_dec();
  }

 private:
  __attribute__((noinline)) void lock_slow() {
    // Test-and-test-and-set with exponential backoff: waiters that keep
    // retrying the exchange steal the lock's cache line from the holder and
    // slow every critical section down.
    int backoff = 1;
    for (int round = 0;; ++round) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (round < 16) {
          for (int i = 0; i < backoff; ++i) __builtin_ia32_pause();
          if (backoff < 256) backoff <<= 1;
        } else {
          sched_yield();  // the holder may be descheduled by the kernel
        }
        ++round;
      }
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
    }
  }

  std::atomic<bool> locked_{false};
};

// SpinLockGuard holds a SpinLock for its scope, like std::unique_lock, but
// visible to clang's -Wthread-safety analysis (which cannot see through the
// standard guards). unlock() ends the hold early; the destructor then does
// nothing.
class ABSL_SCOPED_LOCKABLE SpinLockGuard {
 public:
  explicit SpinLockGuard(SpinLock* lock) ABSL_EXCLUSIVE_LOCK_FUNCTION(lock)
      : lock_(lock) {
    lock_->lock();
  }
  ~SpinLockGuard() ABSL_UNLOCK_FUNCTION() {
    if (lock_ != nullptr) lock_->unlock();
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    lock_->unlock();
    lock_ = nullptr;
  }
  SpinLockGuard(const SpinLockGuard&) = delete;
  SpinLockGuard& operator=(const SpinLockGuard&) = delete;

 private:
  SpinLock* lock_;
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_SPIN_LOCK_H_
