// Copyright goro authors.

#include "sync/internal/sema.h"

#include "runtime/this_fiber.h"

namespace goro::sync_internal {

namespace {
bool unlock_commit(void* lock) {
  static_cast<SpinLock*>(lock)->unlock();
  return true;
}
}  // namespace

void Sema::acquire(bool lifo) {
  lock_.lock();
  if (count_ > 0) {
    --count_;
    lock_.unlock();
    return;
  }
  Waiter self;
  self.init_self();
  if (lifo) {
    waiters_.push_front(&self);
  } else {
    waiters_.push_back(&self);
  }
  if (self.fiber != nullptr) {
    runtime_internal::park(unlock_commit, &lock_);
  } else {
    lock_.unlock();
    thread_wait(self.wake_word);
  }
  // The releaser handed us its token.
}

void Sema::release(bool handoff) {
  lock_.lock();
  Waiter* w = waiters_.dequeue();
  if (w == nullptr) {
    ++count_;
    lock_.unlock();
    return;
  }
  lock_.unlock();
  const bool fiber = w->fiber != nullptr;
  wake(w);  // w is gone from here on
  if (handoff && fiber && runtime_internal::current_fiber() != nullptr) {
    goro::yield();  // the woken waiter is in runnext: it runs now
  }
}

}  // namespace goro::sync_internal
