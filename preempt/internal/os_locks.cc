// Copyright goro authors.
//
// Counting the state the OS holds for a thread on behalf of a fiber, so that
// async preemption never parks a fiber while it holds any of it. If it did,
// another fiber of the same thread reaching the same state would block (or
// spin) the thread, and the holder -- pinned to that thread after an async
// preemption -- could never run again to release it. Counted per fiber in
// Fiber::os_locks, which the SIGURG handler reads (kRefusedOsLock):
//
//   * every pthread lock entry point glibc 2.36 exports: pthread_mutex_lock,
//     _trylock, _timedlock, _clocklock, _unlock; pthread_rwlock_rdlock,
//     _wrlock, _tryrdlock, _trywrlock, _timedrdlock, _timedwrlock,
//     _clockrdlock, _clockwrlock, _unlock; pthread_spin_lock, _trylock,
//     _unlock. (libstdc++ 12: std::mutex and std::recursive_mutex use lock/
//     trylock/unlock, std::timed_mutex::try_lock_for/_until clocklock,
//     std::shared_mutex rwlock rd/wr/try, std::shared_timed_mutex's timed
//     calls clockrdlock/clockwrlock.) A robust mutex acquired with
//     EOWNERDEAD is held too;
//   * C11 <threads.h> mutexes (mtx_lock, mtx_trylock, mtx_timedlock,
//     mtx_unlock): glibc implements them with its private pthread entry
//     points, which the ones above do not see;
//   * a function-local static being initialised: __cxa_guard_acquire
//     returns 1 when the caller must run the initialiser, which then ends
//     with __cxa_guard_release (or __cxa_guard_abort if it throws); it
//     returns 0, and nothing follows, when the static is already
//     initialised. Another fiber of the same thread reaching the static
//     meanwhile would wait on a futex in __cxa_guard_acquire;
//   * one-time initialisation: pthread_once (and std::call_once, which
//     libstdc++ 12 builds on pthread_once through __gthread_once) and C11
//     call_once are counted for their whole call, including the init
//     routine; a second caller with the same flag waits on a futex.
//
// How, for the C library's functions (pthread_*, mtx_*, call_once): the
// program's executable defines them; every caller in the program binds to
// those definitions (libstdc++'s inline std::mutex code compiled into the
// program, and libstdc++'s own code, which is linked into the program too:
// -static-libstdc++, bench/README.md "Start-up"), and so does every shared
// object through the dynamic linker (a libstdc++.so, where one is used, calls
// them through its PLT). They forward to the next definition, found with
// dlsym(RTLD_NEXT): the C library's, or a sanitizer's interceptor in
// between.
//
// For libstdc++'s guard functions (__cxa_guard_*), which are in the program
// itself when libstdc++ is linked statically, dlsym finds nothing to forward
// to: every goro link wraps them instead (-Wl,--wrap=__cxa_guard_acquire and
// the same for _release and _abort; //preempt's linkopts, goro.pc,
// goroConfig.cmake). The linker then sends every call in the program --
// libstdc++'s own calls included -- to __wrap___cxa_guard_*, defined here,
// and __real___cxa_guard_* reaches libstdc++'s definition (libstdc++.a's, or
// libstdc++.so's -- or a sanitizer's interceptor -- where libstdc++ is
// shared, as under the sanitizers). Without the flags the program does not
// link (__real___cxa_guard_acquire is undefined). Not counted: guard calls
// made by a shared object the program loads (they bind to that object's
// libstdc++.so); a fiber preempted inside such a library's static
// initialiser can stall another fiber of its thread until sysmon frees the
// thread's pinned fibers (docs/preemption.md, "Held OS state").
//
// The count is per fiber and only its own thread touches it. The wrappers
// live in goro_text, so a SIGURG landing between the forward and the count
// is refused; one landing inside the real function is refused too (denied
// code).
//
// Not counted: locks taken inside the C library through its private entry
// points (malloc's arena locks, stdio's FILE locks, the loader lock) --
// those run in libc text, where the handler refuses anyway, and are released
// before libc returns (dl_iterate_phdr's callback is the exception: the
// frame check refuses it). pthread_cond_wait re-locks internally: the count
// stays balanced. The __pthread_mutex_lock-style aliases glibc still
// exports are compat symbols (version GLIBC_2.2.5 only) for binaries linked
// against glibc < 2.34's libpthread; they cannot be linked against today and
// are not interposed.

