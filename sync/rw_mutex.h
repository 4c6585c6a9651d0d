// Copyright goro authors.
//
// goro::RWMutex: a reader/writer lock for fibers, Go's sync.RWMutex.
//
//   goro::RWMutex mu;
//   { std::shared_lock<goro::RWMutex> r(mu); read(table); }   // many readers
//   { std::lock_guard<goro::RWMutex> w(mu); write(table); }   // one writer
//
// Any number of readers or one writer. Satisfies the standard Lockable and
// SharedLockable requirements. Fibers park; plain threads block.
//
//   operation         | unlocked | read-locked          | write-locked
//   ------------------+----------+----------------------+------------------
//   lock()            | takes it | waits for readers    | waits
//   try_lock()        | true     | false                | false
//   unlock()          | INVALID  | INVALID              | releases
//   lock_shared()     | takes it | takes it (*)         | waits
//   try_lock_shared() | true     | true (*)             | false
//   unlock_shared()   | INVALID  | releases one reader  | INVALID
//
// (*) Writer preference, as in Go: once a writer is waiting in lock(), new
// readers wait until it has had its turn, so writers do not starve. Hence a
// reader must not lock_shared() recursively (it can deadlock against a
// waiting writer). INVALID operations print "goro: fatal error: ..." and
// abort.
//
// Memory ordering: everything done before unlock() is visible after the next
// lock() or lock_shared() returns; everything a reader did before
// unlock_shared() is visible to the writer whose lock() comes next.
//
// Cost: lock_shared/unlock_shared are one atomic add each when no writer is
// involved; lock/unlock add a goro::Mutex and two atomic adds.

#ifndef GORO_SYNC_RW_MUTEX_H_
#define GORO_SYNC_RW_MUTEX_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "sync/internal/sema.h"
#include "sync/mutex.h"

namespace goro {

class ABSL_LOCKABLE RWMutex {
 public:
  RWMutex() = default;
  RWMutex(const RWMutex&) = delete;
  RWMutex& operator=(const RWMutex&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION();
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true);
  void unlock() ABSL_UNLOCK_FUNCTION();

  void lock_shared() ABSL_SHARED_LOCK_FUNCTION() {
    // acquire: pairs with the writer's unlock.
    if (reader_count_.fetch_add(1, std::memory_order_acquire) + 1 < 0) {
      // A writer is pending.
      reader_sem_.acquire(false, runtime_internal::WaitReason::kRWMutexRLock);
    }
  }
  bool try_lock_shared() ABSL_SHARED_TRYLOCK_FUNCTION(true);
  void unlock_shared() ABSL_UNLOCK_FUNCTION() {
    const std::int32_t r =
        reader_count_.fetch_sub(1, std::memory_order_release) - 1;
    if (r < 0) unlock_shared_slow(r);
  }

 private:
  static constexpr std::int32_t kMaxReaders = 1 << 30;

  void unlock_shared_slow(std::int32_t r);

  Mutex w_;  // held by the writer, and by a writer waiting for readers
  sync_internal::Sema writer_sem_;  // the writer waits for readers to leave
  sync_internal::Sema reader_sem_;  // readers wait for the writer
  // Readers holding or waiting; minus kMaxReaders while a writer is pending.
  std::atomic<std::int32_t> reader_count_{0};
  // Readers the pending writer still waits for.
  std::atomic<std::int32_t> reader_wait_{0};
};

}  // namespace goro

#endif  // GORO_SYNC_RW_MUTEX_H_
