// Copyright goro authors.
//
// Mutex: the runtime's own lock for short critical sections on scheduler
// paths (Sched::lock). Spins briefly, then sleeps on a futex (Drepper's
// three-state mutex): two threads on two cores hand it back and forth
// without sleeping, which a std::mutex under contention does not do.
//
// Held with asynchronous preemption disabled (the thread's goro_tls_locks
// is raised), so no fiber is preempted while holding it and no other fiber of
// the same thread can block on it forever. Releasing it never yields.
//
// Invariant: state_ == 0 unlocked; 1 locked, no sleeper; 2 locked, maybe
// sleepers. Ordering: lock() acquires, unlock() releases.

#ifndef GORO_RUNTIME_INTERNAL_MUTEX_H_
#define GORO_RUNTIME_INTERNAL_MUTEX_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/locks.h"

namespace goro::runtime_internal {

class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    tls_locks_inc();
    std::uint32_t zero = 0;
    if (state_.compare_exchange_strong(zero, 1, std::memory_order_acquire)) {
      return;
    }
    lock_slow();
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    if (state_.exchange(0, std::memory_order_release) == 2) {
      futex_wake(&state_, 1);
    }
    tls_locks_dec();
  }

 private:
  // Pauses (about 10 us here) before sleeping: a holder on the other CPU
  // usually lets go within that.
  static constexpr int kSpinPauses = 200;

  __attribute__((noinline)) void lock_slow() {
    for (int i = 0; i < kSpinPauses; ++i) {
      __builtin_ia32_pause();
      std::uint32_t zero = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_weak(zero, 1, std::memory_order_acquire)) {
        return;
      }
    }
    while (state_.exchange(2, std::memory_order_acquire) != 0) {
      futex_wait(&state_, 2, 0);
    }
  }

  std::atomic<std::uint32_t> state_{0};
};

// MutexLock holds a Mutex for its scope (see ScopedLock in locks.h).
using MutexLock = ScopedLock<Mutex>;

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_MUTEX_H_
