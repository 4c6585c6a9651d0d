// Copyright goro authors.
//
// Go's sync.Mutex (src/sync/mutex.go), line for line where possible; read
// its comments for the reasoning. The waiter queue is sync_internal::Sema.
//
// Invariants on state_ (as Go):
//   (M1) kWoken is set only while a woken waiter (or a spinner that claimed
//        it) is running towards the lock; unlock does not wake another then.
//   (M2) In starvation mode (kStarving) kLocked and kWoken are clear while
//        ownership is in flight to the first waiter: only it may take it.
//   (M3) The waiter count counts fibers queued in (or about to queue in)
//        sema_.

#include "sync/mutex.h"

#include <cstdio>
#include <cstdlib>

#include "runtime/internal/futex.h"  // mono_now_ns

namespace goro {

namespace {

constexpr std::int64_t kStarvationThresholdNs = 1000000;  // 1 ms

[[noreturn]] void fatal(const char* msg) {
  std::fprintf(stderr, "goro: fatal error: %s\n", msg);
  std::abort();
}

inline void spin_pause() {
  for (int i = 0; i < 30; ++i) __builtin_ia32_pause();
}

}  // namespace

void Mutex::lock_slow() {
  std::int64_t wait_start = 0;
  bool starving = false;
  bool awoke = false;
  int iter = 0;
  std::int32_t old = state_.load(std::memory_order_relaxed);
  for (;;) {
    // Spin while locked in normal mode, a few rounds: the holder may be
    // about to release it on another thread.
    if ((old & (kLocked | kStarving)) == kLocked && iter < 4) {
      // Claim kWoken so unlock does not wake another waiter meanwhile.
      if (!awoke && (old & kWoken) == 0 && (old >> kWaiterShift) != 0 &&
          state_.compare_exchange_weak(old, old | kWoken,
                                       std::memory_order_relaxed)) {
        awoke = true;
      }
      spin_pause();
      ++iter;
      old = state_.load(std::memory_order_relaxed);
      continue;
    }
    std::int32_t nw = old;
    // Do not try to take a starving mutex: it is handed over in FIFO order.
    if ((old & kStarving) == 0) nw |= kLocked;
    if ((old & (kLocked | kStarving)) != 0) nw += 1 << kWaiterShift;
    // Switch to starvation mode only if it is still locked (an unlock would
    // expect waiters that are not there).
    if (starving && (old & kLocked) != 0) nw |= kStarving;
    if (awoke) {
      if ((nw & kWoken) == 0) fatal("goro::Mutex: inconsistent state");
      nw &= ~kWoken;
    }
    // cas-acquire when it takes the lock.
    if (state_.compare_exchange_weak(old, nw, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      if ((old & (kLocked | kStarving)) == 0) break;  // took it
      // Waited before: back to the front of the queue.
      const bool lifo = wait_start != 0;
      if (wait_start == 0) wait_start = runtime_internal::mono_now_ns();
      sema_.acquire(lifo, runtime_internal::WaitReason::kMutexLock);
      starving = starving || runtime_internal::mono_now_ns() - wait_start >
                                 kStarvationThresholdNs;
      old = state_.load(std::memory_order_acquire);
      if ((old & kStarving) != 0) {
        // Handed to us (M2).
        if ((old & (kLocked | kWoken)) != 0 || (old >> kWaiterShift) == 0) {
          fatal("goro::Mutex: inconsistent state");
        }
        std::int32_t delta = kLocked - (1 << kWaiterShift);
        if (!starving || (old >> kWaiterShift) == 1) {
          // Leave starvation mode: we waited little, or we are the last.
          delta -= kStarving;
        }
        state_.fetch_add(delta, std::memory_order_acquire);
        break;
      }
      awoke = true;
      iter = 0;
    }
  }
}

void Mutex::unlock_slow(std::int32_t s) {
  if (((s + kLocked) & kLocked) == 0) {
    fatal("unlock of unlocked goro::Mutex");
  }
  if ((s & kStarving) == 0) {
    std::int32_t old = s;
    for (;;) {
      // Nobody to wake, or someone already took/was woken, or it starves.
      if ((old >> kWaiterShift) == 0 ||
          (old & (kLocked | kWoken | kStarving)) != 0) {
        return;
      }
      const std::int32_t nw = (old - (1 << kWaiterShift)) | kWoken;
      if (state_.compare_exchange_weak(old, nw, std::memory_order_release,
                                       std::memory_order_relaxed)) {
        sema_.release(false);
        return;
      }
    }
  }
  // Starvation mode: hand ownership to the first waiter (kLocked stays clear;
  // it sets it) and let it run now.
  sema_.release(true);
}

}  // namespace goro
