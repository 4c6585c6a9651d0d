// Copyright goro authors.
//
// goro::Mutex: a mutual-exclusion lock for fibers, Go's sync.Mutex.
//
//   goro::Mutex mu;
//   int counter ABSL_GUARDED_BY(mu) = 0;
//   goro::go([&] {
//     std::lock_guard<goro::Mutex> l(mu);   // or std::unique_lock, scoped_lock
//     ++counter;
//   });
//
// A fiber that cannot take the lock parks (its OS thread runs other fibers);
// a plain thread blocks on a futex. Mutex satisfies the standard Lockable
// requirements (lock, try_lock, unlock).
//
// States and operations:
//
//   operation   | unlocked          | locked (by anyone)
//   ------------+-------------------+----------------------------------------
//   lock()      | takes it          | parks until it is handed over / free
//   try_lock()  | takes it, true    | false, at once
//   unlock()    | INVALID: aborts   | releases; wakes one waiter if any
//
// As in Go, a Mutex is not tied to a fiber: one fiber may lock it and
// another unlock it. It is not recursive: locking it again from the holder
// deadlocks that fiber.
//
// Fairness (Go's two modes). Normal mode: waiters queue FIFO, but a woken
// waiter competes with fibers arriving now (which are running already and
// usually win); a woken waiter that loses goes back to the front of the
// queue. That is fast under contention. A waiter that fails to get the lock
// for more than 1 ms switches the mutex to starvation mode: unlock() hands
// ownership straight to the first waiter (and yields so it runs at once);
// arriving fibers do not spin or barge, they queue at the back. The mutex
// returns to normal mode when the waiter that took it is the last one or
// waited less than 1 ms. So no fiber waits much longer than the queue ahead
// of it needs.
//
// Memory ordering: everything a fiber did before unlock() is visible to the
// fiber whose lock() or successful try_lock() takes the mutex next.
//
// Errors: unlock() of an unlocked Mutex prints
// "goro: fatal error: unlock of unlocked goro::Mutex" and aborts (as Go's
// fatal error; it would corrupt the lock state otherwise).
//
// Destruction: only when unlocked and with no waiters.
//
// Cost: uncontended lock/unlock are one compare-and-swap and one atomic add.
// Contended, lock() spins briefly (4 rounds of 30 PAUSEs) while the holder
// is running, then parks; unlock() then takes an internal SpinLock to wake
// one waiter.

#ifndef GORO_SYNC_MUTEX_H_
#define GORO_SYNC_MUTEX_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "sync/internal/sema.h"

namespace goro {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // lock takes the mutex, parking the fiber until it can.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    std::int32_t zero = 0;
    // cas-acquire: pairs with unlock's release.
    if (state_.compare_exchange_strong(zero, kLocked, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      return;
    }
    lock_slow();
  }

  // try_lock takes the mutex if that needs no waiting; never parks.
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    std::int32_t old = state_.load(std::memory_order_relaxed);
    for (;;) {
      if (old & (kLocked | kStarving)) return false;
      if (state_.compare_exchange_weak(old, old | kLocked,
                                       std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return true;
      }
    }
  }

  // unlock releases the mutex. Precondition: it is locked (by any fiber).
  void unlock() ABSL_UNLOCK_FUNCTION() {
    // release: publishes the critical section to the next holder.
    const std::int32_t s =
        state_.fetch_sub(kLocked, std::memory_order_release) - kLocked;
    if (s != 0) unlock_slow(s);
  }

 private:
  // state_ bits, as Go's sync.Mutex.
  static constexpr std::int32_t kLocked = 1;
  static constexpr std::int32_t kWoken = 2;  // a woken waiter is running
  static constexpr std::int32_t kStarving = 4;
  static constexpr int kWaiterShift = 3;  // the rest: number of waiters

  void lock_slow();
  void unlock_slow(std::int32_t s);

  std::atomic<std::int32_t> state_{0};
  sync_internal::Sema sema_;
};

}  // namespace goro

#endif  // GORO_SYNC_MUTEX_H_
