// Copyright goro authors.
//
// The execution trace, producer half: the scheduler writes fixed-size binary
// events into per-P ring buffers. The consumer half -- the writer thread, the
// Chrome Trace Event JSON, the public API goro::trace::start/stop and
// GORO_TRACE -- is diag/'s (diag/trace.h, diag/internal/trace*.cc); it owns
// the TraceSession below and publishes it in g_trace.session.
//
// Cost while no trace runs: every event site is one relaxed load of
// g_trace.on and a branch marked [[unlikely]] (the inline wrappers at the end
// of this file); the slow paths are out of line and cold.
//
// Who writes where. An event goes to the ring of the P that the emitting M
// holds (TraceSession::rings[P::id]). A thread that holds no P -- a plain
// thread calling go() or ready(), an M inside goro::blocking(), sysmon, an
// idle M's poller -- writes to the session's one off-P ring under
// g_trace_offp_mu. So each P ring has one producer at a time, the M holding
// the P (a P changes hands only under Sched::lock or through the idle lists,
// which order one holder's last event before the next holder's first), and
// one consumer, the writer thread: a single-producer single-consumer ring
// (TraceRing, ordering documented there).
//
// Reentrancy and signals (T1). Every write into a P's ring runs either with
// the thread's runtime-lock count raised (acquirem/MHold, locks.h) or on the
// M's scheduler context (curg() == null); the SIGURG handler switches a
// fiber only when the count is zero and the thread is on that fiber's stack,
// and it writes no event itself. So a write into a ring is never interrupted
// by another write into the same ring, and a P ring needs no lock. The
// asynchronous-preemption event (kStop, kPreemptAsync) is written by
// preempt_yield, which the preemption trampoline calls after the handler has
// returned, with the count raised; it is async-signal-safe all the same: no
// lock, no allocation, only stores, RDTSC and (when a ring passes half full)
// one futex wake-up. Checked builds assert T1 at every write.
//
// Stopping (T2). diag/ clears g_trace.session, then issues
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) and waits until no P's
// trace_busy flag is set; only then does it free the rings. A writer sets
// its P's trace_busy, then loads g_trace.session (a compiler barrier in
// between; the membarrier is the fence -- the asymmetric Dekker of
// diag/internal/dump.cc), and clears the flag (release) when done. Either
// the writer loads null, or the stopper sees the flag. Off-P writers hold
// g_trace_offp_mu, which the stopper takes once after clearing the pointer.
//
// Time: RDTSC (after an LFENCE, so that it is not taken before the loads
// that precede it), converted to CLOCK_MONOTONIC by the writer thread from
// (TSC, clock) pairs it takes as it goes. It costs about half a
// clock_gettime here, and the kernel uses the TSC as its clock source, so it
// is synchronised across CPUs.

#ifndef GORO_RUNTIME_INTERNAL_TRACE_H_
#define GORO_RUNTIME_INTERNAL_TRACE_H_

#include <x86intrin.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "runtime/internal/futex.h"
#include "runtime/internal/mutex.h"
#include "runtime/internal/park.h"

