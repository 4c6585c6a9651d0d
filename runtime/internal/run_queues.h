// Copyright goro authors.
//
// Where runnable fibers wait, and how the next one is chosen on the hot path
// (yield, park, exit): a P's runnext slot and local ring (RunQueue), the
// global queue (Sched::gq, under Sched::lock), and an M's pinned list
// (async-preempted fibers that must resume on that thread). Inline because
// every channel hand-off and every yield runs through them.
//
// Time slices. A fiber taken from runnext inherits the rest of its waker's
// slice (new_slice is not called), so sysmon sees a chain of hand-offs as one
// fiber and preempts it after one slice; the preempted fiber's runnext then
// goes behind the ring (yield_impl). And after kMaxRunnextStreak hand-offs in
// a row the ring gets a turn (runq_get), sysmon or not. So such a chain
// cannot starve the run queue.

#ifndef GORO_RUNTIME_INTERNAL_RUN_QUEUES_H_
#define GORO_RUNTIME_INTERNAL_RUN_QUEUES_H_

#include <atomic>
#include <cstdint>

#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {

// Every this many fresh slices a P looks at the global queue before its own
// (Go's schedtick % 61): without it, two fibers that keep readying each
// other on one P would starve the global queue.
inline constexpr std::uint32_t kGlobalQueueCheckTicks = 61;

// Hand-offs through runnext in a row, while the ring waits, before the ring
// gets a turn (Tokio's MAX_LIFO_POLLS_PER_TICK). The time slice bounds such a
// chain too, but only with sysmon and only after a whole slice; this bound is
// cooperative and costs nothing while the ring is empty, as in a ping-pong.
inline constexpr std::uint32_t kMaxRunnextStreak = 64;

// net/'s in-process hand-off (ready_handoff): how many of its wake-ups go
// through runnext (P::io_chain) before the ring has had a turn; the rest go
// behind the ring. 2 is one round trip per turn of a connection's pair of
// fibers: the reader of a request runs next, and so does the reader of its
// reply; then the next request waits its turn. Behind a long ring (more than
// kIoHandoffLongRing fibers) a turn comes around with cold caches (stacks,
// sockets), so the pair takes two round trips per turn: at 1,000 echo
// connections on two Ps that is 1.1-1.2x the throughput of one
// (bench/README.md, ninth session), at the cost of a tail latency -- every
// other round trip waits for the ring -- that is higher at the 99th percentile
// though lower on average.
inline constexpr std::uint32_t kIoHandoffChain = 2;
inline constexpr std::uint32_t kIoHandoffChainLongRing = 4;
inline constexpr std::uint32_t kIoHandoffLongRing = 128;

// --- The global queue ------------------------------------------------------
// It holds pointers, not a list through the fibers: moving a batch in or out
// under the lock touches no (possibly cold) Fiber object.

inline void global_put_locked(Sched* s, Fiber* f)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  s->gq.push_back(f);
  s->gq_size.store(s->gq_size.load(std::memory_order_relaxed) + 1,
                   std::memory_order_seq_cst);
}

inline Fiber* global_pop_locked(Sched* s)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  if (s->gq.empty()) return nullptr;
  Fiber* f = s->gq.front();
  s->gq.pop_front();
  s->gq_size.store(s->gq_size.load(std::memory_order_relaxed) - 1,
                   std::memory_order_relaxed);
  return f;
}

// Takes a fair share of the global queue; returns one to run, queues the rest
// on p. max == 0: no limit beyond the fair share.
Fiber* global_get_locked(Sched* s, P* p, int max)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock);

// Moves half of a full ring, plus f, to the global queue (find_work.cc).
void runq_overflow(P* p, Fiber* f);

// --- A P's own queues ------------------------------------------------------

// runq_put queues f on p (owner only): into runnext when `next` (the fiber
// there, if any, moves to the ring), else at the ring's tail.
inline void runq_put(P* p, Fiber* f, bool next) {
  if (next) {
    // Only the owner (us) stores a non-null value; thieves only take it
    // (CAS to null). So an empty runnext stays empty until our store, and a
    // release store publishes f without a locked instruction -- this is the
    // hot path of every channel hand-off. A caller that goes on to wakep()
    // must then issue the seq_cst fence of the submitter's half of the
    // wake-up protocol itself (ready(), fiber_start()).
    if (p->runnext.load(std::memory_order_relaxed) == nullptr) {
      p->runnext.store(f, std::memory_order_release);
      return;
    }
    // seq_cst: a thief may take the old one meanwhile; this is also the
    // full barrier before wakep reads npidle/nmspinning.
    Fiber* old = p->runnext.exchange(f, std::memory_order_seq_cst);
    if (old == nullptr) return;
    f = old;  // the kicked-out fiber goes to the ring
  }
  if (!p->runq.push(f)) runq_overflow(p, f);
}

