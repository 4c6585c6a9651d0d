// Copyright goro authors.
//
// Functions shared by the files of runtime/ (and preempt/), not by users.

#ifndef GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_
#define GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "runtime/internal/scheduler.h"

namespace goro::runtime_internal {

// Prints "goro: fatal error: ..." and aborts.
[[noreturn]] void fatal(const char* fmt, ...)
    __attribute__((format(printf, 1, 2)));

// Signal-handler-safe read of the current M (initial-exec TLS, no call).
M* current_m_signal_safe();
void set_current_m(M* m);

// Run queues and Ms (scheduler.cc).
void runq_put(P* p, Fiber* f, bool next);
void global_put(Sched* s, Fiber* f);
void startm(Sched* s, P* p, bool spinning);
void wakep(Sched* s);
void handoffp(Sched* s, P* p);
void fiber_free(M* m, Fiber* f);
void start_first_m(Sched* s);
void retire_idle_spare(Sched* s, P* spare);
void stop_all_ms(Sched* s);
void yield_impl(bool preempted, bool async);
void sleep_until_impl(std::int64_t when_ns);
void count_preemption(P* p, bool async);
Fiber* pinned_pop(M* m);

// Stack overflow reporting (signals.cc): the SIGSEGV handler, the per-M
// alternate signal stack, and the canary check's report.
void install_overflow_handler();
void install_thread_signal_stack(M* m);
void remove_thread_signal_stack(M* m);
[[noreturn]] void report_stack_overflow(const Fiber* f);

// Options (options.cc). Throw std::invalid_argument naming `what`.
std::size_t validate_stack_size(std::size_t bytes, const char* what);
Options resolve_options(const Options& in);
int available_cpus();

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_