namespace goro::runtime_internal {

struct Fiber;
struct M;

// Event types. Per type, what the fields of TraceEvent hold (g is always the
// fiber the event is about, 0 if none).
enum class TraceType : std::uint8_t {
  kNone = 0,
  // The counters when the trace starts (off-P ring, the session's first
  // event): arg runnable, aux32 running, aux16 inside blocking().
  kInit,
  // g was created (kFree -> kRunnable); arg: the creating fiber (0: a
  // thread). kName events follow.
  kCreate,
  // Part of g's name: reason = bytes in this part (<= kTraceNameChunk),
  // aux16 = which part; the bytes are in arg then aux32. Follows kCreate or
  // the first kStart of g in a session.
  kName,
  // g starts running on this P (kRunnable -> kRunning).
  kStart,
  // g leaves this P: reason is a TraceStop; aux16 the WaitReason if blocked.
  kStop,
  // g was readied (kWaiting -> kRunnable); reason is a TraceSource; arg is
  // the readying fiber (0: none).
  kReady,
  // This P stole aux16 fibers from P aux32; g is the one it runs first.
  kSteal,
  // g returned from goro::blocking(): reason 1 if it runs on (on this P),
  // 0 if it was queued (it had no P: off-P ring).
  kBlockingDone,
  // A timer fires (what it readies follows: kReady, kScheduler source).
  kTimer,
  // A poll of the network readied aux32 fibers (kReady events follow).
  kNetpoll,
};

enum class TraceStop : std::uint8_t {
  kYield = 0,
  kPreemptAsync,  // the SIGURG path (preempt_yield from the trampoline)
  kPreemptCoop,   // at a cooperative point (releasem, preempt_check)
  kBlocked,       // parked; aux16 is the WaitReason
  kBlocking,      // entered goro::blocking(): gave its P away
  kExit,
};

enum class TraceSource : std::uint8_t {
  kFiber = 0,  // arg: the fiber that called ready()
  kScheduler,  // the scheduler context, no fiber: a timer (after a kTimer
               // event on the same P) or a park commit that failed
  kNetpoll,
  kThread,  // a thread without a P (arg: the fiber inside blocking(), or 0)
};

// One event: 32 bytes, two per cache line.
struct TraceEvent {
  std::uint64_t tsc = 0;  // RDTSC
  std::uint64_t g = 0;
  std::uint64_t arg = 0;
  TraceType type = TraceType::kNone;
  std::uint8_t reason = 0;
  std::uint16_t aux16 = 0;
  std::uint32_t aux32 = 0;
};
static_assert(sizeof(TraceEvent) == 32);

// Name bytes per kName event, and at most this many events per name: names
// are cut at 48 bytes in a trace.
inline constexpr std::uint32_t kTraceNameChunk = 12;
inline constexpr std::uint32_t kTraceNameChunks = 4;

// A single-producer, single-consumer ring of TraceEvents over storage the
// session maps. Roles: reserve/at/commit/drop are the producer's (the M
// holding the ring's P, or an off-P writer holding g_trace_offp_mu);
// readable/consumed the consumer's (the writer thread).
//
// Ordering:
//   * The producer fills slots (plain stores), then stores head_ with
//     release; the consumer loads head_ with acquire before reading slots,
//     so it sees complete events.
//   * The consumer copies slots out, then stores tail_ with release; the
//     producer loads tail_ with acquire (only when its cached copy says the
//     ring is full) before overwriting slots, so it never overwrites a slot
//     being copied.
//   * dropped_ has one writer (the producer) and is read by the consumer
//     after the session stopped (and, approximately, meanwhile).
// A full ring drops the new event (counted): a producer never waits.
class TraceRing {
 public:
  // slots: capacity events, capacity a power of two.
  void init(TraceEvent* slots, std::uint32_t capacity) {
    slots_ = slots;
    mask_ = capacity - 1;
  }

  // Producer: room for n events? Returns their first position in *pos.
  bool reserve(std::uint32_t n, std::uint64_t* pos) {
    const std::uint64_t h = head_.load(std::memory_order_relaxed);
    if (h + n - cached_tail_ > mask_ + 1) {
      cached_tail_ = tail_.load(std::memory_order_acquire);
      if (h + n - cached_tail_ > mask_ + 1) return false;
    }
    *pos = h;
    return true;
  }
  TraceEvent& at(std::uint64_t pos) { return slots_[pos & mask_]; }
  // Producer: publishes the events up to (not including) `end`. Returns true
  // once per half ring written (time to wake the consumer, which may be
  // asleep for its whole period).
  bool commit(std::uint64_t end) {
    const std::uint64_t h = head_.load(std::memory_order_relaxed);
    head_.store(end, std::memory_order_release);
    const std::uint64_t half = (mask_ + 1) / 2;
    return end / half != h / half;
  }
  void drop(std::uint32_t n) {
    dropped_.store(dropped_.load(std::memory_order_relaxed) + n,
                   std::memory_order_relaxed);
  }

  // Consumer: events [*from, returned end) may be read with at_consumer.
  std::uint64_t readable(std::uint64_t* from) const {
    *from = tail_.load(std::memory_order_relaxed);
    return head_.load(std::memory_order_acquire);
  }
  const TraceEvent& at_consumer(std::uint64_t pos) const {
    return slots_[pos & mask_];
  }
  void consumed(std::uint64_t end) {
    tail_.store(end, std::memory_order_release);
  }
  std::uint64_t dropped() const {
    return dropped_.load(std::memory_order_relaxed);
  }

