// Copyright goro authors.
//
// GORO_DEBUG=schedtrace=MS[,scheddetail=1]: Go's scheduler trace. Every MS
// milliseconds the "goro-schedtrace" thread writes one line to stderr:
//
//   SCHED 1004ms: gomaxprocs=2 idleprocs=1 threads=5 spinningthreads=0
//   idlethreads=2 runqueue=0 [0 0] preempt=12 steals=3
//
// (one line): time since run started, Ps, idle Ps, threads (Ms plus
// sysmon), spinning Ms, idle Ms, the global queue's length, each P's local
// queue (ring plus runnext), then goro's own totals of preemptions
// (asynchronous and cooperative) and steals. scheddetail=1 adds one line per
// P, per M and per live fiber. The figures are read without stopping
// anything, so they are a moment's approximation, as in Go.

#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include "diag/internal/diag.h"
#include "runtime/internal/park.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::diag_internal {

using runtime_internal::Fiber;
using runtime_internal::FiberState;
using runtime_internal::MutexLock;
using runtime_internal::Sched;

namespace {

// Per runtime: the thread and its stop signal (only run's thread starts and
// stops it).
runtime_internal::Note g_stop;
std::thread* g_thread = nullptr;

int queue_len(const runtime_internal::P& p) {
  return static_cast<int>(p.runq.size()) +
         (p.runnext.load(std::memory_order_relaxed) != nullptr ? 1 : 0);
}

}  // namespace

std::string schedtrace_text(Sched* s, bool detail) {
  const long long ms =
      (runtime_internal::mono_now_ns() - s->start_ns) / 1000000;
  std::uint64_t preempt = 0, steals = 0;
  std::string queues;
  for (int i = 0; i < s->nprocs; ++i) {
    const auto& p = *s->ps[static_cast<std::size_t>(i)];
    if (i > 0) queues += ' ';
    queues += std::to_string(queue_len(p));
  }
  for (const auto& p : s->ps) {
    preempt += p->preemptions_async.get() + p->preemptions_cooperative.get();
    steals += p->steals.get();
  }
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "SCHED %lldms: gomaxprocs=%d idleprocs=%d threads=%d "
      "spinningthreads=%d idlethreads=%d runqueue=%d [%s] preempt=%llu "
      "steals=%llu\n",
      ms, s->nprocs, s->npidle.load(std::memory_order_relaxed),
      s->nthreads.load(std::memory_order_relaxed) +
          (s->sysmon_made.load(std::memory_order_relaxed) ? 1 : 0),
      s->nmspinning.load(std::memory_order_relaxed),
      s->nmidle.load(std::memory_order_relaxed),
      s->gq_size.load(std::memory_order_relaxed), queues.c_str(),
      static_cast<unsigned long long>(preempt),
      static_cast<unsigned long long>(steals));
  std::string out = buf;
  if (!detail) return out;
  for (const auto& p : s->ps) {
    if (p->is_spare && p->spare_state.load(std::memory_order_relaxed) ==
                           runtime_internal::SpareState::kOff) {
      continue;
    }
    const runtime_internal::M* m = p->m();
    std::snprintf(
        buf, sizeof(buf),
        "  P%d: status=%s m=%d runqsize=%u runnext=%d timers=%s%s\n", p->id,
        p->status.load(std::memory_order_relaxed) ==
                runtime_internal::PStatus::kRunning
            ? "running"
            : "idle",
        m != nullptr ? m->id : -1, p->runq.size(),
        p->runnext.load(std::memory_order_relaxed) != nullptr,
        p->timers.earliest() != 0 ? "yes" : "no", p->is_spare ? " spare" : "");
    out += buf;
  }
  {
    MutexLock l(&s->lock);
    for (const auto& m : s->ms) {
      const Fiber* g = m->curg();
      std::snprintf(
          buf, sizeof(buf), "  M%d: tid=%d curg=%s idle=%d blocking=%d\n",
          m->id, static_cast<int>(m->tid.load(std::memory_order_relaxed)),
          g != nullptr ? "yes" : "-", m->idle ? 1 : 0,
          m->blocking_state.load(std::memory_order_relaxed) != 0 ? 1 : 0);
      out += buf;
    }
  }
  {
    MutexLock l(&s->free_lock);
    for (const Fiber* f = s->all_fibers; f != nullptr; f = f->all_next) {
      const FiberState st = f->state.load(std::memory_order_acquire);
      if (st == FiberState::kFree || st == FiberState::kDead) continue;
      std::string what = runtime_internal::fiber_state_name(st);
      if (st == FiberState::kWaiting) {
        what += std::string("(") +
                runtime_internal::wait_reason_name(
                    f->wait_reason.load(std::memory_order_relaxed)) +
                ")";
      }
      std::snprintf(buf, sizeof(buf), "  G%llu: status=%s\n",
                    static_cast<unsigned long long>(
                        std::atomic_ref<const std::uint64_t>(f->id).load(
                            std::memory_order_relaxed)),
                    what.c_str());
      out += buf;
    }
  }
  return out;
}

void schedtrace_start(Sched* s) {
  if (s->debug.schedtrace_ms <= 0) return;
  g_stop.clear();
  g_thread = new std::thread([s] {
    runtime_internal::own_thread_register_for_life();
    pthread_setname_np(pthread_self(), "goro-schedtrace");
    const std::int64_t period =
        static_cast<std::int64_t>(s->debug.schedtrace_ms) * 1000000;
    std::int64_t next = s->start_ns + period;
    while (!g_stop.sleep(next)) {
      const std::string line = schedtrace_text(s, s->debug.scheddetail);
      // One write per report, so that lines do not interleave.
      if (write(STDERR_FILENO, line.data(), line.size()) < 0) return;
      next += period;
    }
  });
}

void schedtrace_stop(Sched*) {
  if (g_thread == nullptr) return;
  g_stop.wake();
  g_thread->join();
  delete g_thread;
  g_thread = nullptr;
}

}  // namespace goro::diag_internal