#include <cxxabi.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "preempt/internal/preempt.h"
#include "runtime/internal/scheduler.h"
#include "runtime/internal/scheduler_internal.h"

// C11 <threads.h> types, without the header (its names clash with C++'s in
// a C++ file): mtx_t is only ever handled by pointer; once_flag is glibc's
// __once_flag.
struct GoroC11Mtx;
extern "C" {
int mtx_lock(GoroC11Mtx* m);
int mtx_trylock(GoroC11Mtx* m);
int mtx_timedlock(GoroC11Mtx* m, const struct timespec* t);
int mtx_unlock(GoroC11Mtx* m);
void call_once(__once_flag* flag, void (*func)(void));
}

namespace goro::preempt_internal {
namespace {

// The next definition of each interposed function. Written by resolve()
// before main (the constructor below) or at the first interposed call before
// that, possibly by several threads at once with the same values.
struct Real {
  decltype(&::pthread_mutex_lock) mutex_lock;
  decltype(&::pthread_mutex_trylock) mutex_trylock;
  decltype(&::pthread_mutex_timedlock) mutex_timedlock;
  decltype(&::pthread_mutex_clocklock) mutex_clocklock;
  decltype(&::pthread_mutex_unlock) mutex_unlock;
  decltype(&::pthread_rwlock_rdlock) rwlock_rdlock;
  decltype(&::pthread_rwlock_wrlock) rwlock_wrlock;
  decltype(&::pthread_rwlock_tryrdlock) rwlock_tryrdlock;
  decltype(&::pthread_rwlock_trywrlock) rwlock_trywrlock;
  decltype(&::pthread_rwlock_timedrdlock) rwlock_timedrdlock;
  decltype(&::pthread_rwlock_timedwrlock) rwlock_timedwrlock;
  decltype(&::pthread_rwlock_clockrdlock) rwlock_clockrdlock;
  decltype(&::pthread_rwlock_clockwrlock) rwlock_clockwrlock;
  decltype(&::pthread_rwlock_unlock) rwlock_unlock;
  decltype(&::pthread_spin_lock) spin_lock;
  decltype(&::pthread_spin_trylock) spin_trylock;
  decltype(&::pthread_spin_unlock) spin_unlock;
  decltype(&::mtx_lock) c11_mtx_lock;
  decltype(&::mtx_trylock) c11_mtx_trylock;
  decltype(&::mtx_timedlock) c11_mtx_timedlock;
  decltype(&::mtx_unlock) c11_mtx_unlock;
  decltype(&::pthread_once) once;
  decltype(&::call_once) c11_call_once;
};
Real real;
bool resolved = false;

template <typename Fn>
void find(Fn& slot, const char* name) {
  // dlsym takes the loader's internal lock, not pthread_mutex_lock, and
  // initialises no function-local static: this cannot recurse.
  slot = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  if (slot == nullptr) {
    // Nothing to forward to: the program cannot work. (No stdio: it may
    // take the very locks being resolved.)
    static const char kMsg[] = "goro: os_locks: dlsym(RTLD_NEXT) failed\n";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
    std::abort();
  }
}

void resolve() {
  find(real.mutex_lock, "pthread_mutex_lock");
  find(real.mutex_trylock, "pthread_mutex_trylock");
  find(real.mutex_timedlock, "pthread_mutex_timedlock");
  find(real.mutex_clocklock, "pthread_mutex_clocklock");
  find(real.mutex_unlock, "pthread_mutex_unlock");
  find(real.rwlock_rdlock, "pthread_rwlock_rdlock");
  find(real.rwlock_wrlock, "pthread_rwlock_wrlock");
  find(real.rwlock_tryrdlock, "pthread_rwlock_tryrdlock");
  find(real.rwlock_trywrlock, "pthread_rwlock_trywrlock");
  find(real.rwlock_timedrdlock, "pthread_rwlock_timedrdlock");
  find(real.rwlock_timedwrlock, "pthread_rwlock_timedwrlock");
  find(real.rwlock_clockrdlock, "pthread_rwlock_clockrdlock");
  find(real.rwlock_clockwrlock, "pthread_rwlock_clockwrlock");
  find(real.rwlock_unlock, "pthread_rwlock_unlock");
  find(real.spin_lock, "pthread_spin_lock");
  find(real.spin_trylock, "pthread_spin_trylock");
  find(real.spin_unlock, "pthread_spin_unlock");
  find(real.c11_mtx_lock, "mtx_lock");
  find(real.c11_mtx_trylock, "mtx_trylock");
  find(real.c11_mtx_timedlock, "mtx_timedlock");
  find(real.c11_mtx_unlock, "mtx_unlock");
  find(real.once, "pthread_once");
  find(real.c11_call_once, "call_once");
  __atomic_store_n(&resolved, true, __ATOMIC_RELEASE);
}

// Runs before main and before any static constructor of the program (but a
// lock taken earlier by another library's constructor resolves lazily).
__attribute__((constructor(101))) void init() { resolve(); }

GORO_TEXT const Real& fns() {
  if (!__atomic_load_n(&resolved, __ATOMIC_ACQUIRE)) resolve();
  return real;
}

GORO_TEXT void held(int delta) {
  runtime_internal::M* m = runtime_internal::current_m_signal_safe();
  runtime_internal::Fiber* f = m != nullptr ? m->curg() : nullptr;
  if (f != nullptr) {
    f->os_locks += delta;
    if (f->os_locks < 0) f->os_locks = 0;  // unlock by another
  }
}

// Each wrapper forwards, then counts by the real call's result `r`, which it
// returns unchanged. Every lock entry point reports success as 0 (C11's
// thrd_success too); only a robust pthread mutex also returns EOWNERDEAD,
// acquired from an owner that died (the caller now owns it).
GORO_TEXT inline int count_lock(int r) {
  if (r == 0 || r == EOWNERDEAD) held(1);
  return r;
}
GORO_TEXT inline int count_unlock(int r) {
  if (r == 0) held(-1);
  return r;
}

// Counts a one-time initialisation for the whole call, also when the init
// routine throws (pthread_once and call_once let the exception through and
// reset the flag).
struct HeldScope {
  HeldScope() { held(1); }
  ~HeldScope() { held(-1); }
  HeldScope(const HeldScope&) = delete;
  HeldScope& operator=(const HeldScope&) = delete;
};

}  // namespace

// std::call_once (libstdc++ 12, <mutex>) stores the callable's address in
// std::__once_callable and a trampoline in std::__once_call, then calls
// pthread_once(flag, __once_proxy), which calls through them. The stores
// are inline in the program, before the pthread_once call that the count
// covers: a fiber preempted in between would find them overwritten -- or
// cleared, by the destructor of another fiber's call_once on the same
// thread -- and run that fiber's callable or call a null pointer. So they
// are saved and restored across an asynchronous preemption, as errno is
// (this also makes them right on the new thread with preempt_migrate).
// Each access computes the thread's address afresh (not inlined into the
// caller across the switch).
__attribute__((noinline)) OnceThreadLocals save_once_thread_locals() {
#ifdef _GLIBCXX_HAVE_TLS
  return {std::__once_callable, std::__once_call};
#else
  return {nullptr, nullptr};
#endif
}

__attribute__((noinline)) void restore_once_thread_locals(
    const OnceThreadLocals& saved) {
#ifdef _GLIBCXX_HAVE_TLS
  std::__once_callable = saved.callable;
  std::__once_call = saved.call;
#else
  (void)saved;
#endif
}

}  // namespace goro::preempt_internal

