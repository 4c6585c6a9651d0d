// Copyright goro authors.
//
// WaitGroup waits for a collection of fibers to finish, like Go's
// sync.WaitGroup.
//
//   goro::WaitGroup wg;
//   for (auto& item : items) {
//     wg.add(1);
//     goro::go([&wg, &item] { process(item); wg.done(); });
//   }
//   wg.wait();  // parks this fiber until every done() has happened
//
// Guarantees:
//   * wait() returns once the counter is zero; every fiber parked in wait()
//     when the counter reaches zero is woken.
//   * Memory ordering: everything a fiber did before done() (or add()) is
//     visible to a waiter after wait() returns.
//   * Reuse: a WaitGroup may be reused once its waiters have returned; as in
//     Go, add() with a positive delta while the counter is zero must happen
//     before the wait() it is meant for.
//   * wait() may also be called from a thread that is not a fiber; it then
//     blocks that thread.
//
// Errors: a counter going negative throws std::logic_error from add() or
// done(), and the counter is left unchanged: the negative value is never
// stored, so concurrent add(), done() and wait() calls are unaffected.
//
// Destruction: a waiter may destroy the WaitGroup as soon as its wait()
// returns: the done() that woke it touches the WaitGroup no more.
//
// Cost: add/done are one compare-and-swap when nobody waits (retried while
// other add/done/wait calls change the counter); the last done() with
// waiters takes an internal lock and readies each waiter. wait() on a zero
// counter is one atomic load.

#ifndef GORO_SYNC_WAIT_GROUP_H_
#define GORO_SYNC_WAIT_GROUP_H_

#include <atomic>
#include <cstdint>

#include "sync/internal/spin_lock.h"

namespace goro {

class WaitGroup {
 public:
  WaitGroup() = default;
  WaitGroup(const WaitGroup&) = delete;
  WaitGroup& operator=(const WaitGroup&) = delete;

  // add adds `delta` (may be negative) to the counter. Any thread.
  void add(int delta);
  // done is add(-1).
  void done() { add(-1); }
  // wait parks until the counter is zero. Fibers park; other threads block.
  void wait();

  // The counter now (for diagnostics and tests; racy by nature).
  std::int64_t count() const {
    return static_cast<std::int64_t>(state_.load(std::memory_order_acquire) >>
                                     32);
  }

 private:
  struct Waiter;
  // state_: high 32 bits the counter, low 32 bits the number of waiters (as
  // Go's WaitGroup). Waiters are only added under lock_, and only removed
  // (all at once) under lock_ by the add() that brings the counter to zero.
  std::atomic<std::uint64_t> state_{0};
  sync_internal::SpinLock lock_;
  Waiter* waiters_ ABSL_GUARDED_BY(lock_) = nullptr;
};

}  // namespace goro

#endif  // GORO_SYNC_WAIT_GROUP_H_
