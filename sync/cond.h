// Copyright goro authors.
//
// goro::Cond: a condition variable for fibers, used with goro::Mutex (Go's
// sync.Cond; the interface of std::condition_variable_any).
//
//   goro::Mutex mu;
//   goro::Cond cv;
//   std::deque<Job> q ABSL_GUARDED_BY(mu);
//   // consumer
//   std::unique_lock<goro::Mutex> l(mu);
//   cv.wait(l, [&] { return !q.empty(); });
//   Job j = std::move(q.front()); q.pop_front();
//   // producer
//   { std::lock_guard<goro::Mutex> l(mu); q.push_back(job); }
//   cv.signal();
//
// Guarantees:
//   * wait(l) atomically releases l's mutex and parks; it re-locks it before
//     returning. No wake-up is lost: a signal() or broadcast() that happens
//     after wait() released the mutex wakes it (Go's ticket-based notify
//     list).
//   * signal() wakes the longest-waiting fiber, if any; broadcast() wakes
//     every fiber waiting at the time of the call.
//   * No spurious wake-ups, but another fiber may take the mutex first and
//     change the state: check the condition in a loop, or use the predicate
//     form.
//   * Memory ordering: the mutex provides it (what was written under the
//     mutex before signal is visible after wait re-locks it).
//   * signal/broadcast may be called with or without the mutex held, from
//     any fiber or thread.
//
// Errors: wait() with a unique_lock that does not own its mutex throws
// std::logic_error.
//
// Cost: wait is one atomic add plus one SpinLock acquisition and a park;
// signal/broadcast take the SpinLock once and ready() each woken waiter.

#ifndef GORO_SYNC_COND_H_
#define GORO_SYNC_COND_H_

#include <atomic>
#include <cstdint>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "sync/internal/spin_lock.h"
#include "sync/internal/waiter.h"
#include "sync/mutex.h"

namespace goro {

class Cond {
 public:
  Cond() = default;
  Cond(const Cond&) = delete;
  Cond& operator=(const Cond&) = delete;

  // wait releases l's mutex, parks until signalled, and re-locks it.
  void wait(std::unique_lock<Mutex>& l);

  // wait(l, pred) is `while (!pred()) wait(l);`.
  template <typename Pred>
  void wait(std::unique_lock<Mutex>& l, Pred pred) {
    while (!pred()) wait(l);
  }

  void signal();     // wakes one waiter (notify_one)
  void broadcast();  // wakes all waiters (notify_all)
  void notify_one() { signal(); }
  void notify_all() { broadcast(); }

 private:
  // Tickets, as Go's notifyList: a waiter takes ticket wait_++ before it
  // releases the mutex; notify_ is the next ticket to be woken. A waiter
  // whose ticket is below notify_ when it gets to queue was already
  // notified and does not park.
  std::atomic<std::uint64_t> wait_{0};
  sync_internal::SpinLock lock_;
  std::uint64_t notify_ ABSL_GUARDED_BY(lock_) = 0;
  sync_internal::WaitQueue waiters_ ABSL_GUARDED_BY(lock_);
};

}  // namespace goro

#endif  // GORO_SYNC_COND_H_
