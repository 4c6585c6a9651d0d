// Copyright goro authors.
//
// The context switch, as the scheduler sees it.
//
// A fiber that yields, parks or exits picks its successor itself (runnext,
// then its P's ring: pick_next) and switches to it directly, one context
// switch. Only when its P has nothing ready -- or the global queue, a due
// timer or shutdown needs attention -- does it switch to its M's scheduler
// context ("g0", the M's own thread stack), which runs the full search
// (find_runnable) and may sleep. Whatever must happen to the fiber that left
// (requeue it, mark it waiting and run its park commit, recycle its stack) is
// recorded in M::after before the switch and done by finish_switch() on the
// context that resumes, once the old fiber is off its stack. This is what
// makes park free of lost wake-ups: nobody can find a parked fiber before its
// context is saved.
//
// Every switch is made holding one runtime-lock count (locks.h), dropped by
// the context that resumes (release_after_switch), so the SIGURG handler
// never switches in the middle of one. The sanitizers and libstdc++'s
// exception state are told about each switch here (before_switch,
// finish_switch).

#include <sched.h>

#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/run_queues.h"
#include "runtime/internal/sanitizers.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace goro::runtime_internal {
namespace {

// Sanitizer and exception-state bookkeeping before a switch from `from`
// (null: the scheduler context) to `to` (null: likewise).
inline void before_switch(M* m, Fiber* from, Fiber* to, bool from_dying) {
  if (from != nullptr) from->eh = *m->eh_globals;
#if defined(__SANITIZE_ADDRESS__)
  void** save = from_dying ? nullptr
                : from     ? &from->asan_fake_stack
                           : &m->asan_g0_fake_stack;
  if (to != nullptr) {
    __sanitizer_start_switch_fiber(save, to->stack.lo, to->stack.size);
  } else {
    __sanitizer_start_switch_fiber(save, m->asan_g0_bottom, m->asan_g0_size);
  }
#else
  (void)from_dying;
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(to != nullptr ? to->tsan_fiber : m->tsan_g0, 0);
#else
  (void)m;
  (void)to;
#endif
}

// A dump is reading f's stack (diag/dump.cc): wait until it is done.
__attribute__((noinline, cold)) void wait_dump_pin(Fiber* f) {
  while (f->dump_pin.load(std::memory_order_acquire)) sched_yield();
}

// The fiber `f` takes the M (kRunnable -> kRunning) on p.
inline void* enter_fiber(M* m, P* p, Fiber* f, bool inherit) {
  transition(f, FiberState::kRunnable, FiberState::kRunning);
  // Dump pinning, the cheap side of an asymmetric Dekker (the dumper pins,
  // then issues membarrier(), then reads the state): the state store above
  // and this load are only kept in program order by the compiler; the
  // dumper's membarrier supplies the fence. One predictable branch while no
  // dump runs.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (__builtin_expect(g_dump_pins.load(std::memory_order_relaxed) != 0, 0) &&
      f->dump_pin.load(std::memory_order_relaxed)) {
    wait_dump_pin(f);
  }
  // Before set_curg: sysmon reads curg (acquire) and then sched_seq, so if
  // it sees f it sees f's fresh slice. The other order let it pair f with
  // the old slice's count and preempt f before its first line.
  if (!inherit) new_slice(p);
  // A request still set was made for an earlier turn of f (sysmon saw it
  // running just before it parked): that turn is over, and honouring the
  // request now would cut this one short at its first cooperative point.
  // Requests for this turn come after set_curg.
  if (f->preempt_requested.load(std::memory_order_relaxed)) {
    f->preempt_requested.store(false, std::memory_order_relaxed);
  }
  trace_start(m, f);  // before set_curg: T1 in trace.h
  m->set_curg(f);
  p->context_switches.add();
  if (f->sp == nullptr) init_first_frame(p, f);
  return f->sp;
}

}  // namespace

__attribute__((noinline, noipa)) M* finish_switch() {
  M* m = current_m();
  Fiber* cur = m->curg();
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(
      cur ? cur->asan_fake_stack : m->asan_g0_fake_stack, nullptr, nullptr);
#endif
  *m->eh_globals = cur ? cur->eh : EhGlobals{};

  M::After a = m->after;
  if (a == M::After::kNothing) return m;
  m->after = M::After::kNothing;
  Fiber* f = m->after_fiber;
  switch (a) {
    case M::After::kNothing:
      break;
    case M::After::kRequeue:
      transition(f, FiberState::kRunning, FiberState::kRunnable);
      runq_put(m->p, f, false);
      break;
    case M::After::kPin:
      transition(f, FiberState::kRunning, FiberState::kRunnable);
      pinned_push(m, f);
      break;
    case M::After::kRequeueGlobal: {
      transition(f, FiberState::kRunning, FiberState::kRunnable);
      Sched* s = sched();
      global_put(s, f);
      wakep(s);
      break;
    }
    case M::After::kPark: {
      // The fiber is off its stack: from now on a waker may ready it.
      // release: pairs with ready()'s acquire, so the saved context is
      // visible to whoever resumes it.
      transition(f, FiberState::kRunning, FiberState::kWaiting,
                 std::memory_order_release);
      bool (*commit)(void*) = m->after_commit;
      m->after_commit = nullptr;
      if (commit != nullptr && !commit(m->after_arg)) ready(f);
      break;
    }
    case M::After::kExit:
      fiber_free(m, f);
      break;
  }
  return m;
}

M* switch_from_fiber(M* m, Fiber* self, Fiber* next, bool inherit, bool dying) {
  if (!self->stack.canary_intact()) report_stack_overflow(self);
  void* to;
  if (next != nullptr) {
    to = enter_fiber(m, m->p, next, inherit);
  } else {
    m->set_curg(nullptr);
    to = m->g0_sp;
  }
  before_switch(m, self, next, dying);
  goro_context_switch(&self->sp, to);
  return finish_switch();  // possibly another M
}

M* leave_fiber(M* m, Fiber* self, bool dying) {
  Fiber* next = nullptr;
  bool inherit = false;
  pick_next(sched(), m, &next, &inherit);
  return switch_from_fiber(m, self, next, inherit, dying);
}

void abandon_to_g0(M* m) {
  // Nothing of the Fiber may be read or written: it may be freed already.
  // The context is saved into a dummy, as nobody will resume it.
  m->set_curg(nullptr);
  before_switch(m, nullptr, nullptr, /*from_dying=*/true);
  void* unused_sp;
  goro_context_switch(&unused_sp, m->g0_sp);
  __builtin_trap();
}

void execute(M* m, Fiber* f, bool inherit) {
  void* to = enter_fiber(m, m->p, f, inherit);
  tls_locks_inc();  // dropped by the fiber as it resumes
  before_switch(m, nullptr, f, false);
  goro_context_switch(&m->g0_sp, to);
  finish_switch();
  tls_locks_dec();  // the count the fiber held when it switched here
}

}  // namespace goro::runtime_internal
