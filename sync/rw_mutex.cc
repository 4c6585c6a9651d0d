// Copyright goro authors.
//
// Go's sync.RWMutex (src/sync/rwmutex.go).

#include "sync/rw_mutex.h"

#include <cstdio>
#include <cstdlib>

namespace goro {

namespace {
[[noreturn]] void fatal(const char* msg) {
  std::fprintf(stderr, "goro: fatal error: %s\n", msg);
  std::abort();
}
}  // namespace

void RWMutex::lock() {
  w_.lock();  // excludes other writers
  // Announce the writer to readers.
  const std::int32_t r =
      reader_count_.fetch_sub(kMaxReaders, std::memory_order_acq_rel);
  // Wait for the active readers.
  if (r != 0 && reader_wait_.fetch_add(r, std::memory_order_acq_rel) + r != 0) {
    writer_sem_.acquire(false, runtime_internal::WaitReason::kRWMutexLock);
  }
}

bool RWMutex::try_lock() {
  if (!w_.try_lock()) return false;
  std::int32_t zero = 0;
  if (!reader_count_.compare_exchange_strong(zero, -kMaxReaders,
                                             std::memory_order_acquire)) {
    w_.unlock();
    return false;
  }
  return true;
}

void RWMutex::unlock() {
  // Announce to readers there is no active writer.
  const std::int32_t r =
      reader_count_.fetch_add(kMaxReaders, std::memory_order_release) +
      kMaxReaders;
  if (r >= kMaxReaders) fatal("unlock of unlocked goro::RWMutex");
  // Unblock the readers that queued meanwhile.
  for (std::int32_t i = 0; i < r; ++i) reader_sem_.release(false);
  w_.unlock();
}

bool RWMutex::try_lock_shared() {
  std::int32_t c = reader_count_.load(std::memory_order_relaxed);
  for (;;) {
    if (c < 0) return false;
    if (reader_count_.compare_exchange_weak(c, c + 1, std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
      return true;
    }
  }
}

void RWMutex::unlock_shared_slow(std::int32_t r) {
  if (r + 1 == 0 || r + 1 == -kMaxReaders) {
    fatal("unlock_shared of unlocked goro::RWMutex");
  }
  // A writer is pending: the last departing reader lets it in.
  if (reader_wait_.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0) {
    writer_sem_.release(false);
  }
}

}  // namespace goro
