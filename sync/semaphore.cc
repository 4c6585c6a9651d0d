// Copyright goro authors.

#include "sync/semaphore.h"

#include <stdexcept>

namespace goro {

namespace {
void check_n(std::int64_t n) {
  if (n < 0) throw std::invalid_argument("goro::Semaphore: negative count");
}
}  // namespace

Semaphore::Semaphore(std::int64_t count) : count_(count) {
  if (count < 0) {
    throw std::invalid_argument("goro::Semaphore: negative initial count");
  }
}

void Semaphore::acquire(std::int64_t n) {
  check_n(n);
  lock_.lock();
  if (waiters_.empty() && count_ >= n) {
    count_ -= n;
    lock_.unlock();
    return;
  }
  sync_internal::Waiter self;
  self.init_self();
  self.ticket = static_cast<std::uint64_t>(n);
  waiters_.push_back(&self);
  runtime_internal::wait_unlock(self.fiber, &lock_, self.wake_word,
                                runtime_internal::WaitReason::kSemacquire);
  // The releaser took our n units for us.
}

bool Semaphore::try_acquire(std::int64_t n) {
  check_n(n);
  sync_internal::SpinLockGuard l(&lock_);
  if (!waiters_.empty() || count_ < n) return false;
  count_ -= n;
  return true;
}

void Semaphore::release(std::int64_t n) {
  check_n(n);
  lock_.lock();
  if (count_ > max() - n) {
    lock_.unlock();
    throw std::invalid_argument("goro::Semaphore: count overflow");
  }
  count_ += n;
  // Serve waiters in order while the head's request fits.
  sync_internal::WakeList woken;
  while (sync_internal::Waiter* w = waiters_.front()) {
    const auto want = static_cast<std::int64_t>(w->ticket);
    if (count_ < want) break;
    count_ -= want;
    waiters_.remove(w);
    woken.push(w);
  }
  lock_.unlock();
  woken.wake_all();
}

std::int64_t Semaphore::count() const {
  sync_internal::SpinLockGuard l(&lock_);
  return count_;
}

}  // namespace goro