 private:
  TraceEvent* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  alignas(64) std::atomic<std::uint64_t> head_{0};
  std::uint64_t cached_tail_ = 0;  // producer only
  std::atomic<std::uint64_t> dropped_{0};
  alignas(64) std::atomic<std::uint64_t> tail_{0};
};

// One trace, from start to stop: made, published and freed by diag/.
struct TraceSession {
  // The session's number (1, 2, ...): a fiber whose Fiber::trace_seq
  // differs has not had its name written in this session yet.
  std::uint32_t seq = 0;
  int nrings = 0;                       // Sched::ps.size()
  std::unique_ptr<TraceRing[]> rings;   // by P::id
  TraceRing offp;                       // producers hold g_trace_offp_mu
  // The writer thread sleeps on it; a producer wakes it when its ring
  // passes half full.
  Note wake;
};

// What every event site reads, on a cache line of its own: nothing that is
// written often may share it. Both are written only by diag/, at a trace's
// start and stop.
struct alignas(64) TraceGlobals {
  // True while a session is published (the one flag each event site reads).
  std::atomic<bool> on{false};
  // The running session, or null (release when published; producers load
  // it with acquire).
  std::atomic<TraceSession*> session{nullptr};
};
extern TraceGlobals g_trace;
// Serialises the off-P ring's producers (and the stopper, T2).
extern Mutex g_trace_offp_mu;

inline bool trace_on() { return g_trace.on.load(std::memory_order_relaxed); }

// The trace clock: RDTSC, ordered after the loads before it.
inline std::uint64_t trace_now() {
  _mm_lfence();
  return __rdtsc();
}

// --- Event sites (scheduler code calls these) ---------------------------
// Each is a relaxed load and a branch while no trace runs. `m` is the
// calling thread's M (null on a thread that is not an M).

void trace_create_slow(M* m, Fiber* f, std::uint64_t parent);
void trace_start_slow(M* m, Fiber* f);
void trace_stop_slow(M* m, Fiber* f, TraceStop why, WaitReason reason);
void trace_ready_slow(M* m, Fiber* f);
void trace_steal_slow(Fiber* f, int victim, std::uint32_t n);
void trace_blocking_done_slow(M* m, Fiber* f);
void trace_timer_slow();
void trace_netpoll_slow(M* m, Fiber* const* fs, int n);

// f was created by `parent` (its id; 0: a thread) and is runnable.
inline void trace_create(M* m, Fiber* f, std::uint64_t parent) {
  if (trace_on()) [[unlikely]] {
    trace_create_slow(m, f, parent);
  }
}
// f starts running on m's P. Before m->set_curg(f) on the scheduler
// context (T1).
inline void trace_start(M* m, Fiber* f) {
  if (trace_on()) [[unlikely]] {
    trace_start_slow(m, f);
  }
}
// f, running on m's P, leaves it.
inline void trace_stop(M* m, Fiber* f, TraceStop why,
                       WaitReason reason = WaitReason::kNone) {
  if (trace_on()) [[unlikely]] {
    trace_stop_slow(m, f, why, reason);
  }
}
// f was made runnable by ready() (the readier: m's running fiber, if any).
inline void trace_ready(M* m, Fiber* f) {
  if (trace_on()) [[unlikely]] {
    trace_ready_slow(m, f);
  }
}
// The calling M's P stole n fibers from P `victim`, f first.
inline void trace_steal(Fiber* f, int victim, std::uint32_t n) {
  if (trace_on()) [[unlikely]] {
    trace_steal_slow(f, victim, n);
  }
}
// f came back from goro::blocking() (running on m's P if it has one).
inline void trace_blocking_done(M* m, Fiber* f) {
  if (trace_on()) [[unlikely]] {
    trace_blocking_done_slow(m, f);
  }
}
// A timer is about to fire (the calling thread's M).
inline void trace_timer() {
  if (trace_on()) [[unlikely]] {
    trace_timer_slow();
  }
}
// A netpoll readied fs[0..n).
inline void trace_netpoll(M* m, Fiber* const* fs, int n) {
  if (trace_on()) [[unlikely]] {
    trace_netpoll_slow(m, fs, n);
  }
}

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_TRACE_H_
