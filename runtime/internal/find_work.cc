// Copyright goro authors.
//
// Finding work on the scheduler context (find_runnable), per round, in this
// order: give back a spare P being retired; run this P's expired timers; the
// global queue every kGlobalQueueCheckTicks-th slice (fairness); runnext and
// the local ring; fibers pinned to this M; the global queue; the netpoller
// hook (non-blocking); expired timers of other Ps; stealing half of a random
// victim's ring (and, on the last of kStealRounds rounds, its runnext); then
// giving the P up -- rechecking every queue after the parker's fence (idle.cc)
// -- and sleeping until the earliest timer of all Ps.
//
// The netpoller (net/ behind Hooks::netpoll; Go's design in proc.go). Three
// places poll:
//   * find_runnable, when this P's queues are empty: a non-blocking poll by
//     one M at a time (Sched::poll_busy), only while some fiber waits for
//     I/O -- also while an M is blocked in netpoll: harvesting events on a
//     P that is running anyway beats waking that M for them. When nothing
//     else is found, the M keeps polling for up to kPollSpinNs (50 us)
//     before it gives up its P (netpoll_spin) -- or less, or not at all,
//     while the blocking polls that follow wait long (Sched::poll_spin_ns).
//   * the idle path: an M that gave up its P and would sleep blocks in
//     netpoll instead -- at most one M at a time (it CASes
//     Sched::last_poll to 0) -- until the earliest timer of all Ps, with
//     nanosecond precision, or until broken. While it is there (or an M
//     spins, about to be there) the other idle Ms sleep with no deadline:
//     the poller is the one thread that wakes for a timer ("Who owns the
//     timers", below). When it returns it takes an idle P if there is one
//     and runs the fibers it readied (spreading them over idle Ps,
//     netpoll_inject), or queues them globally.
//   * a fiber's slice end (yield_impl, preempted): a non-blocking poll
//     whose fibers queue on this P, so that I/O is not left to sysmon's
//     10 ms poll while fibers that never block keep every P busy (Go gets
//     the same from putting a preempted goroutine on the global queue).
//   * a busy P (one that keeps finding fibers in its own queues), every
//     kGlobalQueueCheckTicks-th slice, when nobody has polled for
//     kBusyPollNs (250 us) (netpoll_busy). Without it, such Ps would leave
//     I/O to sysmon's 10 ms poll -- and they stay busy for good once
//     in-process loopback pairs hand their readers off directly
//     (net/internal/poll.h), which bypasses epoll; a reader whose bytes the
//     kernel delivered late, or a connection to another process, then
//     waited up to 10 ms.
//   * sysmon, while some P is busy, when nobody has polled for 10 ms.
// A new earliest timer must not wait behind a poller sleeping longer: the
// timer's adder (timer_start on a P, an M going idle with its own deadline)
// breaks the poll (netpoll_wake_for; net/ writes its eventfd once). The race
// this must win: adder "timer in heap -> seq_cst fence -> load last_poll,
// poll_until", poller "CAS last_poll -> 0 -> store poll_until -> seq_cst
// fence -> re-read the earliest timer". With both fences either the adder
// sees last_poll == 0 and a poll_until that is either final or stale -- and
// then the poller's re-read sees the adder's timer -- or the adder sees no
// poller and sleeps with its own deadline (or polls itself).
//
// Who owns the timers. While some fiber waits for I/O (or a timer is
// pending), exactly one thread keeps the earliest timer's deadline, and the
// other idle Ms sleep with none, so that one timer wakes one thread:
//   * the M blocked in netpoll keeps it (until the earliest timer; a new
//     earlier one breaks the poll, above). An M going idle sees
//     last_poll == 0 and sleeps with no deadline.
//   * an M in its poll spin is the poller to be: it blocks in netpoll when
//     its spin ends, and no other M may block there meanwhile. An M going
//     idle then sleeps with no deadline behind it and says so
//     (Sched::poll_owed; stopm_behind_spinner).
//   * a spinner that takes work instead of blocking hands the deadline on
//     (poll_owed_handoff): if poll_owed is set, no other spinner spins and
//     nobody blocks in netpoll, it wakes one idle M, with no P, which goes
//     back through the idle path and blocks in netpoll in its place.
//   * whoever wins last_poll (blocks in netpoll) clears poll_owed: it
//     computes the earliest timer of all Ps after its fence, so it keeps
//     every deadline the sleepers gave up.
// The race to win is the sleeper's flag against the spinner's exit:
//   sleeper: on the idle list, poll_owed = 1 (under Sched::lock) ->
//            fence(seq_cst) -> load npoll_spinning, last_poll
//   spinner: npoll_spinning-- (seq_cst RMW) -> load poll_owed (seq_cst)
// Either the spinner sees the flag (and blocks in netpoll or hands off), or
// the sleeper sees no spinner: then, unless an M blocks in netpoll, it
// leaves the idle list and goes round again (it may become the poller
// itself). A hand-off that finds another spinner still spinning leaves the
// flag to it: that spinner's decrement comes after the flag's store or
// after our decrement, so it, or the one of us that takes the lock last,
// sees both. A poller that returns with work does not hand off (Go's
// findrunnable does not either): another P's timer then waits until an M
// comes through find_runnable (which runs every P's due timers) or the
// idle path.
//
// The backstop: sysmon. A timer armed on a P wakes no idle M (that P's M
// runs it when it next comes through here), so if that M then runs a
// fiber that never switches -- a call-free loop with no asynchronous
// preemption (ThreadSanitizer, Options::async_preempt = false) or with
// preemption refused -- and every other M went idle before the timer was
// armed (no deadline), or the poller above took work instead, nobody keeps
// it. sysmon checks the earliest timer of all Ps each round; one overdue by
// a period while a P idles and nobody spins makes it wake an M (wakep),
// which takes the idle P and runs it here (Go's sysmon does the same:
// "timers that should have already run, perhaps because there is an
// unpreemptible P"; retake.h, wake_for_overdue_timer). Invariant: a due
// timer and an idle P are never both left to nobody for longer than about
// two sysmon periods (an M without a P takes the idle P itself, below).
// With every P busy the timer waits for a switch, which preemption forces
// at the end of a slice where it can (as in Go).
//
// Time. Each P has a timer heap; any M that finds a timer due runs it. An M
// that gives up its P sleeps on its futex until the earliest timer of all Ps
// (absolute CLOCK_MONOTONIC, timer slack 1 ns), so a sleeping fiber is woken
// within the kernel's wake-up latency, not a millisecond tick.

