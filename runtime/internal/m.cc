// Copyright goro authors.
//
// The M: an OS thread that runs fibers while it holds a P. This file owns the
// thread-locals (the current M, the runtime-lock count), acquirem/releasem,
// the goro_text section, the thread's set-up and its main loop on the
// scheduler context ("g0": find_runnable, execute, repeat), and fatal().
//
// Preemption and the runtime. Runtime code that touches M or P state runs
// with the thread's runtime-lock count raised (locks.h, acquirem), and every
// context switch is made holding one count that the resumed context drops,
// so the SIGURG handler (preempt/) never switches a fiber in the middle of
// the scheduler. Functions that read the M before they can raise the count
// live in goro_text, which the handler never interrupts with a switch.

#include <cxxabi.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <new>

#include "runtime/internal/locks.h"
#include "runtime/internal/sanitizers.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {

std::atomic<Sched*> g_sched{nullptr};
std::atomic<int> g_sched_users{0};
Hooks g_hooks;

namespace {
thread_local M* tls_m __attribute__((tls_model("initial-exec"))) = nullptr;
}  // namespace

extern "C" {
extern const char __start_goro_text[];
extern const char __stop_goro_text[];
__thread int goro_tls_locks __attribute__((tls_model("initial-exec"))) = 0;
}

bool pc_in_goro_text(std::uintptr_t pc) {
  return pc >= reinterpret_cast<std::uintptr_t>(__start_goro_text) &&
         pc < reinterpret_cast<std::uintptr_t>(__stop_goro_text);
}

GORO_TEXT M* current_m() { return tls_m; }

GORO_TEXT M* acquirem() {
  M* m = tls_m;
  if (m != nullptr) tls_locks_inc();
  return m;
}

GORO_TEXT void releasem(M* m) {
  if (m == nullptr) return;
  if (tls_locks_dec()) {
    Fiber* f = m->curg();
    if (f != nullptr && f->preempt_requested.load(std::memory_order_relaxed)) {
      releasem_slow(m);
    }
  }
}

GORO_TEXT void releasem_slow(M* m) {
  // A preemption was requested while the fiber could not be preempted; honour
  // it now, at this cooperative point -- unless the fiber is in a
  // goro::NoPreempt region, inside blocking(), not on a P, or holds OS
  // state (a std::mutex, a static being initialised: Fiber::os_locks) --
  // the signal handler's rule too: switched out holding it, the fiber would
  // block every other fiber that reaches it, and their threads with them,
  // so that nothing may be left to run the holder (a hang, found under TSan
  // with this_fiber::id() called under a std::mutex). The request stays
  // set for the next cooperative point.
  Fiber* f = m->curg();
  if (f->no_preempt != 0 || f->os_locks != 0 || m->p == nullptr ||
      m->blocking_p != nullptr) {
    return;
  }
  preempt_yield(false);
}

M* current_m_signal_safe() { return tls_m; }

const char* fiber_state_name(FiberState s) {
  static constexpr const char* kNames[] = {"free", "runnable", "running",
                                           "waiting", "dead"};
  const auto i = static_cast<std::size_t>(s);
  return i < std::size(kNames) ? kNames[i] : "?";
}

[[noreturn]] void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("goro: fatal error: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

namespace {

void setup_thread(M* m) {
  tls_m = m;
  own_thread_register_for_life();  // deadlock detection: not a foreign thread
  m->eh_globals = reinterpret_cast<EhGlobals*>(abi::__cxa_get_globals());
  m->tid.store(static_cast<pid_t>(syscall(SYS_gettid)),
               std::memory_order_release);
  // Sleep to the nanosecond, not the default 50 us of slack.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  install_thread_signal_stack(m);
#if defined(__SANITIZE_THREAD__)
  m->tsan_g0 = __tsan_get_current_fiber();
#endif
#if defined(__SANITIZE_ADDRESS__)
  pthread_attr_t attr;
  pthread_getattr_np(pthread_self(), &attr);
  pthread_attr_getstack(&attr, &m->asan_g0_bottom, &m->asan_g0_size);
  pthread_attr_destroy(&attr);
#endif
  char name[16];
  std::snprintf(name, sizeof(name), "goro-m%d", m->id);
  pthread_setname_np(pthread_self(), name);
}

// The end of an M that stop_all_ms abandoned inside goro::blocking(): its
// fiber's call has returned and the thread is back on its own stack. The
// Sched may be gone; the M and its abandoned fiber (object, closure, stack)
// are this thread's to free. Their destructors do not run: the fiber is not
// unwound, like every fiber abandoned by run.
void end_abandoned(M* m) {
  // run_main hands them over once sysmon (which may read this M) is stopped:
  // a short wait, at most as long as that takes.
  while (m->blocking_state.load(std::memory_order_acquire) != M::kAbandoned) {
    sched_yield();
  }
  Fiber* f = m->abandoned_fiber;
  munmap(f->stack.lo - kGuardSize, f->stack.size + kGuardSize);
#if defined(__SANITIZE_THREAD__)
  if (f->tsan_fiber != nullptr) __tsan_destroy_fiber(f->tsan_fiber);
#endif
  if (f->closure_on_heap) {
    ::operator delete(f->closure, std::align_val_t(f->closure_align));
  }
  delete f;
  remove_thread_signal_stack(m);
  tls_m = nullptr;
  delete m;  // its thread was detached
}

}  // namespace

void m_main(Sched* s, M* m) {
  setup_thread(m);
  // startm made this M with its P already acquired (idle.cc): no lock here.
  GORO_DCHECK(m->p != nullptr && m->next_p == nullptr);
  for (;;) {
    bool inherit = false;
    Fiber* f = find_runnable(s, m, &inherit);
    if (f == nullptr) break;
    execute(m, f, inherit);
    if (m->blocking_state.load(std::memory_order_relaxed) != M::kNone) {
      end_abandoned(m);
      return;
    }
  }
  remove_thread_signal_stack(m);
  tls_m = nullptr;
  m->exited.store(true, std::memory_order_release);
}

}  // namespace goro::runtime_internal
