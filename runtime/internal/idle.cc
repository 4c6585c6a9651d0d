// Copyright goro authors.
//
// Idle Ps and Ms: who runs, who sleeps, and who gets woken.
//
// An M must hold a P to run fibers. Idle Ps sit on Sched::idle_p (counted in
// npidle), idle Ms sleep on their Note on Sched::idle_m; both lists are under
// Sched::lock. startm gives a P to an idle (or new) M and wakes it; wakep
// does that only when an idle P exists and nobody is already looking for
// work; handoffp passes the P of an M about to block (blocking()) to another
// M, or parks it; stopm puts an M to sleep until it is handed a P or its
// deadline (the earliest timer) passes.
//
// Spinning and parking Ms (Go's protocol, see proc.go "Worker thread parking/
// unparking"). An M looking for work without having found any is "spinning"
// (Sched::nmspinning). At most about half the busy Ps' worth of Ms spin. The
// lost-wake-up problem is a store-load race between:
//   submitter: publish work (runnext exchange, ring push, global queue)
//              -> seq_cst -> if npidle > 0 && nmspinning == 0: wakep()
//   parker:    release P (npidle++, under lock) -> nmspinning-- (seq_cst)
//              -> fence(seq_cst) -> recheck every P's queues and the global
//              queue; take a P back if anything is there (find_runnable)
// With the seq_cst fences (an RMW or an explicit fence on each side) at least
// one of them sees the other's store. A spinning M that finds work stops
// spinning and, if it was the last spinner, wakes another (reset_spinning), so
// a burst of go() calls ramps up threads one at a time instead of waking all.
// One deliberate exception: ready() that puts a fiber into an empty runnext
// of a P whose ring is empty does not call wakep -- that fiber runs as soon
// as the caller blocks, which in a hand-off is at once, and waking a thread
// for it costs more than the hand-off. Nothing is lost: the fiber is on a
// running P; if that P's fiber keeps running without switching, sysmon calls
// wakep after one of its periods (retake.h). Such a store needs no locked
// instruction (runq_put).
//
// Spare Ps. sysmon lends a P's spare (Sched::ps[nprocs + i]) to another M
// while the M holding P i is stuck in the kernel in a system call that did
// not go through goro::blocking() (lend_spare): the stuck M keeps its P (it
// runs its fiber on return), the spare runs everything else. Once the stuck
// M runs again sysmon marks the spare kRetire; the M running it gives it back
// at its next scheduling point (retire_spare), or sysmon switches it off if
// it idles on the list (retire_idle_spare). Fibers on a spare are preempted
// only cooperatively (see preempt/).

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <vector>

#include "runtime/internal/run_queues.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {

// --- The idle lists (under Sched::lock) ------------------------------------

// A lent spare (kOn) is listed like any idle P, so that timers and wake-ups
// find it while its stuck M is away; it is not counted in npidle (which
// counts the nprocs real Ps). A spare being retired or switched off is never
// listed.
void pidle_put_locked(Sched* s, P* p) {
  p->status.store(PStatus::kIdle, std::memory_order_relaxed);
  p->set_m(nullptr);
  if (p->is_spare &&
      p->spare_state.load(std::memory_order_acquire) != SpareState::kOn) {
    p->spare_state.store(SpareState::kOff, std::memory_order_release);
    return;
  }
  p->idle_next = s->idle_p;
  s->idle_p = p;
  (p->is_spare ? s->nspare_idle : s->npidle)
      .fetch_add(1, std::memory_order_seq_cst);
}

// A regular P leaving the idle list wakes sysmon from its idle sleep (the
// seq_cst decrement, then sysmon_wake's load: see Sched::sysmon_sleeping).
P* pidle_get_locked(Sched* s) {
  P* p = s->idle_p;
  if (p == nullptr) return nullptr;
  s->idle_p = p->idle_next;
  p->idle_next = nullptr;
  if (p->is_spare) {
    s->nspare_idle.fetch_sub(1, std::memory_order_seq_cst);
  } else {
    s->npidle.fetch_sub(1, std::memory_order_seq_cst);
    sysmon_wake(s);
  }
  return p;
}

bool pidle_remove_locked(Sched* s, P* want) {
  for (P** pp = &s->idle_p; *pp != nullptr; pp = &(*pp)->idle_next) {
    if (*pp == want) {
      *pp = want->idle_next;
      want->idle_next = nullptr;
      if (want->is_spare) {
        s->nspare_idle.fetch_sub(1, std::memory_order_seq_cst);
      } else {
        s->npidle.fetch_sub(1, std::memory_order_seq_cst);
        sysmon_wake(s);  // as in pidle_get_locked
      }
      return true;
    }
  }
  return false;
}

