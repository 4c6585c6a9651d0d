// Copyright goro authors.
//
// sysmon: one thread per runtime, outside the P/M accounting, that watches
// the Ps (Go's sysmon in proc.go). Each round it reads every P into a PView
// and acts on what PWatch::observe decides (retake.h): preemption requests,
// signals through Hooks::preempt_m (preempt/ owns the signal half), lending
// and retiring spare Ps, and waking an M for stranded work -- runnable
// fibers, or a timer overdue on a busy P (wake_for_overdue_timer). Once a
// second it
// also returns the memory of surplus free stacks to the kernel
// (StackAllocator::scavenge), and while a P is busy it polls the network
// if nobody has for 10 ms (sysmon_netpoll).
//
// When it wakes. While any P is busy and something waits for a CPU, every
// period: time_slice / 10 clamped to [kMinPeriod, kMaxBusyPeriod], so a
// fiber is noticed within a tenth of a slice after it ends (and exactly at
// the earliest slice end if that comes first). sysmon sleeps longer, until
// new work wakes it (Sched::sysmon_sleeping, sysmon_wake), in two states:
//   * idle: every P idle for kIdleRoundsBeforeSleep rounds (the period
//     doubling up to kMaxIdlePeriod meanwhile). A P leaving the idle list
//     wakes it; otherwise it wakes only to scavenge stacks, once a second.
//   * calm: for two rounds in a row every busy P ran the same fiber with
//     nothing waiting for it (PWatch::calm: two spinners on two Ps, say).
//     Nothing needs sysmon until a slice ends, a timer comes within a slice,
//     or work is queued; it sleeps until the first of those it knows of,
//     and wakep (all Ps busy), ready() into runnext, a new earliest timer
//     and the end of run wake it for the rest. kMaxCalmSleep bounds the
//     sleep: a kick made without a fence (ready, timers) can be missed in
//     a store-buffer window, and sysmon polls the network meanwhile.
// Neither sleep happens while a P runs a fiber and a timer is due within a
// slice (overdue ones included): such a P is not calm, and sysmon rounds
// every period, so a timer left overdue on a busy P is seen within about
// two periods of its deadline (wake_for_overdue_timer).
// So a runtime that is idle, or busy with nothing waiting, costs nearly no
// CPU in sysmon (issue 8's targets: <= 0.1 % idle, <= 0.2 % calm).
//
// Its start. The thread is made one busy period after the Ms start
// (sysmon_start_delay; run_main), not with them: nothing needs it sooner --
// no fiber can overrun its slice before a whole slice has passed, a thread
// stuck in the kernel is lent a spare only after two rounds, and the first
// round of an eager sysmon would only have recorded what it saw. A run that
// ends within the delay (an empty program, a short tool, a test's small
// run) never pays for the thread: its clone, its malloc arena and its join
// were 7-25 % of an empty run's CPU time in interleaved runs
// (bench/README.md, "Start-up"); nor for loading libunwind, which the
// thread does first (Hooks::on_sysmon_start). What waits for it meanwhile,
// by at most the delay: a SIGQUIT (polled each round), the 10 ms network
// poll, and a deadlock report whose check sees the new thread before it
// registered (checkdead.cc retries). When main returns first, stop_all_ms
// gives the Ms the delay to stop on their own and makes the thread only if
// one still runs a fiber (a spinner needs preempting to stop).
//
// sysmon reads other threads' fields without their locks (P::m, M::curg,
// the run queues): all are atomics, the objects live until the runtime
// ends, and a stale read costs at worst a misdirected request, which the
// handler and the fiber treat as a no-op. Under ThreadSanitizer sysmon runs
// too (its scheduler duties are needed), without the signal half.

#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "runtime/internal/futex.h"
#include "runtime/internal/retake.h"
#include "runtime/internal/run_queues.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {

