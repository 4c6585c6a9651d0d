// Copyright goro authors.
//
// goro::Semaphore: a counting semaphore for fibers (like Go's
// golang.org/x/sync/semaphore.Weighted, and C++20's counting_semaphore).
//
//   goro::Semaphore slots(8);          // at most 8 downloads at once
//   goro::go([&] {
//     slots.acquire();
//     download(url);
//     slots.release();
//   });
//
// The count is the number of available units. acquire(n) takes n units,
// parking until they are available; release(n) returns n units and wakes
// the waiters that can now proceed.
//
// Guarantees:
//   * FIFO: waiters are served in arrival order; a large request at the head
//     is not overtaken by smaller later ones (so it cannot starve), and
//     try_acquire fails while anyone waits.
//   * Memory ordering: everything done before release() is visible to the
//     acquire() that takes those units, after it returns.
//   * Fibers park; plain threads block.
//
// Errors (std::invalid_argument): a negative initial count, a negative n;
// release() that would overflow the count (above max()).
//
// Cost: one SpinLock acquisition per call; one ready() per woken waiter.

#ifndef GORO_SYNC_SEMAPHORE_H_
#define GORO_SYNC_SEMAPHORE_H_

#include <cstdint>
#include <limits>

#include "absl/base/thread_annotations.h"
#include "sync/internal/spin_lock.h"
#include "sync/internal/waiter.h"

namespace goro {

class Semaphore {
 public:
  // A semaphore with `count` available units (>= 0).
  explicit Semaphore(std::int64_t count);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // acquire takes n units, parking until they are available.
  void acquire(std::int64_t n = 1) ABSL_LOCKS_EXCLUDED(lock_);
  // try_acquire takes n units if available now and nobody waits.
  bool try_acquire(std::int64_t n = 1) ABSL_LOCKS_EXCLUDED(lock_);
  // release returns n units.
  void release(std::int64_t n = 1) ABSL_LOCKS_EXCLUDED(lock_);

  // The available units now (racy by nature).
  std::int64_t count() const ABSL_LOCKS_EXCLUDED(lock_);

  static constexpr std::int64_t max() {
    return std::numeric_limits<std::int64_t>::max();
  }

 private:
  mutable sync_internal::SpinLock lock_;
  std::int64_t count_ ABSL_GUARDED_BY(lock_);
  sync_internal::WaitQueue waiters_ ABSL_GUARDED_BY(lock_);  // ticket = n
};

}  // namespace goro

#endif  // GORO_SYNC_SEMAPHORE_H_