M* midle_pop_locked(Sched* s) {
  M* m = s->idle_m;
  if (m != nullptr) {
    s->idle_m = m->idle_next;
    m->idle_next = nullptr;
    m->idle = false;
    s->nmidle.fetch_sub(1, std::memory_order_relaxed);
    ++s->idle_gen;
  }
  return m;
}

namespace {

// A switched-off spare's timers move to the P it stood in for, so that they
// fire however Ps come and go (nobody looks at a spare that is off); an idle
// M is woken to re-plan its sleep if they are earlier than what it waits for.
void give_back_timers(Sched* s, P* spare) {
  P* home = s->ps[static_cast<std::size_t>(spare->id - s->nprocs)].get();
  if (spare->timers.move_all_to(&home->timers)) wake_idle_m_for_timer(s);
}

void midle_remove_locked(Sched* s, M* want)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  for (M** pp = &s->idle_m; *pp != nullptr; pp = &(*pp)->idle_next) {
    if (*pp == want) {
      *pp = want->idle_next;
      want->idle_next = nullptr;
      s->nmidle.fetch_sub(1, std::memory_order_relaxed);
      ++s->idle_gen;
      return;
    }
  }
}

// Takes the P handed over by startm (if any) after a wake-up.
void take_handed_p(M* m) {
  if (m->next_p != nullptr) {
    acquirep(m, m->next_p);
    m->spinning = m->next_spinning;
    m->next_p = nullptr;
    m->next_spinning = false;
  }
}

}  // namespace

void acquirep(M* m, P* p) {
  // A P has one M at a time: whoever released it cleared P::m.
  GORO_DCHECK(p->m() == nullptr || p->m() == m);
  m->p = p;
  p->set_m(m);
  p->status.store(PStatus::kRunning, std::memory_order_relaxed);
}

// --- Starting and waking Ms ------------------------------------------------