namespace {

constexpr std::int64_t kMinPeriod = 20'000;          // 20 us, as Go
constexpr std::int64_t kMaxBusyPeriod = 1'000'000;   // 1 ms
constexpr std::int64_t kMaxIdlePeriod = 10'000'000;  // 10 ms, as Go
// Idle rounds (1, 2, 4 ms) before the idle sleep: a runtime that idles
// between short bursts does not make each burst pay a futex wake.
constexpr int kIdleRoundsBeforeSleep = 3;
// The longest calm sleep (see the top): Go's longest sysmon delay.
constexpr std::int64_t kMaxCalmSleep = 10'000'000;       // 10 ms
constexpr std::int64_t kScavengePeriod = 1'000'000'000;  // 1 s
// sysmon polls the network when nobody has for this long (Go: 10 ms).
constexpr std::int64_t kNetpollPeriod = 10'000'000;
// Free stacks returned per scavenge, so that sysmon's round stays short.
constexpr std::size_t kScavengeBatch = 4096;

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer's runtime puts threads to sleep in its own locks, often
// for two checks in a row: sysmon would take them for threads stuck in the
// kernel and lend spares, which lets a one-proc program run two fibers at
// once and breaks the strict alternation the one-proc tests check
// (SchedulerTest.YieldAlternatesBetweenTwoFibersOnOneP). Lending was on
// under TSan on 2026-11-30 long enough to find the retire_spare lost
// wake-up (idle.cc); retake_test covers the decision itself.
constexpr bool kMayLendSpares = false;
#else
constexpr bool kMayLendSpares = true;
#endif

}  // namespace

struct Sysmon {
  Sched* s = nullptr;
  std::thread thread;
  std::atomic<bool> stop{false};
  std::vector<PWatch> watch;
  std::vector<int> stat_fds;  // /proc/self/task/TID/stat per M id
};

namespace {

// The thread's scheduling state from /proc/self/task/TID/stat ('R' running
// or runnable, 'S' sleeping, 'D' uninterruptible, ...), or '?' on error.
char thread_state(Sysmon* sm, const M* m) {
  const pid_t tid = m->tid.load(std::memory_order_acquire);
  if (tid == 0) return '?';
  std::vector<int>& fds = sm->stat_fds;
  if (fds.size() <= static_cast<std::size_t>(m->id)) {
    fds.resize(static_cast<std::size_t>(m->id) + 1, -1);
  }
  int& fd = fds[static_cast<std::size_t>(m->id)];
  if (fd < 0) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return '?';
  }
  char buf[256];
  const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return '?';
  buf[n] = '\0';
  // "tid (comm) S ..." -- comm may contain spaces or ')': use the last ')'.
  char* close = nullptr;
  for (char* p = buf; *p != '\0'; ++p) {
    if (*p == ')') close = p;
  }
  if (close == nullptr || close[1] != ' ') return '?';
  return close[2];
}

