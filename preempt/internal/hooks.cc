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

void on_start(runtime_internal::Sched* s) {
  install_signal_handler();
  sysmon_start(s);
}

void on_stop(runtime_internal::Sched* s) { sysmon_stop(s); }

struct Register {
  Register() {
    runtime_internal::g_hooks.on_start = on_start;
    runtime_internal::g_hooks.on_stop = on_stop;
    runtime_internal::g_hooks.wake_sysmon = sysmon_wake;
  }
} g_register;

}  // namespace

runtime_internal::Fiber* no_preempt_enter() {
  runtime_internal::M* m = runtime_internal::acquirem();
  runtime_internal::Fiber* f = m != nullptr ? m->curg : nullptr;
  if (f != nullptr) ++f->no_preempt;
  runtime_internal::releasem(m);
  return f;
}

void no_preempt_exit(runtime_internal::Fiber* f) {
  if (f == nullptr) return;
  runtime_internal::M* m = runtime_internal::acquirem();
  --f->no_preempt;
  // releasem yields if a request arrived meanwhile and this was the
  // outermost scope.
  runtime_internal::releasem(m);
}

}  // namespace goro::preempt_internal
