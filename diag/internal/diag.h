// Copyright goro authors.
//
// diag/'s internal entry points (the public one is diag/dump.h).

#ifndef GORO_DIAG_INTERNAL_DIAG_H_
#define GORO_DIAG_INTERNAL_DIAG_H_

#include <string>

#include "runtime/internal/scheduler.h"

namespace goro::diag_internal {

// The dump of every fiber (dump.h's format). self_ctx/self: the calling
// fiber and a context taken in it (a ucontext_t from getcontext; both null
// when the caller is not a fiber). Any thread with a full-size stack, not a
// signal handler (it may load libunwind); serialised internally.
std::string dump_string(const void* self_ctx,
                        const runtime_internal::Fiber* self);

// One fiber's block of the dump, from a context taken on that fiber (a
// ucontext_t; the fiber must stay put meanwhile), with the frames of the C++
// runtime's throw and terminate machinery left out at the top: the
// backtrace of an uncaught exception. Any thread with a full-size stack,
// not a signal handler.
std::string backtrace_string(const void* ctx,
                             const runtime_internal::Fiber* self);

// Hooks::fiber_backtrace: backtrace_string of the calling fiber, taken on
// a helper thread while the fiber's thread waits. On a fiber's thread
// (from std::terminate); "" elsewhere.
std::string fiber_backtrace();

// A full memory barrier on every running thread of the process
// (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), dump.cc): the heavy side of
// the asymmetric Dekker handshakes of the dump's pins and of stopping a
// trace. False when membarrier is unavailable (an old kernel, a seccomp
// filter): then no barrier was issued.
bool heavy_fence();

// The execution trace (trace.cc): GORO_TRACE starts a trace when a runtime
// is created (throws std::invalid_argument naming GORO_TRACE when its file
// cannot be opened); a trace still running when run's main returns is
// stopped there.
void trace_on_create(runtime_internal::Sched* s);
void trace_on_run_end(runtime_internal::Sched* s);

// SIGQUIT (sigquit.cc): install the handler, unless GORO_SIGQUIT=0 or the
// program has its own SIGQUIT disposition; undo it at the runtime's end
// (dumping there if a SIGQUIT was handed off and not yet taken). The
// handler hands off to sysmon, which calls sigquit_poll every round
// (Hooks::on_sysmon_round): it dumps and exits if a SIGQUIT came.
void sigquit_start(runtime_internal::Sched* s);
void sigquit_stop(runtime_internal::Sched* s);
void sigquit_poll(runtime_internal::Sched* s);

// GORO_DEBUG=schedtrace (schedtrace.cc): the thread printing Go's SCHED
// lines; the one line, for tests and the thread.
void schedtrace_start(runtime_internal::Sched* s);
void schedtrace_stop(runtime_internal::Sched* s);
std::string schedtrace_text(runtime_internal::Sched* s, bool detail);

}  // namespace goro::diag_internal

#endif  // GORO_DIAG_INTERNAL_DIAG_H_
