// Copyright goro authors.

#include "sync/internal/sema.h"

#include "runtime/this_fiber.h"

namespace goro::sync_internal {

void Sema::acquire(bool lifo, runtime_internal::WaitReason why) {
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
  runtime_internal::wait_unlock(self.fiber, &lock_, self.wake_word, why);
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