using goro::preempt_internal::count_lock;
using goro::preempt_internal::count_unlock;
using goro::preempt_internal::fns;
using goro::preempt_internal::held;
using goro::preempt_internal::HeldScope;

extern "C" {

// --- pthread mutexes --------------------------------------------------------

GORO_TEXT int pthread_mutex_lock(pthread_mutex_t* mu) noexcept {
  return count_lock(fns().mutex_lock(mu));
}

GORO_TEXT int pthread_mutex_trylock(pthread_mutex_t* mu) noexcept {
  return count_lock(fns().mutex_trylock(mu));
}

GORO_TEXT int pthread_mutex_timedlock(
    pthread_mutex_t* __restrict mu,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().mutex_timedlock(mu, t));
}

GORO_TEXT int pthread_mutex_clocklock(
    pthread_mutex_t* __restrict mu, clockid_t clock,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().mutex_clocklock(mu, clock, t));
}

GORO_TEXT int pthread_mutex_unlock(pthread_mutex_t* mu) noexcept {
  return count_unlock(fns().mutex_unlock(mu));
}

// --- pthread rwlocks (std::shared_mutex, std::shared_timed_mutex) -----------

GORO_TEXT int pthread_rwlock_rdlock(pthread_rwlock_t* rw) noexcept {
  return count_lock(fns().rwlock_rdlock(rw));
}

