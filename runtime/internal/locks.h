// Copyright goro authors.
//
// The thread's runtime-lock count (Go's m.locks): while it is non-zero the
// SIGURG handler never switches the thread's fiber away. Raised around every
// runtime-internal lock (Sched::lock, the sync/ spin locks) and by
// acquirem(), and held by the switcher across every context switch (the
// resumed context drops it).
//
// The counter is a thread-local int touched only by inline assembly: each
// update is a single instruction, so a signal cannot split a read from its
// write, and the address comes from %fs at the point of use, so a fiber that
// moved to another thread at a switch updates its new thread's counter (a
// compiler may not cache a thread-local address across the switch, because
// the asm does not expose one). Cost: two instructions, no call.

#ifndef GORO_RUNTIME_INTERNAL_LOCKS_H_
#define GORO_RUNTIME_INTERNAL_LOCKS_H_

#include "absl/base/thread_annotations.h"

// Defined in m.cc. Read directly only by the signal handler (which
// runs on the thread it inspects).
extern "C" __thread int goro_tls_locks
    __attribute__((tls_model("initial-exec")));

namespace goro::runtime_internal {

inline void tls_locks_inc() {
  __asm__ volatile(
      "movq goro_tls_locks@gottpoff(%%rip), %%rax\n\t"
      "incl %%fs:(%%rax)"
      :
      :
      : "rax", "cc", "memory");
}

// Returns true when the count dropped to zero.
inline bool tls_locks_dec() {
  bool zero;
  __asm__ volatile(
      "movq goro_tls_locks@gottpoff(%%rip), %%rax\n\t"
      "decl %%fs:(%%rax)\n\t"
      "sete %0"
      : "=r"(zero)
      :
      : "rax", "cc", "memory");
  return zero;
}

inline int tls_locks_get() {
  int v;
  __asm__ volatile(
      "movq goro_tls_locks@gottpoff(%%rip), %%rax\n\t"
      "movl %%fs:(%%rax), %0"
      : "=r"(v)
      :
      : "rax", "memory");
  return v;
}

// ScopedLock holds a runtime lock (Mutex, sync/'s SpinLock) for its scope,
// like std::unique_lock, but visible to clang's -Wthread-safety analysis
// (which cannot see through the standard guards). unlock() ends the hold
// early; the destructor then does nothing.
template <typename Lock>
class ABSL_SCOPED_LOCKABLE ScopedLock {
 public:
  explicit ScopedLock(Lock* lock) ABSL_EXCLUSIVE_LOCK_FUNCTION(lock)
      : lock_(lock) {
    lock_->lock();
  }
  ~ScopedLock() ABSL_UNLOCK_FUNCTION() {
    if (lock_ != nullptr) lock_->unlock();
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    lock_->unlock();
    lock_ = nullptr;
  }
  ScopedLock(const ScopedLock&) = delete;
  ScopedLock& operator=(const ScopedLock&) = delete;

 private:
  Lock* lock_;
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_LOCKS_H_
