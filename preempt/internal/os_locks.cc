// Copyright goro authors.
//
// Counting the pthread mutexes and rwlocks a fiber holds, so that async
// preemption never parks a fiber that holds an OS-level lock (std::mutex,
// std::shared_mutex, any pthread_mutex_t or pthread_rwlock_t): another
// fiber of the same thread blocking on that lock would block the thread, and
// the holder could never run again to release it.
//
// How: the program's executable defines pthread_mutex_lock, _trylock,
// _timedlock and _unlock; the dynamic linker binds every caller in the
// process (libstdc++'s inline std::mutex code included) to these, and they
// forward to the C library's through dlsym(RTLD_NEXT). The count is per fiber
// and only its own thread touches it. The functions live in goro_text, so a
// SIGURG landing between the lock and the count is refused.
//
// Not counted: locks taken inside the C library through its private entry
// points (malloc's arena locks, stdio's FILE locks) -- those run in libc
// text, where the handler refuses anyway, and are released before libc
// returns. pthread_cond_wait re-locks internally: the count stays balanced.

#include <dlfcn.h>
#include <pthread.h>
#include <time.h>

#include "runtime/internal/scheduler.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::preempt_internal {
namespace {

using LockFn = int (*)(pthread_mutex_t*);
using TimedFn = int (*)(pthread_mutex_t*, const struct timespec*);
using RwFn = int (*)(pthread_rwlock_t*);
using RwTimedFn = int (*)(pthread_rwlock_t*, const struct timespec*);

LockFn real_lock = nullptr;
LockFn real_trylock = nullptr;
LockFn real_unlock = nullptr;
TimedFn real_timedlock = nullptr;
RwFn real_rdlock = nullptr;
RwFn real_wrlock = nullptr;
RwFn real_tryrdlock = nullptr;
RwFn real_trywrlock = nullptr;
RwFn real_rwunlock = nullptr;
RwTimedFn real_timedrdlock = nullptr;
RwTimedFn real_timedwrlock = nullptr;

void resolve() {
  // dlsym does not take pthread_mutex_lock (it uses the loader's internal
  // lock), so this cannot recurse.
  real_lock = reinterpret_cast<LockFn>(dlsym(RTLD_NEXT, "pthread_mutex_lock"));
  real_trylock =
      reinterpret_cast<LockFn>(dlsym(RTLD_NEXT, "pthread_mutex_trylock"));
  real_unlock =
      reinterpret_cast<LockFn>(dlsym(RTLD_NEXT, "pthread_mutex_unlock"));
  real_timedlock =
      reinterpret_cast<TimedFn>(dlsym(RTLD_NEXT, "pthread_mutex_timedlock"));
  real_rdlock =
      reinterpret_cast<RwFn>(dlsym(RTLD_NEXT, "pthread_rwlock_rdlock"));
  real_wrlock =
      reinterpret_cast<RwFn>(dlsym(RTLD_NEXT, "pthread_rwlock_wrlock"));
  real_tryrdlock =
      reinterpret_cast<RwFn>(dlsym(RTLD_NEXT, "pthread_rwlock_tryrdlock"));
  real_trywrlock =
      reinterpret_cast<RwFn>(dlsym(RTLD_NEXT, "pthread_rwlock_trywrlock"));
  real_rwunlock =
      reinterpret_cast<RwFn>(dlsym(RTLD_NEXT, "pthread_rwlock_unlock"));
  real_timedrdlock = reinterpret_cast<RwTimedFn>(
      dlsym(RTLD_NEXT, "pthread_rwlock_timedrdlock"));
  real_timedwrlock = reinterpret_cast<RwTimedFn>(
      dlsym(RTLD_NEXT, "pthread_rwlock_timedwrlock"));
}

// Runs before main and before any static constructor of the program (but a
// lock taken earlier by another library's constructor resolves lazily).
__attribute__((constructor(101))) void init() { resolve(); }

GORO_TEXT void held(int delta) {
  runtime_internal::M* m = runtime_internal::current_m_signal_safe();
  runtime_internal::Fiber* f = m != nullptr ? m->curg() : nullptr;
  if (f != nullptr) {
    f->os_locks += delta;
    if (f->os_locks < 0) f->os_locks = 0;  // unlock by another
  }
}

}  // namespace
}  // namespace goro::preempt_internal

using goro::preempt_internal::held;

extern "C" {

GORO_TEXT int pthread_mutex_lock(pthread_mutex_t* mu) {
  if (goro::preempt_internal::real_lock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_lock(mu);
  if (r == 0) held(1);
  return r;
}

GORO_TEXT int pthread_mutex_trylock(pthread_mutex_t* mu) {
  if (goro::preempt_internal::real_trylock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_trylock(mu);
  if (r == 0) held(1);
  return r;
}

GORO_TEXT int pthread_mutex_timedlock(pthread_mutex_t* mu,
                                      const struct timespec* t) {
  if (goro::preempt_internal::real_timedlock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_timedlock(mu, t);
  if (r == 0) held(1);
  return r;
}

// Reader-writer locks (std::shared_mutex, std::shared_timed_mutex): a
// preempted holder would block -- or make EDEADLK -- another fiber of the
// same thread that takes the lock.
#define GORO_RW_WRAPPER(name, fn, delta)         \
  GORO_TEXT int name(pthread_rwlock_t* rw) {     \
    if (goro::preempt_internal::fn == nullptr) { \
      goro::preempt_internal::resolve();         \
    }                                            \
    int r = goro::preempt_internal::fn(rw);      \
    if (r == 0) held(delta);                     \
    return r;                                    \
  }
GORO_RW_WRAPPER(pthread_rwlock_rdlock, real_rdlock, 1)
GORO_RW_WRAPPER(pthread_rwlock_wrlock, real_wrlock, 1)
GORO_RW_WRAPPER(pthread_rwlock_tryrdlock, real_tryrdlock, 1)
GORO_RW_WRAPPER(pthread_rwlock_trywrlock, real_trywrlock, 1)
GORO_RW_WRAPPER(pthread_rwlock_unlock, real_rwunlock, -1)
#undef GORO_RW_WRAPPER

GORO_TEXT int pthread_rwlock_timedrdlock(pthread_rwlock_t* rw,
                                         const struct timespec* t) {
  if (goro::preempt_internal::real_timedrdlock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_timedrdlock(rw, t);
  if (r == 0) held(1);
  return r;
}

GORO_TEXT int pthread_rwlock_timedwrlock(pthread_rwlock_t* rw,
                                         const struct timespec* t) {
  if (goro::preempt_internal::real_timedwrlock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_timedwrlock(rw, t);
  if (r == 0) held(1);
  return r;
}

GORO_TEXT int pthread_mutex_unlock(pthread_mutex_t* mu) {
  if (goro::preempt_internal::real_unlock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_unlock(mu);
  if (r == 0) held(-1);
  return r;
}

}  // extern "C"
