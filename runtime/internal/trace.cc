// Copyright goro authors.
//
// The execution trace's event writers (trace.h): the slow paths of the event
// sites, taken only while a session is published. Each finds its ring (the
// M's P's, or the off-P one), fills the event in place -- no copy on the
// stack: these frames run on the preemption path too, whose stack use is
// budgeted (kPreemptFrames, stack.h) -- and publishes it.

#include "runtime/internal/trace.h"

#include <algorithm>
#include <cstring>

#include "runtime/internal/dcheck.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {

TraceGlobals g_trace;
static_assert(sizeof(TraceGlobals) == 64);
Mutex g_trace_offp_mu;

namespace {

// How many kName events f's name takes (0 when it has no name).
std::uint32_t name_chunks(const Fiber* f) {
  const std::size_t n = std::min<std::size_t>(
      f->name.size(), kTraceNameChunk * kTraceNameChunks);
  return static_cast<std::uint32_t>((n + kTraceNameChunk - 1) /
                                    kTraceNameChunk);
}

// Writes one event, plus f's name if `named` and f's name is not yet in
// this session, into `ring`. The caller made `ring` its own (T1/T2).
void put(TraceSession* s, TraceRing* ring, TraceType type, std::uint8_t reason,
         std::uint16_t aux16, std::uint32_t aux32, std::uint64_t g,
         std::uint64_t arg, Fiber* named) {
  const std::uint32_t chunks =
      named != nullptr && named->trace_seq != s->seq ? name_chunks(named) : 0;
  std::uint64_t pos;
  if (!ring->reserve(1 + chunks, &pos)) {
    ring->drop(1 + chunks);
    return;
  }
  const std::uint64_t now = trace_now();
  TraceEvent& e = ring->at(pos);
  e.tsc = now;
  e.g = g;
  e.arg = arg;
  e.type = type;
  e.reason = reason;
  e.aux16 = aux16;
  e.aux32 = aux32;
  if (named != nullptr) {
    const char* p = named->name.data();
    std::size_t left = std::min<std::size_t>(
        named->name.size(), kTraceNameChunk * kTraceNameChunks);
    for (std::uint32_t i = 0; i < chunks; ++i) {
      TraceEvent& c = ring->at(pos + 1 + i);
      const std::size_t k = std::min<std::size_t>(left, kTraceNameChunk);
      c.tsc = now;
      c.g = g;
      c.type = TraceType::kName;
      c.reason = static_cast<std::uint8_t>(k);
      c.aux16 = static_cast<std::uint16_t>(i);
      c.arg = 0;
      c.aux32 = 0;
      std::memcpy(&c.arg, p, std::min<std::size_t>(k, 8));
      if (k > 8) std::memcpy(&c.aux32, p + 8, k - 8);
      p += k;
      left -= k;
    }
    named->trace_seq = s->seq;
  }
  if (ring->commit(pos + 1 + chunks)) s->wake.wake();
}

// Writes an event for the thread whose M is `m` (null: not an M): into its
// P's ring, or the off-P ring.
__attribute__((noinline)) void emit(M* m, TraceType type, std::uint8_t reason,
                                    std::uint16_t aux16, std::uint32_t aux32,
                                    std::uint64_t g, std::uint64_t arg,
                                    Fiber* named) {
  P* p = m != nullptr ? m->p : nullptr;
  if (p != nullptr) {
    // T1: no other write into this ring can interrupt this one.
    GORO_DCHECK(tls_locks_get() > 0 || m->curg() == nullptr);
    // T2: the flag, then the session. The stopper's membarrier is the
    // fence between the two; keep the compiler from swapping them.
    p->trace_busy.store(true, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (TraceSession* s = g_trace.session.load(std::memory_order_acquire)) {
      put(s, &s->rings[p->id], type, reason, aux16, aux32, g, arg, named);
    }
    // release: the stopper's acquire load of the flag orders our ring
    // writes before it frees the ring.
    p->trace_busy.store(false, std::memory_order_release);
    return;
  }
  MutexLock l(&g_trace_offp_mu);
  if (TraceSession* s = g_trace.session.load(std::memory_order_acquire)) {
    put(s, &s->offp, type, reason, aux16, aux32, g, arg, named);
  }
}

}  // namespace

void trace_create_slow(M* m, Fiber* f, std::uint64_t parent) {
  emit(m, TraceType::kCreate, 0, 0, 0, f->id, parent, f);
}

void trace_start_slow(M* m, Fiber* f) {
  emit(m, TraceType::kStart, 0, 0, 0, f->id, 0, f);
}

void trace_stop_slow(M* m, Fiber* f, TraceStop why, WaitReason reason) {
  emit(m, TraceType::kStop, static_cast<std::uint8_t>(why),
       static_cast<std::uint16_t>(reason), 0, f->id, 0, nullptr);
}

void trace_ready_slow(M* m, Fiber* f) {
  TraceSource src;
  std::uint64_t by = 0;
  if (m != nullptr && m->p != nullptr) {
    const Fiber* cur = m->curg();
    src = cur != nullptr ? TraceSource::kFiber : TraceSource::kScheduler;
    if (cur != nullptr) by = cur->id;
  } else {
    // A plain thread, or a fiber inside blocking() (its M's curg).
    src = TraceSource::kThread;
    const Fiber* cur = m != nullptr ? m->curg() : nullptr;
    if (cur != nullptr) by = cur->id;
  }
  emit(m, TraceType::kReady, static_cast<std::uint8_t>(src), 0, 0, f->id, by,
       nullptr);
}

void trace_steal_slow(Fiber* f, int victim, std::uint32_t n) {
  emit(current_m(), TraceType::kSteal, 0, static_cast<std::uint16_t>(std::min(n, 65535u)),
       static_cast<std::uint32_t>(victim), f->id, 0, nullptr);
}

void trace_blocking_done_slow(M* m, Fiber* f) {
  const bool on_p = m->p != nullptr;
  emit(m, TraceType::kBlockingDone, on_p ? 1 : 0, 0, 0, f->id, 0,
       on_p ? f : nullptr);
}

void trace_timer_slow() {
  emit(current_m(), TraceType::kTimer, 0, 0, 0, 0, 0, nullptr);
}

void trace_netpoll_slow(M* m, Fiber* const* fs, int n) {
  emit(m, TraceType::kNetpoll, 0, 0, static_cast<std::uint32_t>(n), 0, 0,
       nullptr);
  for (int i = 0; i < n; ++i) {
    emit(m, TraceType::kReady, static_cast<std::uint8_t>(TraceSource::kNetpoll),
         0, 0, fs[i]->id, 0, nullptr);
  }
}

}  // namespace goro::runtime_internal
