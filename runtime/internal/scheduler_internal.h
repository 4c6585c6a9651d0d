// Copyright goro authors.
//
// The functions the files of runtime/ share (and, through the internal
// Bazel target, preempt/). Not for users, nor for sync/ and net/, which use
// park.h. Grouped by the file that defines them; see scheduler.h for the
// reading order.

#ifndef GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_
#define GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "runtime/internal/dcheck.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler.h"

// GORO_TEXT puts a function into the goro_text section: code the SIGURG
// handler never interrupts with a switch (see acquirem). noipa: its callers
// must really call it, or the inlined copy would sit outside the section.
#if defined(__clang__)  // clang has no noipa; only its analysis reads this
#define GORO_TEXT __attribute__((section("goro_text"), noinline))
#else
#define GORO_TEXT __attribute__((section("goro_text"), noinline, noipa))
#endif

namespace goro::runtime_internal {

// --- m.cc ------------------------------------------------------------------

// Prints "goro: fatal error: ..." and aborts. The one way the runtime dies on
// a broken invariant.
[[noreturn]] void fatal(const char* fmt, ...)
    __attribute__((format(printf, 1, 2)));

// Signal-handler-safe read of the current M (initial-exec TLS, no call).
M* current_m_signal_safe();

// The active runtime (acquire load of g_sched).
inline Sched* sched() { return g_sched.load(std::memory_order_acquire); }

// xorshift32 of the P's own generator; owner only.
inline std::uint32_t fastrand(P* p) {
  std::uint32_t x = p->rand;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  p->rand = x;
  return x;
}

// releasem's slow path: the count reached zero with a preemption pending.
void releasem_slow(M* m);

// The body of an M's thread (the scheduler context, g0).
void m_main(Sched* s, M* m);

// --- switch.cc -------------------------------------------------------------

// Switches from the running fiber `self` to `next`, or to the M's scheduler
// context if null; m->after must already say what to do with `self`.
// Returns the M the fiber resumed on (possibly another one). The caller
// holds one runtime-lock count, which the resumed side drops
// (release_after_switch).
M* switch_from_fiber(M* m, Fiber* self, Fiber* next, bool inherit, bool dying);
// Leaves the current fiber (after m->after is set) for whatever runs next.
M* leave_fiber(M* m, Fiber* self, bool dying);
// Leaves the running fiber of an M that stop_all_ms abandoned (inside
// blocking()) for the M's scheduler context, without touching the fiber,
// which may be freed; m_main then ends the thread (see M::blocking_state).
[[noreturn]] void abandon_to_g0(M* m);
// Runs f on the scheduler context until it switches back.
void execute(M* m, Fiber* f, bool inherit);
// Completes what the previous context asked for in M::after; called on the
// context that resumes after every switch.
M* finish_switch();
// Drops the runtime-lock count a switch was made with, on the M that
// resumed. Inline: after the decrement a preemption is harmless.
inline void release_after_switch(M* m);

// --- fiber.cc --------------------------------------------------------------

// A P's free Fiber objects beyond this go to the global list, half at a time.
inline constexpr std::size_t kFreeFibersCap = 256;
// Fiber ids a P takes from Sched::next_fiber_id at a time.
inline constexpr std::uint64_t kFiberIdBatch = 16;

// transition moves f from state `from` to `to`; in checked builds it
// aborts if f was not in `from` (every state change goes through it).
inline void transition(Fiber* f, FiberState from, FiberState to,
                       std::memory_order order = std::memory_order_relaxed);
// A new fiber's first frame: fiber_main(f) on a fresh stack.
void init_first_frame(P* p, Fiber* f);
// Recycles a dead fiber's stack and object.
void fiber_free(M* m, Fiber* f);

// --- idle.cc ---------------------------------------------------------------

void startm(Sched* s, P* p, bool spinning);
void wakep(Sched* s);
void handoffp(Sched* s, P* p);
void reset_spinning(Sched* s, M* m);
void stopm(Sched* s, M* m, std::int64_t deadline);
// stopm with no deadline for an M whose deadline a poll spinner will keep
// (find_work.cc, "Who owns the timers"); sets Sched::poll_owed. Returns
// false if it did not sleep because the spinner may have missed the flag:
// the M must look again.
bool stopm_behind_spinner(Sched* s, M* m);
void acquirep(M* m, P* p);
void pidle_put_locked(Sched* s, P* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);
P* pidle_get_locked(Sched* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);
bool pidle_remove_locked(Sched* s, P* want)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);
// Takes an idle M off its list (null if none); the caller wakes it.
M* midle_pop_locked(Sched* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);
// Wakes an idle M so that it re-plans its sleep (a new earliest timer).
void wake_idle_m_for_timer(Sched* s);
// Spare Ps (see idle.cc).
bool lend_spare(Sched* s, P* spare);
void retire_spare(Sched* s, M* m);
void retire_idle_spare(Sched* s, P* spare);
void start_first_m(Sched* s);
void stop_all_ms(Sched* s);

// --- checkdead.cc ---------------------------------------------------------

// The scheduler's counts say no fiber can ever run again (see run.h,
// "Deadlock detection"): every M idle, nothing runnable or pinned, no timer,
// no netpoll waiter, main not returned. Called by stopm with the M already
// on the idle list.
bool dead_by_counts_locked(Sched* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);
// After dead_by_counts_locked said yes (under lock, at idle generation
// `gen`): checks the process's threads without the lock, then the counts
// again; reports the deadlock if all agree. Returns the deadline the idle M
// should sleep until: 0 (none), or a recheck time while a foreign thread
// may still wake a fiber.
std::int64_t checkdead(Sched* s, M* m, std::uint64_t gen);
// How many fibers wait on the netpoller (io_waiters(), which net/ counts;
// 0 without net/): the one place deadlock detection consults it.
int netpoll_waiting();

