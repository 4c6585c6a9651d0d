// Copyright goro authors.
//
// Sema: the wake-up semaphore under Mutex and RWMutex (Go's runtime sema,
// runtime_SemacquireMutex / runtime_Semrelease). Internal to sync/; users
// want goro::Semaphore.
//
// A count of tokens and a FIFO of waiters, under one SpinLock. release()
// with a waiter present hands the token straight to the first waiter (it
// never reaches the count, so nobody can barge in between); acquire() with
// `lifo` queues at the front (a Mutex waiter that was woken and lost the race
// again goes first, as in Go). Fibers park; plain threads block on a futex.
//
// Memory ordering: everything done before release() is visible to the
// acquire() that gets its token, after it returns.

#ifndef GORO_SYNC_INTERNAL_SEMA_H_
#define GORO_SYNC_INTERNAL_SEMA_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "sync/internal/spin_lock.h"
#include "sync/internal/waiter.h"

namespace goro::sync_internal {

class Sema {
 public:
  // acquire takes a token, parking until one is released.
  void acquire(bool lifo, runtime_internal::WaitReason why)
      ABSL_LOCKS_EXCLUDED(lock_);
  // release hands a token to the first waiter, or adds it to the count. With
  // `handoff` and a fiber woken, the caller yields so the waiter runs now
  // (Go's starvation-mode hand-off).
  void release(bool handoff) ABSL_LOCKS_EXCLUDED(lock_);

 private:
  SpinLock lock_;
  std::uint32_t count_ ABSL_GUARDED_BY(lock_) = 0;
  WaitQueue waiters_ ABSL_GUARDED_BY(lock_);
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_SEMA_H_