GORO_TEXT int pthread_rwlock_wrlock(pthread_rwlock_t* rw) noexcept {
  return count_lock(fns().rwlock_wrlock(rw));
}

GORO_TEXT int pthread_rwlock_tryrdlock(pthread_rwlock_t* rw) noexcept {
  return count_lock(fns().rwlock_tryrdlock(rw));
}

GORO_TEXT int pthread_rwlock_trywrlock(pthread_rwlock_t* rw) noexcept {
  return count_lock(fns().rwlock_trywrlock(rw));
}

GORO_TEXT int pthread_rwlock_timedrdlock(
    pthread_rwlock_t* __restrict rw,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().rwlock_timedrdlock(rw, t));
}

GORO_TEXT int pthread_rwlock_timedwrlock(
    pthread_rwlock_t* __restrict rw,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().rwlock_timedwrlock(rw, t));
}

GORO_TEXT int pthread_rwlock_clockrdlock(
    pthread_rwlock_t* __restrict rw, clockid_t clock,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().rwlock_clockrdlock(rw, clock, t));
}

GORO_TEXT int pthread_rwlock_clockwrlock(
    pthread_rwlock_t* __restrict rw, clockid_t clock,
    const struct timespec* __restrict t) noexcept {
  return count_lock(fns().rwlock_clockwrlock(rw, clock, t));
}

GORO_TEXT int pthread_rwlock_unlock(pthread_rwlock_t* rw) noexcept {
  return count_unlock(fns().rwlock_unlock(rw));
}

// --- pthread spin locks -----------------------------------------------------
// A preempted holder would make another fiber of its thread spin forever.

GORO_TEXT int pthread_spin_lock(pthread_spinlock_t* sl) noexcept {
  return count_lock(fns().spin_lock(sl));
}

GORO_TEXT int pthread_spin_trylock(pthread_spinlock_t* sl) noexcept {
  return count_lock(fns().spin_trylock(sl));
}

GORO_TEXT int pthread_spin_unlock(pthread_spinlock_t* sl) noexcept {
  return count_unlock(fns().spin_unlock(sl));
}

// --- C11 mutexes (thrd_success is 0) ----------------------------------------

GORO_TEXT int mtx_lock(GoroC11Mtx* m) {
  return count_lock(fns().c11_mtx_lock(m));
}

GORO_TEXT int mtx_trylock(GoroC11Mtx* m) {
  return count_lock(fns().c11_mtx_trylock(m));
}

GORO_TEXT int mtx_timedlock(GoroC11Mtx* m, const struct timespec* t) {
  return count_lock(fns().c11_mtx_timedlock(m, t));
}

GORO_TEXT int mtx_unlock(GoroC11Mtx* m) {
  return count_unlock(fns().c11_mtx_unlock(m));
}

// --- One-time initialisation ------------------------------------------------

// Not noexcept: the init routine may throw (std::call_once passes a
// callable's exception through pthread_once).
GORO_TEXT int pthread_once(pthread_once_t* once, void (*routine)(void)) {
  HeldScope scope;
  return fns().once(once, routine);
}

GORO_TEXT void call_once(__once_flag* flag, void (*func)(void)) {
  HeldScope scope;
  fns().c11_call_once(flag, func);
}

// Function-local statics, through the linker's --wrap (see the top). acquire
// may throw (recursive initialisation).
int __real___cxa_guard_acquire(__cxxabiv1::__guard* g);
void __real___cxa_guard_release(__cxxabiv1::__guard* g) noexcept;
void __real___cxa_guard_abort(__cxxabiv1::__guard* g) noexcept;

GORO_TEXT int __wrap___cxa_guard_acquire(__cxxabiv1::__guard* g) {
  const int r = __real___cxa_guard_acquire(g);
  if (r != 0) held(1);  // 0: already initialised, no release follows
  return r;
}

GORO_TEXT void __wrap___cxa_guard_release(__cxxabiv1::__guard* g) noexcept {
  __real___cxa_guard_release(g);
  held(-1);
}

GORO_TEXT void __wrap___cxa_guard_abort(__cxxabiv1::__guard* g) noexcept {
  __real___cxa_guard_abort(g);
  held(-1);
}

}  // extern "C"
