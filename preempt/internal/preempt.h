// Copyright goro authors.
//
// preempt/'s internal interface: the SIGURG handler and the CPU's
// extended-state layout. Wired into the runtime by hooks.cc (see
// runtime/internal/scheduler.h, Hooks); sysmon, which decides when to
// preempt, lives in runtime/internal/sysmon.cc.

#ifndef GORO_PREEMPT_INTERNAL_PREEMPT_H_
#define GORO_PREEMPT_INTERNAL_PREEMPT_H_

#include <cstdint>

#include "runtime/internal/scheduler.h"

namespace goro::preempt_internal {

// Stack a preemption needs below the interrupted rsp: red zone, saved
// registers, the XSAVE area and the scheduler frames it calls.
std::uint64_t preempt_stack_need();

// Installs the SIGURG handler (once per process) and learns the XSAVE
// layout; at every call (each runtime start) also refreshes the code map
// and clears the hijack table (code_map.h, preempt_walk.h).
void install_signal_handler();

// Hooks::on_sysmon_start: loads libunwind (unwinder.h) and registers the
// code map's unwind tables with it. Not async-signal-safe; on sysmon's
// thread before its first round, so before any SIGURG.
void load_unwinder();

// Hooks::preempt_m: interrupts m's thread with SIGURG unless a signal is
// already in flight to it (then returns false).
bool preempt_m(runtime_internal::M* m);

// Hooks::fault_backtrace: the return addresses of fiber f's stack from a
// fault's signal context (a ucontext_t), written to fd, for the stack
// overflow report. Async-signal-safe in the sense fault_backtrace.cc
// explains (libunwind over registered tables only; the frame-pointer chain
// before libunwind is loaded).
void fault_backtrace(const runtime_internal::Fiber* f, const void* ucontext,
                     int fd);

// Counts a refusal in the running runtime's Sched::refused. Async-signal-safe.
void count_refusal(runtime_internal::Refusal r);

// libstdc++'s std::call_once thread-locals (std::__once_callable,
// std::__once_call): inline code sets them just before calling
// pthread_once, whose proxy reads them. They belong to the fiber between
// the two, so an asynchronous preemption saves and restores them like
// errno (os_locks.cc).
struct OnceThreadLocals {
  void* callable;
  void (*call)();
};
OnceThreadLocals save_once_thread_locals();
void restore_once_thread_locals(const OnceThreadLocals& saved);

}  // namespace goro::preempt_internal

extern "C" {
// The trampoline a preempted fiber "calls" on return from the signal
// handler; saves everything, walks the stack and yields (or hijacks a
// return, or refuses), restores, returns to the interrupted instruction.
// async_preempt_x86_64.S; the C part is in preempt_walk.h.
void goro_async_preempt();
// XSAVE layout: area size (bytes) and the XCR0 feature mask, set once by
// install_signal_handler before any preemption.
extern std::uint64_t goro_xsave_size;
extern std::uint32_t goro_xsave_mask_lo;
extern std::uint32_t goro_xsave_mask_hi;
}

#endif  // GORO_PREEMPT_INTERNAL_PREEMPT_H_