// One round over every P. Returns the earliest time at which a fiber seen
// running will have run a whole slice (INT64_MAX if none).
// *calm: every P is PWatch::calm.
std::int64_t retake(Sysmon* sm, std::int64_t now, std::int64_t prev,
                    const RetakePolicy& pol, bool* calm) {
  *calm = true;
  Sched* s = sm->s;
  const int n = static_cast<int>(s->ps.size());
  const bool others_idle =
      (s->npidle.load(std::memory_order_relaxed) > 0 ||
       s->nspare_idle.load(std::memory_order_relaxed) > 0) &&
      s->nmspinning.load(std::memory_order_relaxed) == 0;
  // Waiting work that any P may have to run (PView::others_wait): the
  // global queue; fibers in network waits, whose events only a poll -- which
  // a switch makes (yield_impl) -- reveals; the end of run, for which every
  // M must come back to stop (a spinner too); timers due within a slice.
  const bool global_work = s->gq_size.load(std::memory_order_relaxed) > 0 ||
                           s->stopping.load(std::memory_order_relaxed) ||
                           io_waiters() > 0;
  const std::int64_t t = earliest_timer(s);
  const bool timer_soon = t != 0 && t <= now + pol.slice;
  std::int64_t next_deadline = INT64_MAX;
  for (int i = 0; i < n; ++i) {
    P* p = s->ps[static_cast<std::size_t>(i)].get();
    P* spare = !p->is_spare && i + s->nprocs < n
                   ? s->ps[static_cast<std::size_t>(i + s->nprocs)].get()
                   : nullptr;
    M* m = p->m();
    Fiber* f = m != nullptr ? m->curg() : nullptr;
    PView v;
    v.running = p->status.load(std::memory_order_relaxed) == PStatus::kRunning;
    v.seq = p->sched_seq.load(std::memory_order_relaxed);
    v.switches = p->context_switches.get();
    v.ring_work = !p->runq.empty();
    v.runnext_work = p->runnext.load(std::memory_order_relaxed) != nullptr;
    v.others_idle = others_idle;
    v.has_m = m != nullptr;
    v.has_fiber = f != nullptr;
    v.is_spare = p->is_spare;
    v.spare_lent =
        spare != nullptr &&
        spare->spare_state.load(std::memory_order_acquire) == SpareState::kOn;
    v.async_preempt = s->opts.async_preempt;
    v.others_wait =
        v.ring_work || v.runnext_work || global_work || timer_soon ||
        (m != nullptr && m->has_pinned.load(std::memory_order_relaxed));
    PWatch& w = sm->watch[static_cast<std::size_t>(i)];
    const RetakeActions a = w.observe(now, prev, pol, v, [&] {
      return m != nullptr ? thread_state(sm, m) : '?';
    });
    next_deadline = std::min(next_deadline, w.slice_end(pol, v, now));
    *calm = *calm && w.calm();

    if (a.retire_spare) {
      SpareState on = SpareState::kOn;
      if (spare->spare_state.compare_exchange_strong(
              on, SpareState::kRetire, std::memory_order_acq_rel)) {
        retire_idle_spare(s, spare);
      }
    }
    if (a.wake_m) wakep(s);
    if (a.request_preempt &&
        !f->preempt_requested.exchange(true, std::memory_order_relaxed)) {
      s->preempt_requests.fetch_add(1, std::memory_order_relaxed);
    }
    if (a.lend_spare && kMayLendSpares) {
      // The thread is stuck in the kernel: its P's other fibers run on the
      // spare, and fibers pinned to the thread (async-preempted) may run on
      // any thread rather than wait for it -- the trade blocking() makes.
      lend_spare(s, spare);
      release_pinned(s, m);
    }
    if (a.signal && g_hooks.preempt_m != nullptr && g_hooks.preempt_m(m)) {
      w.signal_sent(now);
    }
  }
  // A timer that should have run by now is on a P whose fiber does not
  // switch (retake.h): an M woken with an idle P runs it (find_runnable
  // runs every P's due timers). wakep starts a spinning M, which counts in
  // nmspinning, so the next rounds wake no second one while it is on its
  // way.
  if (wake_for_overdue_timer(now, t, pol, others_idle)) wakep(s);
  return next_deadline;
}

// While some P is busy and nobody has polled the network for
// kNetpollPeriod, poll it (without blocking) and queue what it readied, so
// that fibers waiting for I/O are not starved by Ps that never go idle
// (Go's sysmon does the same at 10 ms).
void sysmon_netpoll(Sched* s, std::int64_t now) {
  if (g_hooks.netpoll == nullptr || !netpoll_on()) return;
  std::int64_t lp = s->last_poll.load(std::memory_order_seq_cst);
  if (lp == 0 || lp + kNetpollPeriod > now ||
      !s->last_poll.compare_exchange_strong(lp, now,
                                            std::memory_order_seq_cst)) {
    return;
  }
  Fiber* fs[kNetpollDrainBatch];
  const int n = g_hooks.netpoll(0, fs, kNetpollDrainBatch);
  netpoll_inject(s, nullptr, fs, n);
}

