// Copyright goro authors.
//
// Counting the pthread mutexes a fiber holds, so that async preemption never
// parks a fiber that holds an OS-level lock (std::mutex, std::shared_mutex's
// writer side is a rwlock and not counted, any pthread_mutex_t): another
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

LockFn real_lock = nullptr;
LockFn real_trylock = nullptr;
LockFn real_unlock = nullptr;
TimedFn real_timedlock = nullptr;

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
}

// Runs before main and before any static constructor of the program (but a
// lock taken earlier by another library's constructor resolves lazily).
__attribute__((constructor(101))) void init() { resolve(); }

#define GORO_TEXT __attribute__((section("goro_text"), noinline))

GORO_TEXT void held(int delta) {
  runtime_internal::M* m = runtime_internal::current_m_signal_safe();
  if (m != nullptr && m->curg != nullptr) {
    m->curg->os_locks += delta;
    if (m->curg->os_locks < 0) m->curg->os_locks = 0;  // unlock by another
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

GORO_TEXT int pthread_mutex_unlock(pthread_mutex_t* mu) {
  if (goro::preempt_internal::real_unlock == nullptr) {
    goro::preempt_internal::resolve();
  }
  int r = goro::preempt_internal::real_unlock(mu);
  if (r == 0) held(-1);
  return r;
}

}  // extern "C"
