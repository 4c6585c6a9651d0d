// Copyright goro authors.
//
// The calls a running fiber makes into the scheduler: park and ready (the
// park/ready API of park.h, for sync/ and net/), yield and preemption
// yields, blocking() enter/exit (Go's entersyscall/exitsyscall), sleeping,
// and timers. Each starts with acquirem (or MHold) so that no asynchronous
// preemption lands while it touches M or P state.

#include "runtime/internal/park.h"

#include <chrono>
#include <iterator>
#include <thread>
#include <vector>

#include "runtime/internal/api.h"
#include "runtime/internal/dcheck.h"
#include "runtime/internal/run_queues.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace goro::runtime_internal {

const char* wait_reason_name(WaitReason r) {
  // Indexed by WaitReason; the names issue 11 lists for dumps (Go's
  // waitReasonStrings where Go has the reason).
  static constexpr const char* kNames[] = {
      "",           "chan send",         "chan receive",
      "select",     "select (no cases)", "sleep",
      "mutex lock", "rwmutex rlock",     "rwmutex lock",
      "cond wait",  "semaphore acquire", "wait group wait",
      "IO wait"};
  static_assert(std::size(kNames) ==
                static_cast<std::size_t>(WaitReason::kIOWait) + 1);
  const auto i = static_cast<std::size_t>(r);
  return i < std::size(kNames) ? kNames[i] : "?";
}

// In goro_text: no preemption can move the fiber between reading the M and
// reading its curg.
GORO_TEXT Fiber* current_fiber() {
  M* m = current_m();
  return m == nullptr || m->blocking_p != nullptr ? nullptr : m->curg();
}

