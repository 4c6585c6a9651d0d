// Copyright goro authors.
//
// Wires preempt/ into the runtime (runtime/ cannot depend on preempt/): a
// static initializer fills runtime_internal::g_hooks. //:goro links this
// library with alwayslink so the initializer is never dropped.
//
// Also implements goro::NoPreempt.

#include "preempt/internal/preempt.h"
#include "preempt/no_preempt.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::preempt_internal {
namespace {

void on_start(runtime_internal::Sched*) { install_signal_handler(); }

struct Register {
  Register() {
    runtime_internal::g_hooks.on_start = on_start;
    runtime_internal::g_hooks.fault_backtrace = fault_backtrace;
    // Also under ThreadSanitizer, without the signal half: the overflow
    // backtrace and the dumps use libunwind there too.
    runtime_internal::g_hooks.on_sysmon_start = [](runtime_internal::Sched*) {
      load_unwinder();
    };
#if !defined(__SANITIZE_THREAD__)
    // ThreadSanitizer defers asynchronous signals to its own safe points, so
    // SIGURG preemption cannot work under it: sysmon then preempts only
    // cooperatively (the fiber's flag).
    runtime_internal::g_hooks.preempt_m = preempt_m;
#endif
  }
} g_register;

}  // namespace

runtime_internal::Fiber* no_preempt_enter() {
  runtime_internal::MHold hold;
  runtime_internal::Fiber* f = hold.m() != nullptr ? hold.m()->curg() : nullptr;
  if (f != nullptr) ++f->no_preempt;
  return f;
}

void no_preempt_exit(runtime_internal::Fiber* f) {
  if (f == nullptr) return;
  // The hold's release yields if a request arrived meanwhile and this was
  // the outermost scope.
  runtime_internal::MHold hold;
  --f->no_preempt;
}

}  // namespace goro::preempt_internal