// --- find_work.cc ----------------------------------------------------------

// find_runnable returns the next fiber for this M, blocking until there is
// one; null when the runtime is stopping.
Fiber* find_runnable(Sched* s, M* m, bool* inherit);
std::int64_t earliest_timer(Sched* s);
// Fibers one netpoll call may return (two per epoll event at most).
inline constexpr int kNetpollBatch = 128;
// The batch of the polls that drain epoll's ready list (sysmon's and a busy
// P's): room for a second round of events after the first (net/'s
// netpoll_with drains while the next round fits).
inline constexpr int kNetpollDrainBatch = 2 * kNetpollBatch;
// The batch netpoll_queue_ready polls from a preempted fiber's stack.
inline constexpr int kPreemptPollBatch = 16;
// Whether net/ has a poller for this runtime (some socket was opened).
inline bool netpoll_on() {
  return g_hooks.netpoll_inited != nullptr && g_hooks.netpoll_inited();
}
// A P that keeps finding work polls the network when nobody has for this
// long (find_work.cc, "The netpoller": a busy P's poll).
inline constexpr std::int64_t kBusyPollNs = 250'000;
// Whether that poll is due: some fiber waits for I/O, no M is blocked in
// netpoll, and the last poll is kBusyPollNs old. Reads the clock only when
// fibers wait for I/O.
inline bool busy_poll_due(Sched* s) {
  if (io_waiters() == 0) return false;
  const std::int64_t lp = s->last_poll.load(std::memory_order_relaxed);
  return lp != 0 && mono_now_ns() - lp >= kBusyPollNs && netpoll_on();
}
// A non-blocking poll (one M at a time, only while some fiber waits for
// I/O and no M blocks in netpoll) whose fibers are queued with
// netpoll_inject; m holds a P. Returns true if it readied any.
bool netpoll_queue_ready(Sched* s, M* m);
// Breaks the blocked netpoll (if an M is blocked in it) when it sleeps
// longer than until `when`: a new earliest timer. `when` == 0: always.
void netpoll_wake_for(Sched* s, std::int64_t when);

// --- park.cc ---------------------------------------------------------------

void yield_impl(bool preempted, bool async);
void sleep_until_impl(std::int64_t when_ns);
void count_preemption(P* p, bool async);  // runtime.cc
void global_put(Sched* s, Fiber* f);
// netpoll_inject makes the n fibers a netpoll returned runnable and queues
// them, spread over idle Ps (Go's injectglist): as many as there are idle
// Ps go to the global queue with an M started for each; the rest go to m's
// P (when m holds one) or the global queue too. m may be null (sysmon).
void netpoll_inject(Sched* s, M* m, Fiber** fs, int n);

// --- sysmon.cc -------------------------------------------------------------

void sysmon_start(Sched* s);
void sysmon_stop(Sched* s);

// drop_timers disarms every timer of the runtime and calls their drops
// (park.h, Timer). From run's thread, once no M runs; timer_start fails
// from then on.
void drop_timers(Sched* s);
// How long after the Ms start sysmon's thread is made, and how long
// stop_all_ms lets the Ms stop before it makes it after all (sysmon.cc, "Its
// start"): one busy period, time_slice / 10 in [20 us, 1 ms].
std::int64_t sysmon_start_delay(const Sched* s);
// Wakes sysmon if it sleeps until new work (Sched::sysmon_sleeping): a P
// became busy, or work was queued that waits for a CPU. One seq_cst load
// when it does not sleep.
void sysmon_wake(Sched* s);

// --- fiber.cc --------------------------------------------------------------

// The std::terminate handler that reports a fiber's uncaught exception with
// its backtrace ("Uncaught exceptions" in fiber.cc). run_main installs it
// when a runtime starts and removes it when the runtime ends (unless the
// program replaced it meanwhile); it calls the handler it replaced for a
// terminate that is not a fiber's uncaught exception.
void install_terminate_handler();
void remove_terminate_handler();

// --- signals.cc ------------------------------------------------------------

// Stack overflow reporting: the SIGSEGV handler, the per-M alternate signal
// stack, and the canary check's report.
void install_overflow_handler();
void install_thread_signal_stack(M* m);
void remove_thread_signal_stack(M* m);
[[noreturn]] void report_stack_overflow(const Fiber* f);

// --- options.cc ------------------------------------------------------------

// Throw std::invalid_argument naming `what`.
std::size_t validate_stack_size(std::size_t bytes, const char* what);
Options resolve_options(const Options& in);
// GORO_DEBUG and GORO_SIGQUIT; throws std::invalid_argument naming the
// variable for a malformed value.
DebugOptions resolve_debug_options();
int available_cpus();

// --- inline definitions ----------------------------------------------------

inline void transition(Fiber* f, FiberState from, FiberState to,
                       std::memory_order order) {
#if GORO_DCHECK_IS_ON
  const FiberState was = f->state.load(std::memory_order_relaxed);
  if (was != from) {
    fatal("fiber %llu: state %s -> %s, but it is %s",
          static_cast<unsigned long long>(f->id), fiber_state_name(from),
          fiber_state_name(to), fiber_state_name(was));
  }
#else
  (void)from;
#endif
  f->state.store(to, order);
}

inline void release_after_switch(M* m) {
  if (tls_locks_dec()) {
    Fiber* f = m->curg();
    if (f != nullptr && f->preempt_requested.load(std::memory_order_relaxed)) {
      releasem_slow(m);
    }
  }
}

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_SCHEDULER_INTERNAL_H_