// startm runs `p` (or an idle P if null) on an idle or new M. With spinning,
// the caller has already counted the new M in nmspinning.
void startm(Sched* s, P* p, bool spinning) {
  MutexLock l(&s->lock);
  if (s->stopping.load(std::memory_order_relaxed)) {
    if (p != nullptr) pidle_put_locked(s, p);
    if (spinning) s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  if (p != nullptr) {
    p->status.store(PStatus::kRunning, std::memory_order_relaxed);
  } else {
    p = pidle_get_locked(s);
    if (p == nullptr) {
      if (spinning) s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
  }
  if (M* m = midle_pop_locked(s)) {
    m->next_p = p;
    m->next_spinning = spinning;
    l.unlock();
    s->threads_woken.fetch_add(1, std::memory_order_relaxed);
    m->note.wake();
    return;
  }
  auto owned = std::make_unique<M>();
  M* m = owned.get();
  m->id = static_cast<int>(s->ms.size());
  m->sched = s;
  // The new M holds the P from the start: its thread need not take the
  // lock (which we hold while it starts) to get it.
  acquirep(m, p);
  m->spinning = spinning;
  s->ms.push_back(std::move(owned));
  s->nthreads.fetch_add(1, std::memory_order_relaxed);
  ++s->idle_gen;
  // Start the thread under the lock so teardown, which joins every M after
  // setting `stopping` under the lock, never misses one.
  const int err = pthread_create(
      &m->thread, nullptr,
      [](void* arg) -> void* {
        auto* self = static_cast<M*>(arg);
        m_main(self->sched, self);
        return nullptr;
      },
      m);
  if (err != 0) {
    fatal("cannot start a thread for an M (%d running): %s",
          static_cast<int>(s->ms.size()) - 1, std::strerror(err));
  }
  m->joinable = true;
}

void wakep(Sched* s) {
  // A lent spare idling on the list counts: while every regular P is busy
  // (one of them stuck in the kernel), it is the only P that can take new
  // work, and nobody else would wake an M for it.
  if (s->npidle.load(std::memory_order_seq_cst) == 0 &&
      s->nspare_idle.load(std::memory_order_seq_cst) == 0) {
    // Every P busy: the work waits for a preemption, which a calm sysmon
    // would not see coming (sysmon.cc). Our caller's fence orders this load
    // after the work's publication.
    sysmon_wake(s);
    return;
  }
  int zero = 0;
  if (s->nmspinning.load(std::memory_order_seq_cst) != 0 ||
      !s->nmspinning.compare_exchange_strong(zero, 1,
                                             std::memory_order_seq_cst)) {
    return;
  }
  startm(s, nullptr, true);
}

void reset_spinning(Sched* s, M* m) {
  m->spinning = false;
  const int was = s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
  if (was <= 0) fatal("reset_spinning: negative nmspinning");
  if (was == 1) {
    // We were the last spinner and found work: there may be more. Wake
    // another M to look (Go's resetspinning).
    wakep(s);
  }
}

// handoffp gives a P whose M is about to block to another M, or parks it.
void handoffp(Sched* s, P* p) {
  if (!p->runq.empty() ||
      p->runnext.load(std::memory_order_seq_cst) != nullptr ||
      s->gq_size.load(std::memory_order_seq_cst) > 0 ||
      p->timers.earliest() != 0) {
    s->handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(s, p, false);
    return;
  }
  // No local work. If nobody is looking for work, let this P look.
  int zero = 0;
  if (s->nmspinning.load(std::memory_order_seq_cst) +
              s->npidle.load(std::memory_order_seq_cst) ==
          0 &&
      s->nmspinning.compare_exchange_strong(zero, 1)) {
    s->handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(s, p, true);
    return;
  }
  MutexLock l(&s->lock);
  if (s->gq_size.load(std::memory_order_relaxed) > 0) {
    l.unlock();
    s->handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(s, p, false);
    return;
  }
  pidle_put_locked(s, p);
}

void wake_idle_m_for_timer(Sched* s) {
  {
    MutexLock l(&s->lock);
    if (M* idle = midle_pop_locked(s)) {
      idle->next_p = pidle_get_locked(s);
      idle->next_spinning = false;
      l.unlock();
      idle->note.wake();
      return;
    }
  }
  // No idle M: an M blocked in netpoll may be the one sleeping past it.
  netpoll_wake_for(s, 0);
}

// --- Sleeping ---------------------------------------------------------------

// stopm parks an M that holds no P until another thread hands it one or, with
// a deadline, until then (it then tries to take an idle P itself). The last
// M to go idle with no deadline (no timer anywhere) checks for a deadlock
// (checkdead.cc), which may give it a deadline to recheck at.
namespace {

void midle_push_locked(Sched* s, M* m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  m->note.clear();
  m->idle = true;
  m->idle_next = s->idle_m;
  s->idle_m = m;
  s->nmidle.fetch_add(1, std::memory_order_relaxed);
}

// After an idle M's sleep: take what it was handed, or, if nobody handed it
// anything (its deadline passed), leave the idle list and take an idle P if
// there is one.
void after_stopm(Sched* s, M* m) {
  MutexLock l(&s->lock);
  if (m->idle) {
    midle_remove_locked(s, m);
    m->idle = false;
    if (P* p = pidle_get_locked(s)) acquirep(m, p);
    return;
  }
  take_handed_p(m);
}

}  // namespace

void stopm(Sched* s, M* m, std::int64_t deadline) {
  // A sleeping M never counts as spinning: wakep() would rely on it.
  GORO_DCHECK(!m->spinning);
  std::uint64_t gen = 0;
  bool maybe_dead = false;
  {
    MutexLock l(&s->lock);
    if (s->stopping.load(std::memory_order_relaxed)) return;
    midle_push_locked(s, m);
    if (deadline == 0) maybe_dead = dead_by_counts_locked(s);
    gen = s->idle_gen;
  }
  if (maybe_dead) deadline = checkdead(s, m, gen);
  m->note.sleep(deadline);
  after_stopm(s, m);
}

// The sleeper's half of "Who owns the timers" (find_work.cc): on the idle
// list, then poll_owed, then (fence) npoll_spinning. Against the spinner's
// npoll_spinning decrement -> load poll_owed, one of the two sees the
// other: if this M still sees a spinner, that spinner sees the flag when it
// leaves its spin; if it sees none (and nobody blocked in netpoll), the
// spinner may have left without seeing it, and this M looks again instead
// of sleeping on a deadline nobody keeps. Never a deadlock candidate: it
// has a timer to wait for.
bool stopm_behind_spinner(Sched* s, M* m) {
  GORO_DCHECK(!m->spinning);
  {
    MutexLock l(&s->lock);
    if (s->stopping.load(std::memory_order_relaxed)) return true;
    midle_push_locked(s, m);
    s->poll_owed.store(true, std::memory_order_seq_cst);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (s->npoll_spinning.load(std::memory_order_seq_cst) == 0 &&
      s->last_poll.load(std::memory_order_seq_cst) != 0) {
    MutexLock l(&s->lock);
    if (!m->idle) {  // handed a P (or woken) meanwhile
      take_handed_p(m);
      return true;
    }
    midle_remove_locked(s, m);
    m->idle = false;
    return false;
  }
  m->note.sleep(0);
  after_stopm(s, m);
  return true;
}

// --- Spare Ps ----------------------------------------------------------------

bool lend_spare(Sched* s, P* spare) {
  SpareState off = SpareState::kOff;
  if (!spare->spare_state.compare_exchange_strong(off, SpareState::kOn,
                                                  std::memory_order_acq_rel)) {
    return false;
  }
  s->syscall_retakes.fetch_add(1, std::memory_order_relaxed);
  startm(s, spare, false);
  return true;
}

// Gives back a spare P once the M it stood in for is running again: its
// queued fibers go to the global queue (and so do fibers pinned to this M,
// which is about to stop).
void retire_spare(Sched* s, M* m) {
  P* p = m->p;
  bool inherit;
  std::vector<Fiber*> moved;
  while (Fiber* f = runq_get(p, &inherit)) moved.push_back(f);
  while (Fiber* f = pinned_pop(m)) moved.push_back(f);
  {
    MutexLock l(&s->lock);
    for (Fiber* f : moved) global_put_locked(s, f);
    m->p = nullptr;
    pidle_put_locked(s, p);  // a spare: switched off, not listed
  }
  // This M is about to sleep. A spinning M (one woken with the spare, or
  // that took it off the idle list, to look for work) stops looking here:
  // drop its count first. While it counted, every wakep() -- the one below
  // included -- left the work to it, and a sleeping M that still counts
  // would keep wakep() a no-op for good (found by cond_test under TSan).
  const bool was_spinning = m->spinning;
  if (was_spinning) {
    m->spinning = false;
    if (s->nmspinning.fetch_sub(1, std::memory_order_seq_cst) <= 0) {
      fatal("retire_spare: negative nmspinning");
    }
  }
  // Whoever runs the moved fibers, or the work this M was woken for, must
  // be woken, or it waits while every thread sleeps.
  if (!moved.empty() || was_spinning) wakep(s);
  give_back_timers(s, p);
}

// Called by sysmon after it marked a spare kRetire: a spare idling on the
// list is switched off here; one held by an M retires itself.
void retire_idle_spare(Sched* s, P* spare) {
  {
    MutexLock l(&s->lock);
    if (!pidle_remove_locked(s, spare)) return;
    spare->spare_state.store(SpareState::kOff, std::memory_order_release);
  }
  give_back_timers(s, spare);
}

int release_pinned(Sched* s, M* m) {
  Fiber* list;
  {
    MutexLock l(&m->pin_lock);
    list = m->pinned_head;
    m->pinned_head = m->pinned_tail = nullptr;
    m->has_pinned.store(false, std::memory_order_relaxed);
  }
  if (list == nullptr) return 0;
  int n = 0;
  {
    MutexLock l(&s->lock);
    while (list != nullptr) {
      Fiber* f = list;
      list = f->sched_next;
      f->sched_next = nullptr;
      global_put_locked(s, f);
      ++n;
    }
  }
  s->pinned_released.fetch_add(static_cast<std::uint64_t>(n),
                               std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see the essay
  wakep(s);
  return n;
}

// --- Start and stop
// ------------------------------------------------------------

// Runs the scheduler loop of the first M on a new thread; used by run_main.
void start_first_m(Sched* s) {
  P* p;
  {
    MutexLock l(&s->lock);
    p = pidle_get_locked(s);
  }
  startm(s, p, false);
}

namespace {

// An M inside goro::blocking() when the runtime stops is not waited for (its
// call may never return, like a read of stdin). Its fiber never runs again:
// the M leaves fiber code when the call returns (blocking_exit) and frees
// what is handed to it here -- its own object and the fiber's stack, which
// stays mapped until then -- without touching the Sched. See M.
void abandon_m(Sched* s, M* m) {
  // Not m->curg(): fn may have returned already, and the M gone back to its
  // scheduler context to wait for kAbandoned (blocking_exit).
  Fiber* f = m->blocking_fiber;
  GORO_DCHECK(f != nullptr);
  {
    // The fiber is the M's now: ~Sched must not free it.
    MutexLock l(&s->free_lock);
    for (Fiber** pp = &s->all_fibers; *pp != nullptr; pp = &(*pp)->all_next) {
      if (*pp == f) {
        *pp = f->all_next;
        break;
      }
    }
  }
  f->all_next = nullptr;
  m->abandoned_fiber = f;
  s->stacks.keep_mapped(f->stack);
  MutexLock l(&s->lock);
  pthread_detach(m->thread);
  m->joinable = false;
  for (auto& owned : s->ms) {
    if (owned.get() == m) (void)owned.release();
  }
  s->abandoned_ms.push_back(m);
}

}  // namespace

// How long the end of run lets an M stop by itself before signalling it
// (stop_all_ms): Ms leave at their next scheduling point, within a slice
// for a spinner that sysmon preempts; a raw blocking call may never return.
constexpr std::int64_t kStopSignalAfter = 2'000'000;

void stop_all_ms(Sched* s) {
  std::vector<M*> ms;
  {
    MutexLock l(&s->lock);
    s->stopping.store(true, std::memory_order_release);
    sysmon_wake(s);  // spinners must be preempted so that their Ms stop
    while (M* m = midle_pop_locked(s)) {
      m->next_p = nullptr;
      m->note.wake();
    }
    for (auto& m : s->ms) ms.push_back(m.get());
  }
  // An M blocked in netpoll sees `stopping` once woken.
  if (g_hooks.netpoll_break != nullptr) g_hooks.netpoll_break();
  if (s->sysmon == nullptr) {
    // The run ended before sysmon's thread was made (sysmon.cc, "Its
    // start"). The Ms stop by themselves unless one runs a fiber that does
    // not switch (a spinner must be preempted): give them the start delay,
    // then make the thread. An M inside blocking() is abandoned below and
    // is not waited for.
    const std::int64_t deadline = mono_now_ns() + sysmon_start_delay(s);
    bool all_stopped = true;
    for (M* m : ms) {
      while (!m->exited.load(std::memory_order_acquire) &&
             m->blocking_state.load(std::memory_order_acquire) == M::kNone) {
        if (mono_now_ns() >= deadline) {
          all_stopped = false;
          break;
        }
        sched_yield();
      }
      if (!all_stopped) break;
    }
    if (!all_stopped) sysmon_start(s);
  }
  // Ms inside blocking() are abandoned at once: their call may never
  // return, and run must not wait for it.
  std::vector<M*> wait;
  for (M* m : ms) {
    int in_call = M::kInCall;
    if (m->blocking_state.compare_exchange_strong(in_call, M::kAbandoning,
                                                  std::memory_order_acq_rel)) {
      abandon_m(s, m);
    } else if (m->joinable) {
      wait.push_back(m);
    }
  }
  // The others stop at their next scheduling point (sysmon preempts a
  // spinner), except one whose fiber is blocked in a raw system call: a
  // read of stdin, a condition variable nobody notifies. Such a call may
  // never return. So an M still running after kStopSignalAfter is signalled
  // (again every kStopSignalAfter): the handler's walk hijacks the return
  // into the fiber's code and offers the M (M::kInRawCall), which is then
  // abandoned as above. Without asynchronous preemption (TSan,
  // async_preempt = false), or when the walk refuses (an OS lock held),
  // run waits for the call.
  std::int64_t last_signal = mono_now_ns();
  while (!wait.empty()) {
    for (auto it = wait.begin(); it != wait.end();) {
      M* m = *it;
      int raw = M::kInRawCall;
      if (m->exited.load(std::memory_order_acquire)) {
        pthread_join(m->thread, nullptr);
        m->joinable = false;
        it = wait.erase(it);
      } else if (m->blocking_state.compare_exchange_strong(
                     raw, M::kAbandoning, std::memory_order_acq_rel)) {
        abandon_m(s, m);
        it = wait.erase(it);
      } else {
        ++it;
      }
    }
    if (wait.empty()) break;
    const std::int64_t now = mono_now_ns();
    if (s->opts.async_preempt && g_hooks.preempt_m != nullptr &&
        now - last_signal >= kStopSignalAfter) {
      for (M* m : wait) {
        if (Fiber* f = m->curg()) {
          f->preempt_requested.store(true, std::memory_order_relaxed);
          g_hooks.preempt_m(m);
        }
      }
      last_signal = now;
    }
    struct timespec ts = {0, 100'000};
    nanosleep(&ts, nullptr);
  }
}

}  // namespace goro::runtime_internal
