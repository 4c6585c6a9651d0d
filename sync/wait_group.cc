// Copyright goro authors.

#include "sync/wait_group.h"

#include <mutex>
#include <stdexcept>

#include "runtime/internal/futex.h"
#include "runtime/internal/park.h"

namespace goro {

// A parked waiter, on its own stack. Linked under lock_.
struct WaitGroup::Waiter {
  runtime_internal::Fiber* fiber;  // null: a plain thread, woken via `word`
  std::atomic<std::uint32_t> word{0};
  Waiter* next = nullptr;
};

void WaitGroup::add(int delta) {
  const std::uint64_t d = static_cast<std::uint64_t>(
      static_cast<std::int64_t>(delta) * (std::int64_t{1} << 32));
  // A compare-and-swap, not a fetch_add that would be undone on error: a
  // negative counter is never stored, so a concurrent wait() cannot see it
  // (it would park on a counter that then returns to zero without anyone
  // waking it) and a concurrent correct done() cannot fail because of it.
  // acq_rel: done() releases what the fiber wrote; the waker acquires all.
  std::uint64_t old = state_.load(std::memory_order_relaxed);
  std::int64_t v;
  do {
    v = static_cast<std::int64_t>(static_cast<std::int32_t>(old >> 32)) + delta;
    if (v < 0) throw std::logic_error("goro::WaitGroup: negative counter");
  } while (!state_.compare_exchange_weak(
      old, old + d, std::memory_order_acq_rel, std::memory_order_relaxed));
  const std::uint32_t waiters = static_cast<std::uint32_t>(old);
  if (v > 0 || waiters == 0) return;
  // The counter reached zero with waiters. No new waiter can register now
  // (wait() only registers while the counter is non-zero), and each counted
  // waiter registered under lock_, so the list holds exactly `waiters`.
  Waiter* list;
  {
    sync_internal::SpinLockGuard l(&lock_);
    list = waiters_;
    waiters_ = nullptr;
    state_.fetch_sub(waiters, std::memory_order_relaxed);
  }
  // Nothing below touches *this: a woken waiter may destroy it.
  while (list != nullptr) {
    Waiter* w = list;
    list = w->next;  // read before waking: w lives on the waiter's stack
    if (w->fiber != nullptr) {
      runtime_internal::ready(w->fiber);
    } else {
      runtime_internal::thread_wake(&w->word);
    }
  }
}

void WaitGroup::wait() {
  std::uint64_t s = state_.load(std::memory_order_acquire);
  if ((s >> 32) == 0) return;
  Waiter self;
  self.fiber = runtime_internal::current_fiber();
  lock_.lock();
  for (;;) {
    if ((s >> 32) == 0) {
      lock_.unlock();
      std::atomic_thread_fence(std::memory_order_acquire);
      return;
    }
    if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
      break;
    }
  }
  self.next = waiters_;
  waiters_ = &self;
  // ready() (or thread_wake) ordered the waker's writes before our
  // resumption; the waker acquired the counter's history with its fetch_add.
  runtime_internal::wait_unlock(self.fiber, &lock_, &self.word,
                                runtime_internal::WaitReason::kWaitGroupWait);
}

}  // namespace goro
