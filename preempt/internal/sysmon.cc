// Copyright goro authors.
//
// sysmon: one thread per runtime, outside the P/M accounting, that watches
// the Ps (Go's sysmon/retake).
//
// Each round, per P in kRunning:
//   * sched_seq unchanged since the round that first saw it, for longer than
//     Options::time_slice: the fiber overran its slice. (sched_seq counts
//     fresh slices; fibers run from runnext inherit the slice, so a chain of
//     hand-offs is preempted as one fiber.) Set its
//     preempt_requested flag (honoured at its next cooperative point), then
//     -- with async preemption on, at most one signal in flight per M, and
//     only if the M's thread is running on a CPU (state R) -- tgkill SIGURG.
//   * The M is not running (state S/D): it is stuck in the kernel in a call
//     that did not go through goro::blocking(). Signalling would only make
//     the call fail with EINTR. Instead lend the P's spare (P::is_spare) to
//     another M so the P's other fibers keep running; take it back once the
//     stuck M runs again.
//
// Once a second it also returns the memory of surplus free stacks to the
// kernel (StackAllocator::scavenge).
//
// Period: while any P is busy, time_slice / 10 clamped to [20us, 1ms], so a
// fiber is noticed within a tenth of a slice after it ends; when all Ps are
// idle the period doubles up to 10 ms, and after 50 idle rounds sysmon sleeps
// until a P becomes busy (startm calls sysmon_wake), so an idle runtime burns
// no CPU.
//
// sysmon reads other threads' fields without their locks (P::m, M::curg);
// those objects live until the runtime ends, and a stale read costs at worst
// a misdirected request, which the handler and the fiber treat as a no-op.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

#include "preempt/internal/preempt.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::preempt_internal {
namespace {

using runtime_internal::M;
using runtime_internal::mono_now_ns;
using runtime_internal::Note;
using runtime_internal::P;
using runtime_internal::PStatus;
using runtime_internal::Sched;

struct Sysmon {
  Sched* s = nullptr;
  std::thread thread;
  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};  // deep sleep: wake on busy
  Note note;
};

Sysmon* g_sysmon = nullptr;  // the running runtime's; set/cleared by run

struct PWatch {
  std::uint64_t seq = ~0ULL;
  std::int64_t since = 0;              // when seq was first seen
  std::int64_t last_signal = 0;        // when we last signalled its M
  std::int64_t waiting_since = 0;      // runnable work seen stranded since
  std::uint64_t waiting_switches = 0;  // P::context_switches then
};

// The thread's scheduling state from /proc/self/task/TID/stat ('R' running
// or runnable, 'S' sleeping, 'D' uninterruptible, ...), or '?' on error.
char thread_state(pid_t tid, std::vector<int>& fds, int mid) {
  if (fds.size() <= static_cast<std::size_t>(mid)) {
    fds.resize(static_cast<std::size_t>(mid) + 1, -1);
  }
  int& fd = fds[static_cast<std::size_t>(mid)];
  if (fd < 0) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return '?';
  }
  char buf[256];
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
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

