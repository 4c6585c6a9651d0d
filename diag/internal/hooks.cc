// Copyright goro authors.
//
// Wires diag/ into the runtime (runtime/ cannot depend on diag/): a static
// initializer fills the diagnostics hooks of runtime_internal::g_hooks.
// //:goro links this library with alwayslink so the initializer is kept.

#include "diag/internal/diag.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::diag_internal {
namespace {

void on_run(runtime_internal::Sched* s) {
  sigquit_start(s);
  schedtrace_start(s);
}

void on_run_end(runtime_internal::Sched* s) {
  trace_on_run_end(s);
  schedtrace_stop(s);
  sigquit_stop(s);
}

struct Register {
  Register() {
    runtime_internal::g_hooks.dump_fibers = [] {
      return dump_string(nullptr, nullptr);
    };
    runtime_internal::g_hooks.fiber_backtrace = fiber_backtrace;
    runtime_internal::g_hooks.on_create = trace_on_create;
    runtime_internal::g_hooks.on_run = on_run;
    runtime_internal::g_hooks.on_run_end = on_run_end;
    runtime_internal::g_hooks.on_sysmon_round = sigquit_poll;
  }
} g_register;

}  // namespace
}  // namespace goro::diag_internal