void global_put(Sched* s, Fiber* f) {
  {
    MutexLock l(&s->lock);
    global_put_locked(s, f);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see idle.cc
}

// In goro_text, so that the M read first is still the fiber's when its curg
// is read. The MHold is taken only when a yield is due: the common case is
// a call, a thread-local load and two plain loads.
GORO_TEXT void preempt_check() {
  M* m = current_m();
  if (m == nullptr) return;
  Fiber* f = m->curg();
  if (f == nullptr || !f->preempt_requested.load(std::memory_order_relaxed)) {
    return;
  }
  MHold hold;  // its release yields, unless a lock or blocking() forbids it
}

bool spin_may_help() {
  MHold hold;
  M* m = hold.m();
  if (m == nullptr || m->p == nullptr || m->curg() == nullptr) return false;
  const Sched* s = sched();
  // Another P is running fibers: neither idle nor spinning for work. Our
  // own P has nothing else to run (Go's sync_runtime_canSpin).
  return s->npidle.load(std::memory_order_relaxed) +
                 s->nmspinning.load(std::memory_order_relaxed) + 1 <
             s->nprocs &&
         m->p->runq.empty() &&
         m->p->runnext.load(std::memory_order_relaxed) == nullptr;
}

void park(bool (*commit)(void*), void* arg, WaitReason reason) {
  M* m = acquirem();
  Fiber* self = m != nullptr ? m->curg() : nullptr;
  if (self == nullptr || m->p == nullptr) {
    fatal("park called outside a fiber (or inside goro::blocking)");
  }
  self->wait_reason.store(reason, std::memory_order_relaxed);
  self->wait_since.store(g_coarse_now_ns.load(std::memory_order_relaxed),
                         std::memory_order_relaxed);
  m->after = M::After::kPark;
  m->after_fiber = self;
  m->after_commit = commit;
  m->after_arg = arg;
  trace_stop(m, self, TraceStop::kBlocked, reason);
  // Resumed, possibly on another M: drop the count the switcher held there.
  release_after_switch(leave_fiber(m, self, false));
}

namespace {

// kWaiting -> kRunnable. By the park protocol exactly one waker owns this
// transition (whoever removed the fiber from where its commit published it),
// so a load and a store suffice; the check still catches a second ready()
// of the same park in practice. acquire: pairs with the release store in
// finish_switch, so the fiber's saved context is visible.
void make_runnable(Fiber* f) {
  const FiberState st = f->state.load(std::memory_order_acquire);
  if (st != FiberState::kWaiting) {
    fatal("ready() of fiber %llu in state %s",
          static_cast<unsigned long long>(f->id), fiber_state_name(st));
  }
  f->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
  f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
}

}  // namespace

namespace {

// ready and ready_behind: `next` puts f in runnext (it inherits the caller's
// slice), else behind the fibers in the ring.
void ready_impl(Fiber* f, bool next) {
  MHold hold;
  M* m = hold.m();
  if (m != nullptr && m->p != nullptr) {
    // On a P: this M's runtime is alive until the M is joined.
    Sched* s = sched();
    // A fiber of an ended runtime (its waiter outlived run in a sync
    // object): it never runs again.
    if (f->epoch != s->epoch) return;
    P* p = m->p;
    if (!next) p->io_handoffs.add();
    if (!next && p->runq.size() >= p->runq.kCapacity / 2) {
      // A waker that readies many peers in turn (net/'s hand-off) would
      // otherwise overflow the ring, which moves half of it to the global
      // queue; past half full, the rest go there one by one.
      make_runnable(f);
      trace_ready(m, f);
      global_put(s, f);
      wakep(s);
      return;
    }
    // Whether f is the only fiber queued here (read before the put; the
    // owner is the only one that adds, so it can only have shrunk since).
    const bool alone =
        p->runq.empty() &&
        (next || p->runnext.load(std::memory_order_relaxed) == nullptr);
    make_runnable(f);
    trace_ready(m, f);
    runq_put(p, f, next);
    // A fiber readied into an empty runnext of a P whose ring is empty runs
    // as soon as the caller blocks or yields -- usually at once (a channel
    // hand-off, a mutex release before a wait). Waking an idle M for it
    // would only have that M steal it across CPUs or go back to sleep, which
    // costs more than the hand-off itself (Tokio's LIFO slot makes the same
    // trade). The same holds for a fiber queued behind nothing. If the
    // caller keeps running instead, sysmon wakes an M for the waiting fiber
    // within one of its periods (retake.h). Anything more in the ring is
    // stealable work: wake as usual.
    if (!(next ? p->runq.empty() : alone)) {
      std::atomic_thread_fence(std::memory_order_seq_cst);  // see runq_put
      wakep(s);
    } else if (s->sysmon_sleeping.load(std::memory_order_relaxed)) {
      // A calm sysmon (sysmon.cc) must know, in case the caller keeps
      // running. Relaxed, so no fence on the hand-off path: a kick lost in
      // the store-buffer window waits for sysmon's bounded calm sleep.
      sysmon_wake(s);
    }
    return;
  }
  // Off a P (a plain thread, or inside blocking()): the runtime may be
  // ending; hold it. Once run has cleared g_sched, or for a fiber of an
  // earlier runtime, the fiber is abandoned: nothing to do.
  SchedUse use;
  Sched* s = use.get();
  if (s == nullptr || f->epoch != s->epoch) return;
  if (!next) s->io_handoffs_off_p.fetch_add(1, std::memory_order_relaxed);
  make_runnable(f);
  trace_ready(m, f);
  global_put(s, f);
  wakep(s);
}

}  // namespace

void ready(Fiber* f) { ready_impl(f, true); }

void ready_behind(Fiber* f) { ready_impl(f, false); }

void ready_handoff(Fiber* f) {
  MHold hold;  // the P read here is the one ready_impl queues on
  M* m = hold.m();
  P* p = m != nullptr ? m->p : nullptr;
  bool next = false;
  if (p != nullptr) {
    const std::uint32_t chain = p->runq.size() > kIoHandoffLongRing
                                    ? kIoHandoffChainLongRing
                                    : kIoHandoffChain;
    next = p->io_chain < chain;
    if (next) {
      ++p->io_chain;
      p->io_handoffs.add();  // (ready_impl counts the other case)
    }
  }
  ready_impl(f, next);
}

void netpoll_inject(Sched* s, M* m, Fiber** fs, int n) {
  if (n <= 0) return;
  s->netpoll_readied.fetch_add(static_cast<std::uint64_t>(n),
                               std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) make_runnable(fs[i]);
  trace_netpoll(m, fs, n);
  const bool on_p = m != nullptr && m->p != nullptr;
  // Idle Ps get one fiber each through the global queue, and an M to run
  // it; the rest stay on this P, where this M runs them next.
  int spread = n;
  if (on_p) {
    const int idle = s->npidle.load(std::memory_order_seq_cst);
    spread = idle < n ? idle : n;
  }
  if (spread > 0) {
    {
      MutexLock l(&s->lock);
      for (int i = 0; i < spread; ++i) global_put_locked(s, fs[i]);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see idle.cc
    int starts = spread;
    while (starts-- > 0 && s->npidle.load(std::memory_order_seq_cst) > 0) {
      startm(s, nullptr, false);
    }
    sysmon_wake(s);  // every P busy: the fibers wait for a preemption
  }
  for (int i = spread; i < n; ++i) runq_put(m->p, fs[i], false);
}

namespace {
std::atomic<int> g_io_waiters{0};
}  // namespace

void io_waiters_add(int delta) {
  g_io_waiters.fetch_add(delta, std::memory_order_relaxed);
}

int io_waiters() { return g_io_waiters.load(std::memory_order_relaxed); }

std::uint64_t runtime_epoch() {
  {
    MHold hold;
    // On a P (a fiber, or the scheduler): its runtime runs until the M is
    // joined. A fiber's own copy (Fiber::epoch) is read rather than the
    // Sched's, whose cache line the hot counters beside it keep moving
    // between CPUs: every socket operation asks (1.8 % of an echo server's
    // CPU at 2 procs, none at 1).
    if (hold.m() != nullptr && hold.m()->p != nullptr) {
      const Fiber* f = hold.m()->curg();
      GORO_DCHECK(f == nullptr || f->epoch == sched()->epoch);
      return f != nullptr ? f->epoch : sched()->epoch;
    }
  }
  SchedUse use;
  return use.get() != nullptr ? use.get()->epoch : 0;
}

void yield_impl(bool preempted, bool async) {
  M* m = acquirem();
  Fiber* self = m != nullptr ? m->curg() : nullptr;
  if (self == nullptr || m->p == nullptr || m->blocking_p != nullptr) {
    releasem(m);
    if (!preempted) std::this_thread::yield();
    return;
  }
  self->preempt_requested.store(false, std::memory_order_relaxed);
  Sched* s = sched();
  if (preempted) {
    // A slice ended: fibers whose I/O is ready queue here before this one
    // resumes (find_work.cc "The netpoller").
    netpoll_queue_ready(s, m);
    // Fibers an M without a P queued globally (the blocked poller's, when
    // every P is busy) queue here too, ahead of the preempted fiber's next
    // turn, rather than wait for the 61st slice (Go queues the preempted
    // goroutine behind them on the global queue).
    if (s->gq_size.load(std::memory_order_relaxed) > 0) {
      Fiber* f;
      {
        MutexLock l(&s->lock);
        f = global_get_locked(s, m->p, 0);
      }
      // Outside the lock: a full ring overflows into the global queue.
      if (f != nullptr) runq_put(m->p, f, false);
    }
    // The slice of a runnext chain is over: whoever waits in runnext goes
    // behind the run queue, whose fibers run first.
    if (Fiber* r = m->p->runnext.exchange(nullptr, std::memory_order_acquire)) {
      runq_put(m->p, r, false);
    }
  }
  Fiber* next = nullptr;
  bool inherit = false;
  const Pick pick = pick_next(s, m, &next, &inherit);
  if (pick == Pick::kNothing && !preempted) {
    if (s->gq_size.load(std::memory_order_relaxed) == 0) {
      releasem(m);  // nobody else to run
      return;
    }
    // This P has nothing else, but the global queue has: go through the
    // scheduler behind those fibers (as Go's Gosched does), so that a fiber
    // yielding in a loop cannot starve them.
    m->after = M::After::kRequeueGlobal;
    m->after_fiber = self;
    trace_stop(m, self, TraceStop::kYield);
    release_after_switch(switch_from_fiber(m, self, nullptr, false, false));
    return;
  }
  if (preempted) count_preemption(m->p, async);
  // An async-preempted fiber resumes on this thread unless migration is
  // allowed: the compiler may hold thread-local addresses in registers.
  // With migration allowed it goes to the global queue, as in Go, so that
  // any P may pick it up (fairness across workers).
  m->after = !async                    ? M::After::kRequeue
             : s->opts.preempt_migrate ? M::After::kRequeueGlobal
                                       : M::After::kPin;
  m->after_fiber = self;
  // The successor starts a fresh time slice, even from runnext: the yielder
  // ends its turn (it queues behind the ring), so there is no hand-off chain
  // to count as one fiber, and a slice the yielder overran must not be
  // charged to a fiber that has not run yet -- sysmon would preempt that
  // one before its first line (seen under the sanitizers, whose slow
  // start-up overran the main fiber's slice before its first go() + yield).
  inherit = false;
  trace_stop(m, self,
             !preempted ? TraceStop::kYield
             : async    ? TraceStop::kPreemptAsync
                        : TraceStop::kPreemptCoop);
  release_after_switch(switch_from_fiber(m, self, next, inherit, false));
}

void preempt_yield(bool async) { yield_impl(true, async); }

namespace {

// The runtime is stopping (main returned): the fiber never runs again. It
// leaves for the scheduler context, which sees `stopping` and ends the
// thread; the fiber stays kRunning, abandoned like every other live fiber.
[[noreturn]] void leave_stopping(M* m) {
  m->blocking_p = nullptr;
  m->after = M::After::kNothing;
  switch_from_fiber(m, m->curg(), nullptr, false, false);
  fatal("a fiber of a stopped runtime resumed");
}

}  // namespace

bool blocking_enter() {
  M* m = acquirem();
  if (m == nullptr || m->curg() == nullptr || m->p == nullptr) {
    releasem(m);
    return false;
  }
  Sched* s = sched();
  P* p = m->p;
  // Fibers pinned to this thread (async-preempted) cannot wait for it: fn
  // may be waiting for one of them. They go with the P and may migrate.
  while (Fiber* f = pinned_pop(m)) runq_put(p, f, false);
  trace_stop(m, m->curg(), TraceStop::kBlocking);  // while it holds p
  p->set_m(nullptr);
  m->p = nullptr;
  m->blocking_p = p;
  m->curg()->wait_since.store(g_coarse_now_ns.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
  handoffp(s, p);
  {
    // Under the lock that stop_all_ms sets `stopping` with: either it sees
    // kInCall (and abandons this M instead of joining it, so that run does
    // not wait for fn), or we see `stopping` and never call fn.
    MutexLock l(&s->lock);
    if (!s->stopping.load(std::memory_order_relaxed)) {
      // stop_all_ms reads blocking_fiber after its CAS from kInCall (acquire
      // pairs with this release): by then this M may already have left the
      // fiber for its scheduler context, where curg() is null.
      m->blocking_fiber = m->curg();
      m->blocking_state.store(M::kInCall, std::memory_order_release);
      // The fiber keeps one count while in blocking(): it must not be
      // preempted (it holds no P), and blocking_exit drops it.
      return true;
    }
  }
  leave_stopping(m);
}

void blocking_exit() {
  M* m = current_m();  // still holding the count from blocking_enter
  int in_call = M::kInCall;
  if (!m->blocking_state.compare_exchange_strong(in_call, M::kNone,
                                                 std::memory_order_acq_rel)) {
    // run returned while fn ran: the Sched, the P and this Fiber may be
    // gone. Only M-owned data is touched from here on (see M).
    abandon_to_g0(m);
  }
  // Not abandoned: run_main joins this thread before freeing anything.
  Sched* s = sched();
  P* old = m->blocking_p;
  m->blocking_p = nullptr;
  {
    MutexLock l(&s->lock);
    if (s->stopping.load(std::memory_order_relaxed)) {
      l.unlock();
      leave_stopping(m);
    }
    P* p = pidle_remove_locked(s, old) ? old : pidle_get_locked(s);
    if (p != nullptr) acquirep(m, p);
  }
  trace_blocking_done(m, m->curg());  // on its new P, or off-P if none
  if (m->p == nullptr) {
    // No P is free: queue this fiber (and any fiber pinned to this thread:
    // this M is about to stop, so they may migrate after all) globally and
    // let this M stop.
    while (Fiber* f = pinned_pop(m)) global_put(s, f);
    Fiber* self = m->curg();
    m->after = M::After::kRequeueGlobal;
    m->after_fiber = self;
    m = switch_from_fiber(m, self, nullptr, false, false);
  }
  releasem(m);
}

namespace {

// A timer at `when` became the earliest of the caller's P.
void timer_new_earliest(Sched* s, std::int64_t when) {
  // The M blocked in netpoll (if any) may sleep past it (see find_work.cc
  // "The netpoller").
  netpoll_wake_for(s, when);
  // A calm sysmon sleeps until the earliest timer it knew of (sysmon.cc).
  if (s->sysmon_sleeping.load(std::memory_order_relaxed)) sysmon_wake(s);
}

}  // namespace

bool timer_start(Timer* t) {
  MHold hold;
  M* m = hold.m();
  if (m != nullptr && m->p != nullptr) {
    t->epoch = sched()->epoch;
    // A new earliest timer of this P: the M blocked in netpoll (if any)
    // may sleep past it (see find_work.cc "The netpoller"). `when` is read
    // before the add: once in the heap, the timer is any M's to run (and
    // its owner's to reset), so *t is not ours to read any more.
    const std::int64_t when = t->when;
    const TimerHeap::Added added = m->p->timers.add(t);
    // Heaps close only once every M has stopped (drop_timers).
    GORO_DCHECK(added != TimerHeap::Added::kClosed);
    if (added == TimerHeap::Added::kEarliest) timer_new_earliest(sched(), when);
    return true;
  }
  // Off a P: hold the runtime (see ready). No runtime: the timer never
  // fires, as for a fiber abandoned by run.
  SchedUse use;
  Sched* s = use.get();
  if (s == nullptr) {
    t->epoch = 0;
    return false;
  }
  t->epoch = s->epoch;
  switch (s->ps[0]->timers.add(t)) {
    case TimerHeap::Added::kClosed:  // the runtime is ending
      t->epoch = 0;
      return false;
    case TimerHeap::Added::kEarliest:
      // An idle M may be sleeping until a later deadline: wake one to
      // re-plan; a calm sysmon too.
      wake_idle_m_for_timer(s);
      sysmon_wake(s);
      return true;
    case TimerHeap::Added::kNotEarliest:
      return true;
  }
  return true;
}

void drop_timers(Sched* s) {
  std::vector<TimerHeap::Dropped> dropped;
  for (const auto& p : s->ps) p->timers.close(&dropped);
  for (const TimerHeap::Dropped& d : dropped) d.drop(d.arg);
}

namespace {

// The heaps of a running runtime hold the timers armed in it: no heap is
// freed while `s` is (the caller's P, or a SchedUse, keeps it running).
bool timer_stop_in(Sched* s, Timer* t) {
  // Armed in no runtime, or in one that has ended (its heaps are gone with
  // it, and its timers never fire): nothing to take it off.
  if (s == nullptr || t->epoch != s->epoch) return true;
  void* h = std::atomic_ref<void*>(t->heap).load(std::memory_order_acquire);
  for (;;) {
    if (h == nullptr) return false;  // fired or firing
    if (static_cast<TimerHeap*>(h)->remove(t)) return true;
    // Not on that heap: it fired -- or a retiring spare moved it
    // (TimerHeap::move_all_to), then look again on its new heap.
    void* now = std::atomic_ref<void*>(t->heap).load(std::memory_order_acquire);
    if (now == h) return false;
    h = now;
  }
}

}  // namespace

bool timer_stop(Timer* t) {
  MHold hold;
  M* m = hold.m();
  if (m != nullptr && m->p != nullptr) return timer_stop_in(sched(), t);
  SchedUse use;
  return timer_stop_in(use.get(), t);
}

void sleep_until_impl(std::int64_t when) {
  M* m = current_m();
  if (m == nullptr || m->curg() == nullptr || m->blocking_p != nullptr) {
    const std::int64_t now = mono_now_ns();
    if (when > now) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(when - now));
    }
    return;
  }
  if (when <= mono_now_ns()) return;
  Timer t;
  t.when = when;
  t.fire = [](void* f) { ready(static_cast<Fiber*>(f)); };
  t.arg = m->curg();
  park(
      [](void* tp) {
        auto* t = static_cast<Timer*>(tp);
        // As in timer_start: this M may go on to run a fiber that never
        // switches, and then whoever else keeps time must know of the new
        // earliest timer -- a poller or a calm sysmon that would sleep past
        // it (sysmon wakes an M for it once it is overdue, retake.h).
        // `when` is read before the add: once in the heap the timer may
        // fire on another M (run_all_timers) and its fiber resume there,
        // reusing the stack frame that holds it.
        const std::int64_t when = t->when;
        const TimerHeap::Added added = current_m()->p->timers.add(t);
        GORO_DCHECK(added != TimerHeap::Added::kClosed);  // Ms run: open
        if (added == TimerHeap::Added::kEarliest) {
          timer_new_earliest(sched(), when);
        }
        return true;
      },
      &t, WaitReason::kSleep);
}

}  // namespace goro::runtime_internal
