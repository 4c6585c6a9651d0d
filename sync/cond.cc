// Copyright goro authors.
//
// Go's notifyList (src/runtime/sema.go): tickets make the release of the
// user's mutex and the park one atomic step as far as signal() can tell.
//
// Invariants:
//   (N1) notify_ <= wait_; tickets in [notify_, wait_) are waiters not yet
//        notified, queued in waiters_ or about to queue.
//   (N2) waiters_ is in ticket order only approximately (a waiter may queue
//        late), so signal() searches it for ticket notify_.

#include "sync/cond.h"

#include <stdexcept>

namespace goro {

void Cond::wait(std::unique_lock<Mutex>& l) {
  if (!l.owns_lock()) {
    throw std::logic_error("goro::Cond::wait: the lock is not held");
  }
  const std::uint64_t ticket = wait_.fetch_add(1, std::memory_order_acq_rel);
  l.unlock();
  {
    sync_internal::Waiter self;
    self.init_self();
    self.ticket = ticket;
    lock_.lock();
    if (ticket < notify_) {  // notified before we queued
      lock_.unlock();
    } else {
      waiters_.push_back(&self);
      runtime_internal::wait_unlock(self.fiber, &lock_, self.wake_word,
                                    runtime_internal::WaitReason::kCondWait);
    }
  }
  l.lock();
}

void Cond::signal() {
  lock_.lock();
  if (wait_.load(std::memory_order_acquire) == notify_) {
    lock_.unlock();
    return;
  }
  const std::uint64_t t = notify_++;
  sync_internal::Waiter* found = nullptr;
  for (sync_internal::Waiter* w = waiters_.front(); w != nullptr; w = w->next) {
    if (w->ticket == t) {
      found = w;
      break;
    }
  }
  if (found != nullptr) waiters_.remove(found);
  lock_.unlock();
  if (found != nullptr) sync_internal::wake(found);
}

void Cond::broadcast() {
  lock_.lock();
  if (wait_.load(std::memory_order_acquire) == notify_) {
    lock_.unlock();
    return;
  }
  notify_ = wait_.load(std::memory_order_acquire);
  sync_internal::WakeList woken;
  while (sync_internal::Waiter* w = waiters_.dequeue()) woken.push(w);
  lock_.unlock();
  woken.wake_all();
}

}  // namespace goro