// Returns the earliest time at which a fiber seen running will have run a
// whole slice (INT64_MAX if none).
std::int64_t retake(Sysmon* sm, std::vector<PWatch>& watch,
                    std::vector<int>& fds, std::int64_t now, std::int64_t prev,
                    std::int64_t period) {
  Sched* s = sm->s;
  const std::int64_t slice =
      std::chrono::duration_cast<std::chrono::nanoseconds>(s->opts.time_slice)
          .count();
  const std::int64_t resignal = std::max<std::int64_t>(period, 100000);
  const int n = static_cast<int>(s->ps.size());
  std::int64_t next_deadline = INT64_MAX;
  for (int i = 0; i < n; ++i) {
    P* p = s->ps[static_cast<std::size_t>(i)].get();
    PWatch& w = watch[static_cast<std::size_t>(i)];
    const std::uint64_t seq = p->sched_seq.load(std::memory_order_relaxed);
    const bool running =
        p->status.load(std::memory_order_relaxed) == PStatus::kRunning;
    if (!running || seq != w.seq) {
      w.seq = running ? seq : ~0ULL;
      // The switch happened since the previous round: assume the middle of
      // that interval (unbiased), unless that round is long past.
      w.since =
          prev != 0 && now - prev <= 2 * period ? prev + (now - prev) / 2 : now;
      w.last_signal = 0;
    }
    if (running && w.since + slice > now) {
      next_deadline = std::min(next_deadline, w.since + slice);
    }
    // A spare whose stuck M is running again goes back.
    if (!p->is_spare && i + s->nprocs < n) {
      P* spare = s->ps[static_cast<std::size_t>(i + s->nprocs)].get();
      if (spare->spare_state.load(std::memory_order_acquire) ==
          runtime_internal::kSpareOn) {
        M* m = std::atomic_ref<M*>(p->m).load(std::memory_order_relaxed);
        bool back = !running || seq != w.seq || now - w.since < slice ||
                    m == nullptr || thread_state(m->tid, fds, m->id) == 'R';
        if (back) {
          int on = runtime_internal::kSpareOn;
          if (spare->spare_state.compare_exchange_strong(
                  on, runtime_internal::kSpareRetire,
                  std::memory_order_acq_rel)) {
            runtime_internal::retire_idle_spare(s, spare);
          }
        }
      }
    }
    // Work waiting on a busy P while another P idles and nobody looks for
    // work: ready() does not wake an M for a fiber it put in runnext (it
    // usually runs at once), so make sure it is not stranded behind a fiber
    // that keeps running. A runnext alone counts only if the P has not
    // switched since: a P that keeps switching runs its runnext fibers
    // itself (a channel ping-pong has one there half the time), and an M
    // woken to steal them would only contend for the P's cache lines.
    const bool ring_work = !p->runq.empty();
    const std::uint64_t switches = p->context_switches.get();
    if (running &&
        (ring_work || p->runnext.load(std::memory_order_relaxed) != nullptr) &&
        s->npidle.load(std::memory_order_relaxed) > 0 &&
        s->nmspinning.load(std::memory_order_relaxed) == 0) {
      if (w.waiting_since == 0 ||
          (!ring_work && w.waiting_switches != switches)) {
        w.waiting_since = now;
        w.waiting_switches = switches;
      } else if (now - w.waiting_since >= period) {
        runtime_internal::wakep(s);
        w.waiting_since = 0;
      }
    } else {
      w.waiting_since = 0;
    }
    if (!running || now - w.since < slice) continue;

    M* m = std::atomic_ref<M*>(p->m).load(std::memory_order_relaxed);
    if (m == nullptr) continue;
    runtime_internal::Fiber* f =
        std::atomic_ref<runtime_internal::Fiber*>(m->curg).load(
            std::memory_order_relaxed);
    if (f == nullptr) continue;  // the scheduler itself, between fibers
    if (!f->preempt_requested.exchange(true, std::memory_order_relaxed)) {
      s->preempt_requests.fetch_add(1, std::memory_order_relaxed);
    }
    if (now - w.last_signal < resignal) continue;
    const char st = thread_state(m->tid, fds, m->id);
    if (st != 'R') {
      // Stuck in the kernel. Lend the spare so the other fibers run.
      if (!p->is_spare && st != '?') {
        P* spare = s->ps[static_cast<std::size_t>(i + s->nprocs)].get();
        int off = runtime_internal::kSpareOff;
        if (spare->spare_state.compare_exchange_strong(
                off, runtime_internal::kSpareOn, std::memory_order_acq_rel)) {
          s->syscall_retakes.fetch_add(1, std::memory_order_relaxed);
          runtime_internal::startm(s, spare, false);
        }
      }
      w.last_signal = now;
      continue;
    }
    // Fibers on a spare P are only preempted cooperatively (see the SIGURG
    // handler), so do not signal its M.
    if (!s->opts.async_preempt || p->is_spare) continue;
    if (m->signal_pending.exchange(true, std::memory_order_acq_rel)) {
      continue;  // one in flight already
    }
    w.last_signal = now;
    if (syscall(SYS_tgkill, getpid(), m->tid, SIGURG) == 0) {
      s->signals_sent.fetch_add(1, std::memory_order_relaxed);
    } else {
      m->signal_pending.store(false, std::memory_order_release);
    }
  }
  return next_deadline;
}