// Whether any work waits that a calm sleep would leave unattended: the
// re-check after Sched::sysmon_sleeping is published (the sleeper's half of
// the protocol with wakep; see its comment in scheduler.h).
bool work_waits(Sched* s) {
  if (s->gq_size.load(std::memory_order_relaxed) > 0 ||
      s->stopping.load(std::memory_order_relaxed) || io_waiters() > 0) {
    return true;
  }
  for (const auto& p : s->ps) {
    if (!p->runq.empty() ||
        p->runnext.load(std::memory_order_relaxed) != nullptr) {
      return true;
    }
    M* m = p->m();
    if (m != nullptr && m->has_pinned.load(std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

// Sleeps until `until` or sysmon_wake, unless `still_ok()`, evaluated after
// sysmon_sleeping is published, says the reason to sleep is gone.
template <typename Pred>
void sleep_until_woken(Sysmon* sm, std::int64_t until, Pred still_ok) {
  Sched* s = sm->s;
  s->sysmon_note.clear();
  s->sysmon_sleeping.store(true, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (still_ok() && !sm->stop.load(std::memory_order_acquire)) {
    s->sysmon_note.sleep(until);
  }
  s->sysmon_sleeping.store(false, std::memory_order_relaxed);
}

void sysmon_main(Sysmon* sm) {
  pthread_setname_np(pthread_self(), "goro-sysmon");
  own_thread_register_for_life();  // deadlock detection: not a foreign thread
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  Sched* s = sm->s;
  sm->watch.resize(s->ps.size());
  RetakePolicy pol;
  pol.slice =
      std::chrono::duration_cast<std::chrono::nanoseconds>(s->opts.time_slice)
          .count();
  // Before the first round, which may already ask preempt_m to signal.
  if (g_hooks.on_sysmon_start != nullptr) g_hooks.on_sysmon_start(s);
  const std::int64_t busy_period = sysmon_start_delay(s);
  std::int64_t period = busy_period;
  int idle_rounds = 0, calm_rounds = 0;
  std::int64_t prev_round = 0;
  std::int64_t next_scavenge = mono_now_ns() + kScavengePeriod;
  while (!sm->stop.load(std::memory_order_acquire)) {
    if (g_hooks.on_sysmon_round != nullptr) g_hooks.on_sysmon_round(s);
    const std::int64_t now = mono_now_ns();
    g_coarse_now_ns.store(now, std::memory_order_relaxed);  // for dumps
    if (now >= next_scavenge) {
      s->stacks.scavenge(kScavengeBatch);
      next_scavenge = now + kScavengePeriod;
    }
    const bool idle = s->npidle.load(std::memory_order_relaxed) == s->nprocs;
    std::int64_t wake;
    if (idle) {
      calm_rounds = 0;
      period = std::min<std::int64_t>(period * 2, kMaxIdlePeriod);
      if (++idle_rounds > kIdleRoundsBeforeSleep) {
        // Until a P leaves the idle list (pidle_get_locked wakes us). Still
        // idle after a scavenge: straight back to sleep.
        sleep_until_woken(sm, next_scavenge, [s] {
          return s->npidle.load(std::memory_order_seq_cst) == s->nprocs;
        });
        continue;
      }
      wake = now + period;
    } else {
      idle_rounds = 0;
      period = busy_period;
      pol.period = period;
      bool calm = false;
      const std::int64_t next_deadline =
          retake(sm, now, prev_round, pol, &calm);
      prev_round = now;
      sysmon_netpoll(s, now);
      calm_rounds = calm ? calm_rounds + 1 : 0;
      // Wake at the next period, or exactly when a fiber's slice ends if
      // that comes first, so that overruns are not rounded up to a period.
      wake = std::min(now + period, next_deadline);
      if (calm_rounds >= 2) {
        std::int64_t until =
            std::min({next_deadline, next_scavenge, now + kMaxCalmSleep});
        // A timer due within a slice makes a running fiber's P wanted.
        const std::int64_t t = earliest_timer(s);
        if (t != 0) until = std::min(until, t - pol.slice);
        if (until > wake) {
          sleep_until_woken(sm, until, [s] { return !work_waits(s); });
          continue;
        }
      }
    }
    s->sysmon_note.clear();
    s->sysmon_note.sleep(wake);
  }
  for (int fd : sm->stat_fds) {
    if (fd >= 0) close(fd);
  }
}

}  // namespace

std::int64_t sysmon_start_delay(const Sched* s) {
  const std::int64_t slice =
      std::chrono::duration_cast<std::chrono::nanoseconds>(s->opts.time_slice)
          .count();
  return std::clamp<std::int64_t>(slice / 10, kMinPeriod, kMaxBusyPeriod);
}

void sysmon_start(Sched* s) {
  auto* sm = new Sysmon;
  sm->s = s;
  s->sysmon = sm;
  s->sysmon_made.store(true, std::memory_order_relaxed);
  sm->thread = std::thread(sysmon_main, sm);
}

void sysmon_stop(Sched* s) {
  Sysmon* sm = s->sysmon;
  if (sm == nullptr) return;
  sm->stop.store(true, std::memory_order_release);
  s->sysmon_note.wake();
  sm->thread.join();
  s->sysmon = nullptr;
  s->sysmon_made.store(false, std::memory_order_relaxed);
  delete sm;
}

void sysmon_wake(Sched* s) {
  // seq_cst: the waker's half of the protocol (scheduler.h): its work is
  // published, then this load; sysmon stores the flag, then re-checks.
  if (!s->sysmon_sleeping.load(std::memory_order_seq_cst) ||
      !s->sysmon_sleeping.exchange(false, std::memory_order_seq_cst)) {
    return;
  }
  s->sysmon_note.wake();
}

}  // namespace goro::runtime_internal