// The next fiber of this P: runnext (inherits the time slice) or the ring.
inline Fiber* runq_get(P* p, bool* inherit) {
  Fiber* f = p->runnext.load(std::memory_order_relaxed);
  if (f != nullptr && p->runnext.compare_exchange_strong(
                          f, nullptr, std::memory_order_acquire)) {
    if (p->runnext_streak < kMaxRunnextStreak || p->runq.empty()) {
      ++p->runnext_streak;
      *inherit = true;
      return f;
    }
    runq_put(p, f, false);  // behind the fibers that waited in the ring
  }
  p->runnext_streak = 0;
  p->io_chain = 0;
  *inherit = false;
  return p->runq.pop();
}

// --- An M's pinned fibers (pushed and popped by the M itself) -------------

inline void pinned_push(M* m, Fiber* f) {
  MutexLock l(&m->pin_lock);
  f->sched_next = nullptr;
  if (m->pinned_tail != nullptr) {
    m->pinned_tail->sched_next = f;
  } else {
    m->pinned_head = f;
  }
  m->pinned_tail = f;
  m->has_pinned.store(true, std::memory_order_relaxed);
}

inline Fiber* pinned_pop(M* m) {
  if (!m->has_pinned.load(std::memory_order_relaxed)) return nullptr;
  MutexLock l(&m->pin_lock);
  Fiber* f = m->pinned_head;
  if (f != nullptr) {
    m->pinned_head = f->sched_next;
    if (m->pinned_head == nullptr) {
      m->pinned_tail = nullptr;
      m->has_pinned.store(false, std::memory_order_relaxed);
    }
    f->sched_next = nullptr;
  }
  return f;
}

// Moves every fiber pinned to m (stuck in the kernel) to the global queue and
// wakes an M for them; returns how many (idle.cc). Any thread.
int release_pinned(Sched* s, M* m);

// --- Choosing the next fiber on the fiber side -----------------------------

// A fiber starts a fresh time slice on p. A fiber taken from runnext
// inherits the slice of the one that readied it instead (Go's rule).
inline void new_slice(P* p) {
  ++p->schedtick;
  p->sched_seq.store(p->sched_seq.load(std::memory_order_relaxed) + 1,
                     std::memory_order_relaxed);
}

enum class Pick { kFiber, kNeedScheduler, kNothing };

// The fiber-side quick search: what a yielding/parking/exiting fiber may
// switch to directly. kNeedScheduler: something only the scheduler context
// handles is pending (shutdown, a spare to retire, a due timer, the global
// queue's turn); kNothing: this P has nothing ready.
inline Pick pick_next(Sched* s, M* m, Fiber** out, bool* inherit) {
  P* p = m->p;
  if (s->stopping.load(std::memory_order_relaxed)) return Pick::kNeedScheduler;
  if (p->is_spare &&
      p->spare_state.load(std::memory_order_acquire) == SpareState::kRetire) {
    return Pick::kNeedScheduler;
  }
  if (m->has_pinned.load(std::memory_order_relaxed) &&
      (++m->pin_tick & 1) != 0) {
    // Alternate pinned fibers with the run queue so neither starves. (sysmon
    // may have released them meanwhile: then go on.)
    if (Fiber* f = pinned_pop(m)) {
      *out = f;
      *inherit = false;
      return Pick::kFiber;
    }
  }
  const std::int64_t t0 = p->timers.earliest();
  if (t0 != 0 && mono_now_ns() >= t0) return Pick::kNeedScheduler;
  if (p->schedtick % kGlobalQueueCheckTicks == 0 &&
      (s->gq_size.load(std::memory_order_relaxed) > 0 || busy_poll_due(s))) {
    return Pick::kNeedScheduler;
  }
  *out = runq_get(p, inherit);
  if (*out == nullptr) {
    *out = pinned_pop(m);
    *inherit = false;
  }
  return *out != nullptr ? Pick::kFiber : Pick::kNothing;
}

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_RUN_QUEUES_H_