[[maybe_unused]] void sysmon_main(Sysmon* sm) {  // unused under TSan
  pthread_setname_np(pthread_self(), "goro-sysmon");
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  Sched* s = sm->s;
  std::vector<PWatch> watch(s->ps.size());
  std::vector<int> fds;
  const std::int64_t slice =
      std::chrono::duration_cast<std::chrono::nanoseconds>(s->opts.time_slice)
          .count();
  const std::int64_t busy_period =
      std::clamp<std::int64_t>(slice / 10, 20000, 1000000);
  std::int64_t period = busy_period;
  int idle_rounds = 0;
  std::int64_t prev_round = 0, next_deadline = INT64_MAX;
  std::int64_t next_scavenge = mono_now_ns() + 1000000000;
  while (!sm->stop.load(std::memory_order_acquire)) {
    const std::int64_t now = mono_now_ns();
    if (now >= next_scavenge) {
      // Return the memory of stacks a burst of fibers left behind, a bounded
      // number per second so that sysmon's round stays short.
      s->stacks.scavenge(4096);
      next_scavenge = now + 1000000000;
    }
    const bool idle = s->npidle.load(std::memory_order_relaxed) == s->nprocs;
    if (idle) {
      period = std::min<std::int64_t>(period * 2, 10000000);
      if (++idle_rounds > 50) {
        // Deep sleep until a P becomes busy (or a 100 ms safety tick).
        sm->note.clear();
        sm->sleeping.store(true, std::memory_order_seq_cst);
        if (s->npidle.load(std::memory_order_seq_cst) == s->nprocs &&
            !sm->stop.load(std::memory_order_acquire)) {
          sm->note.sleep(mono_now_ns() + 100000000);
        }
        sm->sleeping.store(false, std::memory_order_relaxed);
        idle_rounds = 0;
        period = busy_period;
        continue;
      }
    } else {
      idle_rounds = 0;
      period = busy_period;
      next_deadline = retake(sm, watch, fds, now, prev_round, period);
      prev_round = now;
    }
    sm->note.clear();
    // Wake at the next period, or exactly when a fiber's slice ends if that
    // comes first, so that overruns are not rounded up to a whole period.
    std::int64_t wake = mono_now_ns() + period;
    if (!idle && next_deadline < wake) wake = next_deadline;
    sm->note.sleep(wake);
  }
  for (int fd : fds) {
    if (fd >= 0) close(fd);
  }
}

}  // namespace

void sysmon_start(Sched* s) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer defers asynchronous signals to its own safe points, so
  // SIGURG preemption cannot work under it; sysmon's racy-by-design reads
  // would also be reported. Cooperative scheduling only.
  (void)s;
  return;
#else
  auto* sm = new Sysmon;
  sm->s = s;
  g_sysmon = sm;
  sm->thread = std::thread(sysmon_main, sm);
#endif
}

void sysmon_stop(Sched* s) {
  (void)s;
  Sysmon* sm = g_sysmon;
  if (sm == nullptr) return;
  sm->stop.store(true, std::memory_order_release);
  sm->note.wake();
  sm->thread.join();
  g_sysmon = nullptr;
  delete sm;
}

void sysmon_wake() {
  Sysmon* sm = g_sysmon;
  if (sm != nullptr && sm->sleeping.load(std::memory_order_relaxed)) {
    sm->sleeping.store(false, std::memory_order_relaxed);
    sm->note.wake();
  }
}

}  // namespace goro::preempt_internal