#include "runtime/internal/run_queues.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace goro::runtime_internal {
namespace {

// Rounds over all victims before a spinning M gives up (Go's stealTries).
constexpr int kStealRounds = 4;
// Pauses (about 3 us here) before taking a running P's runnext fiber, which
// its owner is about to run (Go sleeps 3 us at this point).
constexpr int kRunnextStealPauses = 300;

// Runs expired timers of every P (ours first). Returns true if any fired.
bool run_all_timers(Sched* s, P* self, std::int64_t* now) {
  bool fired = false;
  const int n = static_cast<int>(s->ps.size());
  for (int i = -1; i < n; ++i) {
    P* q = i < 0 ? self : s->ps[static_cast<std::size_t>(i)].get();
    if (i >= 0 && q == self) continue;
    const std::int64_t t0 = q->timers.earliest();
    if (t0 == 0) continue;
    if (*now == 0) *now = mono_now_ns();
    if (t0 > *now) continue;
    const int fired_here = q->timers.run_expired(*now);
    if (fired_here > 0) {
      self->timers_fired.add(static_cast<std::uint64_t>(fired_here));
      fired = true;
    }
  }
  return fired;
}

Fiber* steal_work(Sched* s, P* p, bool* inherit) {
  const int n = static_cast<int>(s->ps.size());
  for (int round = 0; round < kStealRounds; ++round) {
    const bool last = round == kStealRounds - 1;
    const int start = static_cast<int>(fastrand(p) % static_cast<unsigned>(n));
    for (int k = 0; k < n; ++k) {
      P* v = s->ps[static_cast<std::size_t>((start + k) % n)].get();
      if (v == p) continue;
      if (Fiber* f = v->runq.steal_into(p->runq)) {
        p->steals.add();
        trace_steal(f, v->id, p->runq.size() + 1);
        *inherit = false;
        return f;
      }
      if (last) {
        Fiber* r = v->runnext.load(std::memory_order_relaxed);
        if (r == nullptr) continue;
        if (v->status.load(std::memory_order_relaxed) == PStatus::kRunning) {
          // Its owner is about to run it (it was just readied there); give it
          // a moment before taking it across CPUs.
          for (int spin = 0; spin < kRunnextStealPauses; ++spin) {
            __builtin_ia32_pause();
          }
        }
        if (v->runnext.compare_exchange_strong(r, nullptr,
                                               std::memory_order_acquire)) {
          p->steals.add();
          trace_steal(r, v->id, 1);
          *inherit = false;
          return r;
        }
      }
    }
  }
  return nullptr;
}

bool any_local_work(Sched* s) {
  for (auto& q : s->ps) {
    if (!q->runq.empty() ||
        q->runnext.load(std::memory_order_seq_cst) != nullptr) {
      return true;
    }
  }
  return s->gq_size.load(std::memory_order_seq_cst) > 0;
}

// Takes up to `max` (0: a fair share) fibers from the global queue.
Fiber* global_get(Sched* s, P* p, int max) {
  MutexLock l(&s->lock);
  return global_get_locked(s, p, max);
}

// Non-blocking poll, one M at a time; returns a fiber for this M to run
// (the others it readied are queued), or null.
Fiber* netpoll_nonblocking(Sched* s, M* m) {
  if (!netpoll_queue_ready(s, m)) return nullptr;
  bool inh = false;
  return runq_get(m->p, &inh);
}

// How long an M that found nothing else polls the network before it gives
// up its P, while fibers wait for I/O (see find_runnable): at most
// kPollSpinNs, adapted to how soon the next event comes once a P has run
// dry (Sched::poll_spin_ns), as the M that then blocks in epoll sees it.
// On a busy server it comes within microseconds and a spin catches it
// without a thread wake-up; when events are a millisecond or more apart
// (100 messages a second on one connection) every spin is wasted -- it
// cost 2-3x Go's CPU per message (bench/echo_idle_cpu.py) -- so the spin
// shrinks to nothing, and grows back once an event ends a blocking poll
// within what a full spin lasts.
constexpr std::int64_t kPollSpinNs = 50'000;
constexpr std::int64_t kPollSpinMinNs = 4'000;  // below this: no spin
// A blocking poll that lasted this long: spinning would not have helped.
constexpr std::int64_t kPollSpinUselessNs = 4 * kPollSpinNs;

void poll_spin_grow(Sched* s) {
  const std::int64_t v = s->poll_spin_ns.load(std::memory_order_relaxed);
  if (v < kPollSpinNs) {
    s->poll_spin_ns.store(
        std::min(kPollSpinNs, std::max(kPollSpinMinNs, 2 * v)),
        std::memory_order_relaxed);
  }
}

void poll_spin_shrink(Sched* s) {
  const std::int64_t v = s->poll_spin_ns.load(std::memory_order_relaxed) / 2;
  s->poll_spin_ns.store(v < kPollSpinMinNs ? 0 : v, std::memory_order_relaxed);
}

// *spun: this M spun (and so may owe the timers, "Who owns the timers").
Fiber* netpoll_spin(Sched* s, M* m, P* p, bool* inherit, bool* spun) {
  if (g_hooks.netpoll == nullptr || io_waiters() == 0) return nullptr;
  const std::int64_t budget = s->poll_spin_ns.load(std::memory_order_relaxed);
  if (budget == 0) return nullptr;
  *spun = true;
  s->npoll_spinning.fetch_add(1, std::memory_order_seq_cst);
  struct Done {
    Sched* s;
    ~Done() { s->npoll_spinning.fetch_sub(1, std::memory_order_seq_cst); }
  } done{s};
  const std::int64_t start = mono_now_ns();
  std::int64_t next_poll = start;
  // An empty poll is a wasted system call: poll again only after a pause
  // that doubles (about 2, 4, 8, 16 us), watching the queues meanwhile.
  std::int64_t gap = 2'000;
  for (;;) {
    const std::int64_t now = mono_now_ns();
    if (s->stopping.load(std::memory_order_relaxed) || now - start > budget) {
      return nullptr;
    }
    if (now >= next_poll) {
      if (Fiber* f = netpoll_nonblocking(s, m)) {
        poll_spin_grow(s);
        *inherit = false;
        return f;
      }
      next_poll = now + gap;
      if (gap < 16'000) gap *= 2;
    }
    for (int i = 0; i < 30; ++i) __builtin_ia32_pause();
    if (Fiber* f = runq_get(p, inherit)) return f;
    if (s->gq_size.load(std::memory_order_relaxed) > 0) {
      if (Fiber* f = global_get(s, p, 0)) {
        *inherit = false;
        return f;
      }
    }
    // Another P's poll may have queued a batch there: share it.
    if (Fiber* f = steal_work(s, p, inherit)) return f;
  }
}

enum class Polled { kNo, kWithP, kWithoutP, kBehindSpinner };

// The spinner's half of "Who owns the timers": called by an M that spun
// (its npoll_spinning decrement, a seq_cst RMW, came first) and takes work
// instead of blocking in netpoll. If an idle M sleeps with no deadline
// counting on it (poll_owed), it wakes one idle M, with no P, to block in
// netpoll until the earliest timer in its place -- unless another spinner
// still spins (it checks the flag when it leaves; whichever of us reads
// npoll_spinning last under the lock sees the other gone) or an M already
// blocks in netpoll (it has the timers).
void poll_owed_handoff(Sched* s) {
  if (!s->poll_owed.load(std::memory_order_seq_cst)) return;
  M* idle = nullptr;
  {
    MutexLock l(&s->lock);
    if (!s->poll_owed.load(std::memory_order_relaxed) ||
        s->npoll_spinning.load(std::memory_order_seq_cst) > 0) {
      return;
    }
    s->poll_owed.store(false, std::memory_order_relaxed);
    if (s->last_poll.load(std::memory_order_seq_cst) == 0) return;
    // None idle: every M runs, and comes back through find_runnable (and
    // the timers) before it sleeps.
    idle = midle_pop_locked(s);
    if (idle == nullptr) return;
    idle->next_p = nullptr;
    idle->next_spinning = false;
  }
  s->threads_woken.fetch_add(1, std::memory_order_relaxed);
  idle->note.wake();
}

// The idle M's blocking poll (see "The netpoller"). kNo: this M did not
// poll (someone else does, or nobody waits for anything): sleep on the
// note. kBehindSpinner: a poll spinner will poll, and a timer is pending:
// sleep with no deadline behind it (stopm_behind_spinner). kWithP: it polled
// and took an idle P (its readied fibers are queued): look for work. kWithoutP:
// it polled but every P is busy (the fibers went to the global queue): sleep on
// the note with no deadline, as Go's findrunnable does -- going back into epoll
// would have this M take events one at a time from Ps that harvest them in
// batches.
Polled netpoll_blocking(Sched* s, M* m, std::int64_t deadline) {
  if (g_hooks.netpoll == nullptr || !netpoll_on()) return Polled::kNo;
  if (io_waiters() == 0 && deadline == 0) return Polled::kNo;
  // A spinning M harvests the events; it blocks here itself when its spin
  // ends (it always comes here next, or runs what it found).
  if (s->npoll_spinning.load(std::memory_order_seq_cst) > 0) {
    return deadline != 0 ? Polled::kBehindSpinner : Polled::kNo;
  }
  // Only another poller's 0 stops us; sysmon's poll moves the time on.
  std::int64_t lp = s->last_poll.load(std::memory_order_seq_cst);
  while (lp != 0 && !s->last_poll.compare_exchange_weak(
                        lp, 0, std::memory_order_seq_cst)) {
  }
  if (lp == 0) return Polled::kNo;
  // This M has the timers now: nobody owes them any more.
  s->poll_owed.store(false, std::memory_order_seq_cst);
  s->poll_until.store(deadline, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // A timer added before the fence by an M that saw no poller is visible.
  const std::int64_t again = earliest_timer(s);
  if (again != 0 && (deadline == 0 || again < deadline)) {
    deadline = again;
    s->poll_until.store(deadline, std::memory_order_seq_cst);
  }
  Fiber* fs[kNetpollBatch];
  int n = 0;
  const std::int64_t blocked_at = mono_now_ns();
  if (!s->stopping.load(std::memory_order_acquire) &&
      (deadline == 0 || deadline > blocked_at)) {
    n = g_hooks.netpoll(deadline == 0 ? -1 : deadline, fs, kNetpollBatch);
  }
  // How long the runtime waited for the network: a spin would have caught
  // an event this soon without a wake-up, and is wasted on gaps this long.
  const std::int64_t blocked = mono_now_ns() - blocked_at;
  if (n > 0 && blocked <= kPollSpinNs) poll_spin_grow(s);
  if (blocked >= kPollSpinUselessNs) poll_spin_shrink(s);
  s->poll_until.store(0, std::memory_order_relaxed);
  s->last_poll.store(mono_now_ns(), std::memory_order_seq_cst);
  if (s->stopping.load(std::memory_order_acquire)) return Polled::kWithP;
  {
    MutexLock l(&s->lock);
    if (P* p = pidle_get_locked(s)) acquirep(m, p);
  }
  // With a P: run them here (and spread them); without one every P is
  // busy: they go to the global queue.
  netpoll_inject(s, m, fs, n);
  return m->p != nullptr ? Polled::kWithP : Polled::kWithoutP;
}

// A busy P's poll ("The netpoller"): claims the poll as sysmon does (CAS
// last_poll -> now), drains what epoll has (stale events of in-process
// loopback pairs may lie ahead of the ones that matter: net/internal/poll.h,
// "Stale events") and queues the fibers on this P, behind its own.
void netpoll_busy(Sched* s, M* m) {
  std::int64_t lp = s->last_poll.load(std::memory_order_seq_cst);
  const std::int64_t now = mono_now_ns();
  if (lp == 0 || lp + kBusyPollNs > now ||
      !s->last_poll.compare_exchange_strong(lp, now,
                                            std::memory_order_seq_cst)) {
    return;
  }
  if (s->poll_busy.load(std::memory_order_relaxed) ||
      s->poll_busy.exchange(true, std::memory_order_acquire)) {
    return;
  }
  Fiber* fs[kNetpollDrainBatch];
  const int n = g_hooks.netpoll(0, fs, kNetpollDrainBatch);
  s->poll_busy.store(false, std::memory_order_release);
  netpoll_inject(s, m, fs, n);
}

}  // namespace

bool netpoll_queue_ready(Sched* s, M* m) {
  if (g_hooks.netpoll == nullptr || io_waiters() == 0 ||
      s->poll_busy.load(std::memory_order_relaxed) ||
      s->poll_busy.exchange(true, std::memory_order_acquire)) {
    return false;
  }
  // On a preempted fiber's stack (yield_impl): a small batch, so that the
  // frames fit kPreemptFrames (stack.h). Events not taken stay on epoll's
  // ready list for the next poll.
  Fiber* fs[kPreemptPollBatch];
  const int n = g_hooks.netpoll(0, fs, kPreemptPollBatch);
  s->poll_busy.store(false, std::memory_order_release);
  netpoll_inject(s, m, fs, n);
  return n > 0;
}

void netpoll_wake_for(Sched* s, std::int64_t when) {
  if (g_hooks.netpoll_break == nullptr) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see "The netpoller"
  if (s->last_poll.load(std::memory_order_seq_cst) != 0) return;  // nobody
  const std::int64_t until = s->poll_until.load(std::memory_order_seq_cst);
  if (when == 0 || until == 0 || when < until) g_hooks.netpoll_break();
}

Fiber* global_get_locked(Sched* s, P* p, int max) {
  const int size = s->gq_size.load(std::memory_order_relaxed);
  if (size == 0) return nullptr;
  int n = size / s->nprocs + 1;
  if (n > size) n = size;
  if (max > 0 && n > max) n = max;
  if (n > static_cast<int>(kLocalRunQueueSize / 2)) {
    n = kLocalRunQueueSize / 2;
  }
  Fiber* f = global_pop_locked(s);
  for (int i = 1; i < n; ++i) {
    Fiber* g = global_pop_locked(s);
    if (!p->runq.push(g)) {  // cannot happen with an empty ring; be safe
      global_put_locked(s, g);
      break;
    }
  }
  return f;
}

void runq_overflow(P* p, Fiber* f) {
  // The P's own buffer, not a 1 KiB local: this runs on fiber stacks, a
  // preempted one's included (kPreemptFrames, stack.h).
  Fiber** batch = p->overflow_batch;
  for (;;) {
    std::uint32_t n = p->runq.take_half_for_overflow(batch);
    if (n == 0) {  // a thief made room
      if (p->runq.push(f)) return;
      continue;
    }
    batch[n++] = f;
    Sched* s = sched();
    MutexLock l(&s->lock);
    for (std::uint32_t i = 0; i < n; ++i) global_put_locked(s, batch[i]);
    return;
  }
}

std::int64_t earliest_timer(Sched* s) {
  std::int64_t best = 0;
  for (auto& q : s->ps) {
    const std::int64_t t = q->timers.earliest();
    if (t != 0 && (best == 0 || t < best)) best = t;
  }
  return best;
}

Fiber* find_runnable(Sched* s, M* m, bool* inherit) {
  // Whatever is found, a spinning M stops spinning (and may wake another).
  auto found = [&](Fiber* f, bool inherited) {
    if (m->spinning) reset_spinning(s, m);
    *inherit = inherited;
    return f;
  };
  for (;;) {
    if (s->stopping.load(std::memory_order_acquire)) return nullptr;
    if (m->p == nullptr) {
      // No P. A timer already due needs one: take an idle P if there is one
      // (this M may have been woken without a P, by poll_owed_handoff, or
      // a P may have gone idle since it last looked) -- never sleep while
      // an idle P and a due timer are left to nobody. Otherwise every P is
      // busy and their Ms run it at their next switch (an M whose P goes
      // idle rechecks the timers first, below): sleep until handed a P
      // rather than spin.
      std::int64_t deadline = earliest_timer(s);
      if (deadline != 0 && deadline <= mono_now_ns()) {
        MutexLock l(&s->lock);
        if (P* q = pidle_get_locked(s)) {
          acquirep(m, q);
          continue;
        }
        deadline = 0;
      }
      const Polled polled = netpoll_blocking(s, m, deadline);
      if (polled == Polled::kWithP) continue;
      if (polled == Polled::kBehindSpinner) {
        stopm_behind_spinner(s, m);
        continue;
      }
      // An M blocked in netpoll wakes for the timers: not us too. After a
      // poll without a P, every P is busy: their Ms run the timers.
      if (polled == Polled::kWithoutP ||
          s->last_poll.load(std::memory_order_seq_cst) == 0) {
        deadline = 0;
      }
      stopm(s, m, deadline);
      continue;
    }
    P* p = m->p;
    if (p->is_spare &&
        p->spare_state.load(std::memory_order_acquire) == SpareState::kRetire) {
      retire_spare(s, m);
      continue;
    }
    std::int64_t now = 0;
    if (p->timers.earliest() != 0) run_all_timers(s, p, &now);

    if (p->schedtick % kGlobalQueueCheckTicks == 0) {
      if (busy_poll_due(s)) netpoll_busy(s, m);
      if (s->gq_size.load(std::memory_order_relaxed) > 0) {
        // A fair share, not Go's one fiber: a P whose own queue never runs
        // dry (net/'s hand-offs keep it fed) would otherwise serve the
        // global queue at one fiber per kGlobalQueueCheckTicks slices, and
        // the fibers there would wait for hundreds of milliseconds.
        // reset_spinning (in found) may take s->lock: global_get drops it.
        if (Fiber* f = global_get(s, p, 0)) return found(f, false);
      }
    }
    bool inh = false;
    if (Fiber* f = runq_get(p, &inh)) return found(f, inh);
    if (Fiber* f = pinned_pop(m)) return found(f, false);
    if (s->gq_size.load(std::memory_order_relaxed) > 0) {
      if (Fiber* f = global_get(s, p, 0)) return found(f, false);
    }
    if (Fiber* f = netpoll_nonblocking(s, m)) return found(f, false);
    if (run_all_timers(s, p, &now)) continue;

    // Steal, unless enough Ms are already looking.
    const int busy = s->nprocs - s->npidle.load(std::memory_order_relaxed);
    if (m->spinning ||
        2 * s->nmspinning.load(std::memory_order_relaxed) < busy) {
      if (!m->spinning) {
        m->spinning = true;
        s->nmspinning.fetch_add(1, std::memory_order_seq_cst);
      }
      if (Fiber* f = steal_work(s, p, &inh)) return found(f, inh);
    }

    // Fibers wait for I/O: poll for a moment before giving up the P. On a
    // busy server the next event is microseconds away, and harvesting it
    // here keeps its fiber on this P and this thread awake, where sleeping
    // would cost two thread wake-ups (the poller's and this M's).
    bool spun = false;
    if (Fiber* f = netpoll_spin(s, m, p, &inh, &spun)) {
      poll_owed_handoff(s);
      return found(f, inh);
    }

    // Nothing to do: give up the P.
    {
      MutexLock l(&s->lock);
      if (s->stopping.load(std::memory_order_relaxed)) return nullptr;
      if (Fiber* f = global_get_locked(s, p, 0)) {
        l.unlock();
        if (spun) poll_owed_handoff(s);
        return found(f, false);
      }
      m->p = nullptr;
      pidle_put_locked(s, p);
    }
    const bool was_spinning = m->spinning;
    if (was_spinning) {
      m->spinning = false;
      if (s->nmspinning.fetch_sub(1, std::memory_order_seq_cst) <= 0) {
        fatal("find_runnable: negative nmspinning");
      }
    }
    // The parker's half of the wake-up protocol (see idle.cc).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t deadline = earliest_timer(s);
    const bool timer_due = deadline != 0 && deadline <= mono_now_ns();
    if (any_local_work(s) || timer_due) {
      MutexLock l(&s->lock);
      if (P* q = pidle_get_locked(s)) {
        acquirep(m, q);
        if (was_spinning) {
          m->spinning = true;
          s->nmspinning.fetch_add(1, std::memory_order_seq_cst);
        }
        l.unlock();
        if (spun) poll_owed_handoff(s);
        continue;
      }
    }
    const Polled polled = netpoll_blocking(s, m, deadline);
    if (polled == Polled::kWithP) continue;
    if (polled == Polled::kWithoutP) {
      stopm(s, m, 0);  // every P is busy; see netpoll_blocking
      continue;
    }
    if (polled == Polled::kBehindSpinner) {
      stopm_behind_spinner(s, m);
      continue;
    }
    if (deadline != 0 && s->last_poll.load(std::memory_order_seq_cst) == 0) {
      // An M is blocked in netpoll: it wakes for timers, once broken if it
      // sleeps past ours; we sleep until handed a P.
      netpoll_wake_for(s, deadline);
      deadline = 0;
    }
    stopm(s, m, deadline);
  }
}

}  // namespace goro::runtime_internal
