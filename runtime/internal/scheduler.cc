// Copyright goro authors.
//
// The scheduler: how fibers (G) are run by OS threads (M) holding processors
// (P). This follows Go's runtime/proc.go; read its opening essay too.
//
// Switching. A fiber that yields, parks or exits picks its successor itself
// (runnext, then its P's ring) and switches to it directly, one context
// switch. Only when its P has nothing ready -- or the global queue, a due
// timer or shutdown needs attention -- does it switch to its M's scheduler
// context ("g0", the M's own thread stack), which runs the full search
// (find_runnable) and may sleep. Whatever must happen to the fiber that left
// (requeue it, mark it waiting and run its park commit, recycle its stack) is
// recorded in M::after before the switch and done by finish_switch() on the
// context that resumes, once the old fiber is off its stack. This is what
// makes park free of lost wake-ups: nobody can find a parked fiber before its
// context is saved.
//
// Finding work (find_runnable, on g0): own P's expired timers; the global
// queue every 61st schedule (fairness); runnext and the local ring; the global
// queue; the netpoller hook; expired timers of other Ps; stealing half of a
// random victim's ring (and, on the last of four rounds, its runnext); then
// giving the P up and sleeping.
//
// Spinning and parking Ms (Go's protocol, see proc.go "Worker thread parking/
// unparking"). An M looking for work without having found any is "spinning"
// (Sched::nmspinning). At most about half the busy Ps' worth of Ms spin. The
// lost-wake-up problem is a store-load race between:
//   submitter: publish work (runnext exchange, ring push, global queue)
//              -> seq_cst -> if npidle > 0 && nmspinning == 0: wakep()
//   parker:    release P (npidle++, under lock) -> nmspinning-- (seq_cst)
//              -> fence(seq_cst) -> recheck every P's queues and the global
//              queue; take a P back if anything is there
// With the seq_cst fences (an RMW or an explicit fence on each side) at least
// one of them sees the other's store. A spinning M that finds work stops
// spinning and, if it was the last spinner, wakes another (reset_spinning), so
// a burst of go() calls ramps up threads one at a time instead of waking all.
// One deliberate exception: ready() that puts a fiber into an empty runnext
// of a P whose ring is empty does not call wakep -- that fiber runs as soon
// as the caller blocks, which in a hand-off is at once, and waking a thread
// for it costs more than the hand-off. Nothing is lost: the fiber is on a
// running P; if that P's fiber keeps running without switching, sysmon calls
// wakep after one of its periods (under TSan, which runs no sysmon, the fiber
// waits for the caller's next switch). Such a store needs no locked
// instruction (runq_put).
//
// Time slices. A fiber taken from runnext inherits the rest of its waker's
// slice (new_slice), so sysmon sees a chain of hand-offs as one fiber and
// preempts it after one slice; the preempted fiber's runnext then goes behind
// the ring (yield_impl). And after kMaxRunnextStreak hand-offs in a row the
// ring gets a turn (runq_get), sysmon or not. So such a chain cannot starve
// the run queue.
//
// Preemption. Runtime code that touches M or P state runs with the thread's
// runtime-lock count raised (locks.h, acquirem), and every context switch is
// made holding one count that the resumed context drops, so the SIGURG
// handler (preempt/) never switches a fiber in the middle of the scheduler.
// An async-preempted fiber is pinned to its M (M::pinned_head) and resumes on
// the same thread unless Options::preempt_migrate. A spare P (P::is_spare)
// is lent by sysmon while an M is stuck in a raw system call.
//
// Time. Each P has a timer heap; any M that finds a timer due runs it. An M
// that gives up its P sleeps on its futex until the earliest timer of all Ps
// (absolute CLOCK_MONOTONIC, timer slack 1 ns), so a sleeping fiber is woken
// within the kernel's wake-up latency, not a millisecond tick.
//
// Locks: Sched::lock (run queues, idle lists, Ms), Sched::free_lock (fiber
// objects), StackAllocator::mu_ and each TimerHeap::mu_. None is acquired
// while another is held, so there is no order to respect; none is held across
// a context switch (only a sync/ lock is, released by a park commit).

#include "runtime/internal/scheduler.h"

#include <cxxabi.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

#include "runtime/internal/api.h"
#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/park.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace goro::runtime_internal {

std::atomic<Sched*> g_sched{nullptr};
Hooks g_hooks;

namespace {
thread_local M* tls_m __attribute__((tls_model("initial-exec"))) = nullptr;
}  // namespace

// goro_text: code the SIGURG handler never interrupts with a switch (see
// acquirem in scheduler.h). The linker defines the bounds.
#define GORO_TEXT __attribute__((section("goro_text"), noinline, noipa))

extern "C" {
extern const char __start_goro_text[];
extern const char __stop_goro_text[];
}

bool pc_in_goro_text(std::uintptr_t pc) {
  return pc >= reinterpret_cast<std::uintptr_t>(__start_goro_text) &&
         pc < reinterpret_cast<std::uintptr_t>(__stop_goro_text);
}

extern "C" {
__thread int goro_tls_locks __attribute__((tls_model("initial-exec"))) = 0;
}

GORO_TEXT M* current_m() { return tls_m; }

GORO_TEXT M* acquirem() {
  M* m = tls_m;
  if (m != nullptr) tls_locks_inc();
  return m;
}

GORO_TEXT void releasem_slow(M* m);

GORO_TEXT void releasem(M* m) {
  if (m == nullptr) return;
  if (tls_locks_dec() && m->curg != nullptr &&
      m->curg->preempt_requested.load(std::memory_order_relaxed)) {
    releasem_slow(m);
  }
}

M* current_m_signal_safe() { return tls_m; }
void set_current_m(M* m) { tls_m = m; }

const char* fiber_state_name(FiberState s) {
  switch (s) {
    case FiberState::kFree:
      return "free";
    case FiberState::kRunnable:
      return "runnable";
    case FiberState::kRunning:
      return "running";
    case FiberState::kWaiting:
      return "waiting";
    case FiberState::kDead:
      return "dead";
  }
  return "?";
}

[[noreturn]] void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("goro: fatal error: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::abort();
}

namespace {

Sched* sched() { return g_sched.load(std::memory_order_acquire); }

std::uint32_t fastrand(P* p) {
  // xorshift32; owner only.
  std::uint32_t x = p->rand;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  p->rand = x;
  return x;
}

// ---------------------------------------------------------------------------
// Sanitizer and exception-state bookkeeping around a switch.

inline void before_switch(M* m, Fiber* from, Fiber* to, bool from_dying) {
  if (from != nullptr) from->eh = *m->eh_globals;
#if defined(__SANITIZE_ADDRESS__)
  void** save = from_dying ? nullptr
                : from     ? &from->asan_fake_stack
                           : &m->asan_g0_fake_stack;
  if (to != nullptr) {
    __sanitizer_start_switch_fiber(save, to->stack.lo, to->stack.size);
  } else {
    __sanitizer_start_switch_fiber(save, m->asan_g0_bottom, m->asan_g0_size);
  }
#else
  (void)from_dying;
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(to != nullptr ? to->tsan_fiber : m->tsan_g0, 0);
#else
  (void)m;
  (void)to;
#endif
}

}  // namespace

// ---------------------------------------------------------------------------
// Run queues.

// The global queue holds pointers, not a list through the fibers: moving a
// batch in or out under the lock touches no (possibly cold) Fiber object.
void global_put_locked(Sched* s, Fiber* f) {
  s->gq.push_back(f);
  s->gq_size.store(s->gq_size.load(std::memory_order_relaxed) + 1,
                   std::memory_order_seq_cst);
}

void global_put(Sched* s, Fiber* f) {
  {
    std::lock_guard<Mutex> l(s->lock);
    global_put_locked(s, f);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see the essay
}

namespace {

Fiber* global_pop_locked(Sched* s) {
  if (s->gq.empty()) return nullptr;
  Fiber* f = s->gq.front();
  s->gq.pop_front();
  s->gq_size.store(s->gq_size.load(std::memory_order_relaxed) - 1,
                   std::memory_order_relaxed);
  return f;
}

}  // namespace

void runq_put(P* p, Fiber* f, bool next) {
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
  while (!p->runq.push(f)) {
    Fiber* batch[RunQueue<Fiber>::kCapacity / 2 + 1];
    std::uint32_t n = p->runq.take_half_for_overflow(batch);
    if (n == 0) continue;  // a thief made room
    batch[n++] = f;
    Sched* s = sched();
    {
      std::lock_guard<Mutex> l(s->lock);
      for (std::uint32_t i = 0; i < n; ++i) global_put_locked(s, batch[i]);
    }
    return;
  }
}

namespace {

// Hand-offs through runnext in a row, while the ring waits, before the ring
// gets a turn (Tokio's LIFO-slot budget). The time slice bounds such a chain
// too (sysmon), but only with a sysmon and only after a whole slice; this
// bound is cooperative and costs nothing while the ring is empty, as it is
// in a ping-pong.
constexpr std::uint32_t kMaxRunnextStreak = 64;

// The next fiber of this P: runnext (inherits the time slice) or the ring.
Fiber* runq_get(P* p, bool* inherit) {
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
  *inherit = false;
  return p->runq.pop();
}

// Takes a fair share of the global queue; returns one to run, queues the rest
// locally. max == 0: no limit beyond the fair share.
Fiber* global_get_locked(Sched* s, P* p, int max) {
  int size = s->gq_size.load(std::memory_order_relaxed);
  if (size == 0) return nullptr;
  int n = size / s->nprocs + 1;
  if (n > size) n = size;
  if (max > 0 && n > max) n = max;
  if (n > static_cast<int>(RunQueue<Fiber>::kCapacity / 2)) {
    n = RunQueue<Fiber>::kCapacity / 2;
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

// ---------------------------------------------------------------------------
// P and M lists (all under Sched::lock).

// A lent spare (kSpareOn) is listed like any idle P, so that timers and
// wake-ups find it while its stuck M is away; it is not counted in npidle
// (which counts the nprocs real Ps). A spare being retired or switched off
// is never listed.
void pidle_put_locked(Sched* s, P* p) {
  p->status.store(PStatus::kIdle, std::memory_order_relaxed);
  p->m = nullptr;
  if (p->is_spare) {
    int on = kSpareOn;
    if (!p->spare_state.compare_exchange_strong(on, kSpareOn,
                                                std::memory_order_acq_rel)) {
      p->spare_state.store(kSpareOff, std::memory_order_release);
      return;
    }
  }
  p->idle_next = s->idle_p;
  s->idle_p = p;
  if (!p->is_spare) s->npidle.fetch_add(1, std::memory_order_seq_cst);
}

P* pidle_get_locked(Sched* s) {
  P* p = s->idle_p;
  if (p == nullptr) return nullptr;
  s->idle_p = p->idle_next;
  p->idle_next = nullptr;
  if (!p->is_spare) s->npidle.fetch_sub(1, std::memory_order_seq_cst);
  return p;
}

bool pidle_remove_locked(Sched* s, P* want) {
  for (P** pp = &s->idle_p; *pp != nullptr; pp = &(*pp)->idle_next) {
    if (*pp == want) {
      *pp = want->idle_next;
      want->idle_next = nullptr;
      if (!want->is_spare) s->npidle.fetch_sub(1, std::memory_order_seq_cst);
      return true;
    }
  }
  return false;
}

void midle_remove_locked(Sched* s, M* want) {
  for (M** pp = &s->idle_m; *pp != nullptr; pp = &(*pp)->idle_next) {
    if (*pp == want) {
      *pp = want->idle_next;
      want->idle_next = nullptr;
      return;
    }
  }
}

void acquirep(M* m, P* p) {
  m->p = p;
  p->m = m;
  p->status.store(PStatus::kRunning, std::memory_order_relaxed);
}

void releasep_locked(Sched* s, M* m) {
  P* p = m->p;
  m->p = nullptr;
  pidle_put_locked(s, p);
}

void m_main(Sched* s, M* m);

}  // namespace

// startm runs `p` (or an idle P if null) on an idle or new M. With spinning,
// the caller has already counted the new M in nmspinning.
void startm(Sched* s, P* p, bool spinning) {
  std::unique_lock<Mutex> l(s->lock);
  if (s->stopping.load(std::memory_order_relaxed)) {
    if (p != nullptr) pidle_put_locked(s, p);
    if (spinning) s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  if (p != nullptr)
    p->status.store(PStatus::kRunning, std::memory_order_relaxed);
  if (p == nullptr) {
    p = pidle_get_locked(s);
    if (p == nullptr) {
      if (spinning) s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
  }
  if (g_hooks.wake_sysmon != nullptr) g_hooks.wake_sysmon();
  M* m = s->idle_m;
  if (m != nullptr) {
    s->idle_m = m->idle_next;
    m->idle_next = nullptr;
    m->idle = false;
    m->next_p = p;
    m->next_spinning = spinning;
    l.unlock();
    s->threads_woken.fetch_add(1, std::memory_order_relaxed);
    m->note.wake();
    return;
  }
  auto owned = std::make_unique<M>();
  m = owned.get();
  m->id = static_cast<int>(s->ms.size());
  m->next_p = p;
  m->next_spinning = spinning;
  s->ms.push_back(std::move(owned));
  s->nthreads.fetch_add(1, std::memory_order_relaxed);
  // Start the thread under the lock so teardown, which joins every M after
  // setting `stopping` under the lock, never misses one.
  m->thread = std::thread(m_main, s, m);
}

void wakep(Sched* s) {
  if (s->npidle.load(std::memory_order_seq_cst) == 0) return;
  int zero = 0;
  if (s->nmspinning.load(std::memory_order_seq_cst) != 0 ||
      !s->nmspinning.compare_exchange_strong(zero, 1,
                                             std::memory_order_seq_cst)) {
    return;
  }
  startm(s, nullptr, true);
}

namespace {

void reset_spinning(Sched* s, M* m) {
  m->spinning = false;
  if (s->nmspinning.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    // We were the last spinner and found work: there may be more. Wake
    // another M to look (Go's resetspinning).
    wakep(s);
  }
}

// ---------------------------------------------------------------------------
// Fiber life cycle.

[[noreturn]] void fiber_main(Fiber* f);

void init_first_frame(P* p, Fiber* f) {
  Sched* s = sched();
  f->stack = p->stack_cache.get(s->stacks, f->stack_size, s->opts.stack_size);
#if defined(__SANITIZE_ADDRESS__)
  // A recycled stack still carries the poisoned redzones of its previous
  // fiber's frames, which never returned.
  __asan_unpoison_memory_region(f->stack.lo, f->stack.size);
#endif
  auto* fr =
      reinterpret_cast<SwitchFrame*>(f->stack.hi() - sizeof(SwitchFrame));
  std::memset(fr, 0, sizeof(*fr));
  fr->mxcsr = kDefaultMxcsr;
  fr->x87_cw = kDefaultX87Cw;
  fr->r12 = reinterpret_cast<std::uint64_t>(f);
  fr->rbx = reinterpret_cast<std::uint64_t>(&fiber_main);
  fr->rbp = 0;
  fr->ret = reinterpret_cast<std::uint64_t>(&goro_context_trampoline);
  f->sp = fr;
#if defined(__SANITIZE_THREAD__)
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
}

// Called on the context that resumes after every switch (and first thing in
// a new fiber): completes what the previous context asked for in M::after.
__attribute__((noinline, noipa)) M* finish_switch();

// Drops the M::locks count a switch was made with, on the M that resumed.
// Inline: after the decrement a preemption is harmless.
inline void release_after_switch(M* m) {
  if (tls_locks_dec() && m->curg != nullptr &&
      m->curg->preempt_requested.load(std::memory_order_relaxed)) {
    releasem_slow(m);
  }
}

}  // namespace

void fiber_free(M* m, Fiber* f);

namespace {

__attribute__((noinline, noipa)) M* finish_switch() {
  M* m = current_m();
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(
      m->curg ? m->curg->asan_fake_stack : m->asan_g0_fake_stack, nullptr,
      nullptr);
#endif
  *m->eh_globals = m->curg ? m->curg->eh : EhGlobals{};

  M::After a = m->after;
  if (a == M::After::kNothing) return m;
  m->after = M::After::kNothing;
  Fiber* f = m->after_fiber;
  switch (a) {
    case M::After::kNothing:
      break;
    case M::After::kRequeue:
      f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
      runq_put(m->p, f, false);
      break;
    case M::After::kPin:
      f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
      f->sched_next = nullptr;
      if (m->pinned_tail != nullptr) {
        m->pinned_tail->sched_next = f;
      } else {
        m->pinned_head = f;
      }
      m->pinned_tail = f;
      break;
    case M::After::kRequeueGlobal: {
      f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
      Sched* s = sched();
      global_put(s, f);
      wakep(s);
      break;
    }
    case M::After::kPark: {
      // The fiber is off its stack: from now on a waker may ready it.
      f->state.store(FiberState::kWaiting, std::memory_order_release);
      bool (*commit)(void*) = m->after_commit;
      m->after_commit = nullptr;
      if (commit != nullptr && !commit(m->after_arg)) ready(f);
      break;
    }
    case M::After::kExit:
      fiber_free(m, f);
      break;
  }
  return m;
}

// A fiber starts a fresh time slice on P. A fiber taken from runnext
// inherits the slice of the one that readied it instead (Go's rule): a
// chain of hand-offs through runnext counts as one fiber for sysmon, which
// preempts it after one slice, so it cannot starve the run queue.
void new_slice(P* p) {
  ++p->schedtick;
  p->sched_seq.store(p->sched_seq.load(std::memory_order_relaxed) + 1,
                     std::memory_order_relaxed);
}

// Switches from the running fiber `self` to `next`, or to g0 if null.
// m->after must already say what to do with `self`.
M* switch_from_fiber(M* m, Fiber* self, Fiber* next, bool inherit, bool dying) {
  if (!self->stack.canary_intact()) report_stack_overflow(self);
  void* to;
  if (next != nullptr) {
    P* p = m->p;
    next->state.store(FiberState::kRunning, std::memory_order_relaxed);
    m->curg = next;
    if (!inherit) new_slice(p);
    p->context_switches.add();
    if (next->sp == nullptr) init_first_frame(p, next);
    to = next->sp;
  } else {
    m->curg = nullptr;
    to = m->g0_sp;
  }
  before_switch(m, self, next, dying);
  goro_context_switch(&self->sp, to);
  return finish_switch();  // possibly another M
}

enum class Pick { kFiber, kNeedScheduler, kNothing };

// The fiber-side quick search: what a yielding/parking/exiting fiber may
// switch to directly. kNeedScheduler: something only g0 handles is pending.
}  // namespace

Fiber* pinned_pop(M* m) {
  Fiber* f = m->pinned_head;
  if (f != nullptr) {
    m->pinned_head = f->sched_next;
    if (m->pinned_head == nullptr) m->pinned_tail = nullptr;
    f->sched_next = nullptr;
  }
  return f;
}

namespace {

Pick pick_next(Sched* s, M* m, Fiber** out, bool* inherit) {
  P* p = m->p;
  if (s->stopping.load(std::memory_order_relaxed)) return Pick::kNeedScheduler;
  if (p->is_spare &&
      p->spare_state.load(std::memory_order_acquire) == kSpareRetire) {
    return Pick::kNeedScheduler;
  }
  if (m->pinned_head != nullptr && (++m->pin_tick & 1) != 0) {
    // Alternate pinned fibers with the run queue so neither starves.
    *out = pinned_pop(m);
    *inherit = false;
    return Pick::kFiber;
  }
  std::int64_t t0 = p->timers.earliest();
  if (t0 != 0 && mono_now_ns() >= t0) return Pick::kNeedScheduler;
  if (s->gq_size.load(std::memory_order_relaxed) > 0 &&
      p->schedtick % 61 == 0) {
    return Pick::kNeedScheduler;
  }
  *out = runq_get(p, inherit);
  if (*out == nullptr && m->pinned_head != nullptr) {
    *out = pinned_pop(m);
    *inherit = false;
  }
  return *out != nullptr ? Pick::kFiber : Pick::kNothing;
}

// Leaves the current fiber (after m->after is set) for whatever runs next.
M* leave_fiber(M* m, Fiber* self, bool dying) {
  Fiber* next = nullptr;
  bool inherit = false;
  pick_next(sched(), m, &next, &inherit);
  return switch_from_fiber(m, self, next, inherit, dying);
}

[[noreturn]] void fiber_main(Fiber* f) {
  release_after_switch(finish_switch());  // the count the switcher held
  try {
    f->invoke(f->closure);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "goro: uncaught exception in fiber %llu: %s\n",
                 static_cast<unsigned long long>(f->id), e.what());
    std::fflush(stderr);
    std::abort();
  } catch (...) {
    std::fprintf(stderr,
                 "goro: uncaught exception in fiber %llu: (not a "
                 "std::exception)\n",
                 static_cast<unsigned long long>(f->id));
    std::fflush(stderr);
    std::abort();
  }
  f->destroy(f->closure);
  if (f->closure_on_heap) {
    ::operator delete(f->closure, std::align_val_t(f->closure_align));
  }
  f->closure = nullptr;
  f->invoke = nullptr;
  f->destroy = nullptr;
  M* m = acquirem();
  m->after = M::After::kExit;
  m->after_fiber = f;
  leave_fiber(m, f, /*dying=*/true);
  fatal("dead fiber %llu resumed", static_cast<unsigned long long>(f->id));
}

}  // namespace

// A P's free Fiber objects beyond this go to the global list, half at a time.
constexpr std::size_t kFreeFibersCap = 256;

void fiber_free(M* m, Fiber* f) {
  P* p = m->p;
  Sched* s = sched();
  f->state.store(FiberState::kDead, std::memory_order_relaxed);
#if defined(__SANITIZE_THREAD__)
  __tsan_destroy_fiber(f->tsan_fiber);
  f->tsan_fiber = nullptr;
#endif
  p->stack_cache.put(s->stacks, f->stack, s->opts.stack_size);
  f->stack = Stack{};
  f->sp = nullptr;
  f->name.clear();
  f->state.store(FiberState::kFree, std::memory_order_relaxed);
  p->fibers_exited.add();
  p->free_fibers.push_back(f);
  if (p->free_fibers.size() > kFreeFibersCap) {
    // Share with other Ps: move half to the global free list, as an array of
    // pointers -- no Fiber object is touched under the lock.
    const std::size_t half = kFreeFibersCap / 2;
    std::lock_guard<Mutex> l(s->free_lock);
    s->free_fibers.insert(s->free_fibers.end(), p->free_fibers.end() - half,
                          p->free_fibers.end());
    p->free_fibers.resize(p->free_fibers.size() - half);
  }
}

// ---------------------------------------------------------------------------
// The scheduler context (g0).

namespace {

void execute(M* m, Fiber* f, bool inherit) {
  P* p = m->p;
  f->state.store(FiberState::kRunning, std::memory_order_relaxed);
  m->curg = f;
  if (!inherit) new_slice(p);
  p->context_switches.add();
  if (f->sp == nullptr) init_first_frame(p, f);
  tls_locks_inc();  // dropped by the fiber as it resumes
  before_switch(m, nullptr, f, false);
  goro_context_switch(&m->g0_sp, f->sp);
  finish_switch();
  tls_locks_dec();  // the count the fiber held when it switched here
}

// Runs expired timers of every P (ours first). Returns true if any fired.
bool run_all_timers(Sched* s, P* self, std::int64_t* now) {
  bool fired = false;
  const int n = static_cast<int>(s->ps.size());
  for (int i = -1; i < n; ++i) {
    P* q = i < 0 ? self : s->ps[static_cast<std::size_t>(i)].get();
    if (i >= 0 && q == self) continue;
    std::int64_t t0 = q->timers.earliest();
    if (t0 == 0) continue;
    if (*now == 0) *now = mono_now_ns();
    if (t0 > *now) continue;
    int n = q->timers.run_expired(*now);
    if (n > 0) {
      self->timers_fired.add(static_cast<std::uint64_t>(n));
      fired = true;
    }
  }
  return fired;
}

Fiber* steal_work(Sched* s, P* p, bool* inherit) {
  const int n = static_cast<int>(s->ps.size());
  for (int round = 0; round < 4; ++round) {
    const bool last = round == 3;
    const int start = static_cast<int>(fastrand(p) % static_cast<unsigned>(n));
    for (int k = 0; k < n; ++k) {
      P* v = s->ps[static_cast<std::size_t>((start + k) % n)].get();
      if (v == p) continue;
      if (Fiber* f = v->runq.steal_into(p->runq)) {
        p->steals.add();
        *inherit = false;
        return f;
      }
      if (last) {
        Fiber* r = v->runnext.load(std::memory_order_relaxed);
        if (r == nullptr) continue;
        if (v->status.load(std::memory_order_relaxed) == PStatus::kRunning) {
          // Its owner is about to run it (it was just readied there); give it
          // a moment before taking it across CPUs (Go sleeps 3 us here).
          for (int spin = 0; spin < 300; ++spin) __builtin_ia32_pause();
        }
        if (v->runnext.compare_exchange_strong(r, nullptr,
                                               std::memory_order_acquire)) {
          p->steals.add();
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

std::int64_t earliest_timer(Sched* s) {
  std::int64_t best = 0;
  for (auto& q : s->ps) {
    std::int64_t t = q->timers.earliest();
    if (t != 0 && (best == 0 || t < best)) best = t;
  }
  return best;
}

// stopm parks an M that holds no P until another thread hands it one or, with
// a deadline, until then (it then tries to take an idle P itself).
void stopm(Sched* s, M* m, std::int64_t deadline) {
  {
    std::lock_guard<Mutex> l(s->lock);
    if (s->stopping.load(std::memory_order_relaxed)) return;
    m->note.clear();
    m->idle = true;
    m->idle_next = s->idle_m;
    s->idle_m = m;
  }
  m->note.sleep(deadline);
  std::lock_guard<Mutex> l(s->lock);
  if (m->idle) {  // deadline passed: nobody handed us anything
    midle_remove_locked(s, m);
    m->idle = false;
    if (P* p = pidle_get_locked(s)) acquirep(m, p);
    return;
  }
  if (m->next_p != nullptr) {
    acquirep(m, m->next_p);
    m->spinning = m->next_spinning;
    m->next_p = nullptr;
    m->next_spinning = false;
  }
}

// retire_spare gives back a spare P once the M it stood in for is running
// again: its queued fibers go to the global queue (and so do fibers pinned to
// this M, which is about to stop).
void retire_spare(Sched* s, M* m) {
  P* p = m->p;
  bool inherit;
  std::vector<Fiber*> moved;
  while (Fiber* f = runq_get(p, &inherit)) moved.push_back(f);
  while (Fiber* f = pinned_pop(m)) moved.push_back(f);
  std::lock_guard<Mutex> l(s->lock);
  for (Fiber* f : moved) global_put_locked(s, f);
  m->p = nullptr;
  pidle_put_locked(s, p);  // a spare: switched off, not listed
}

// find_runnable returns the next fiber for this M, blocking until there is
// one; null when the runtime is stopping.
Fiber* find_runnable(Sched* s, M* m, bool* inherit) {
  for (;;) {
    if (s->stopping.load(std::memory_order_acquire)) return nullptr;
    if (m->p == nullptr) {
      // No P to be had. A timer already due is some P's to run (every P is
      // busy, or we would have one): sleep until handed a P rather than spin.
      std::int64_t deadline = earliest_timer(s);
      if (deadline != 0 && deadline <= mono_now_ns()) deadline = 0;
      stopm(s, m, deadline);
      continue;
    }
    P* p = m->p;
    if (p->is_spare &&
        p->spare_state.load(std::memory_order_acquire) == kSpareRetire) {
      retire_spare(s, m);
      continue;
    }
    std::int64_t now = 0;
    if (p->timers.earliest() != 0) run_all_timers(s, p, &now);

    if (p->schedtick % 61 == 0 && s->gq_size.load(std::memory_order_relaxed)) {
      std::unique_lock<Mutex> l(s->lock);
      if (Fiber* f = global_get_locked(s, p, 1)) {
        l.unlock();  // reset_spinning may take s->lock (wakep -> startm)
        if (m->spinning) reset_spinning(s, m);
        *inherit = false;
        return f;
      }
    }
    if (Fiber* f = runq_get(p, inherit)) {
      if (m->spinning) reset_spinning(s, m);
      return f;
    }
    if (Fiber* f = pinned_pop(m)) {
      if (m->spinning) reset_spinning(s, m);
      *inherit = false;
      return f;
    }
    if (s->gq_size.load(std::memory_order_relaxed) > 0) {
      std::unique_lock<Mutex> l(s->lock);
      if (Fiber* f = global_get_locked(s, p, 0)) {
        l.unlock();
        if (m->spinning) reset_spinning(s, m);
        *inherit = false;
        return f;
      }
    }
    if (g_hooks.netpoll != nullptr && g_hooks.netpoll() > 0) continue;
    if (run_all_timers(s, p, &now)) continue;

    // Steal, unless enough Ms are already looking.
    int busy = s->nprocs - s->npidle.load(std::memory_order_relaxed);
    if (m->spinning ||
        2 * s->nmspinning.load(std::memory_order_relaxed) < busy) {
      if (!m->spinning) {
        m->spinning = true;
        s->nmspinning.fetch_add(1, std::memory_order_seq_cst);
      }
      if (Fiber* f = steal_work(s, p, inherit)) {
        reset_spinning(s, m);
        return f;
      }
    }

    // Nothing to do: give up the P.
    {
      std::unique_lock<Mutex> l(s->lock);
      if (s->stopping.load(std::memory_order_relaxed)) return nullptr;
      if (Fiber* f = global_get_locked(s, p, 0)) {
        l.unlock();
        if (m->spinning) reset_spinning(s, m);
        *inherit = false;
        return f;
      }
      releasep_locked(s, m);
    }
    const bool was_spinning = m->spinning;
    if (was_spinning) {
      m->spinning = false;
      s->nmspinning.fetch_sub(1, std::memory_order_seq_cst);
    }
    // The parker's half of the wake-up protocol (see the essay).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::int64_t deadline = earliest_timer(s);
    const bool timer_due = deadline != 0 && deadline <= mono_now_ns();
    if (any_local_work(s) || timer_due) {
      std::lock_guard<Mutex> l(s->lock);
      if (P* q = pidle_get_locked(s)) {
        acquirep(m, q);
        if (was_spinning) {
          m->spinning = true;
          s->nmspinning.fetch_add(1, std::memory_order_seq_cst);
        }
        continue;
      }
    }
    stopm(s, m, deadline);
  }
}

void setup_thread(M* m) {
  set_current_m(m);
  m->eh_globals = reinterpret_cast<EhGlobals*>(abi::__cxa_get_globals());
  m->tid = static_cast<pid_t>(syscall(SYS_gettid));
  // Sleep to the nanosecond, not the default 50 us of slack.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  install_thread_signal_stack(m);
#if defined(__SANITIZE_THREAD__)
  m->tsan_g0 = __tsan_get_current_fiber();
#endif
#if defined(__SANITIZE_ADDRESS__)
  pthread_attr_t attr;
  pthread_getattr_np(pthread_self(), &attr);
  pthread_attr_getstack(&attr, &m->asan_g0_bottom, &m->asan_g0_size);
  pthread_attr_destroy(&attr);
#endif
  char name[16];
  std::snprintf(name, sizeof(name), "goro-m%d", m->id);
  pthread_setname_np(pthread_self(), name);
  if (g_hooks.on_thread_start != nullptr) g_hooks.on_thread_start(m);
}

void m_main(Sched* s, M* m) {
  setup_thread(m);
  {
    std::lock_guard<Mutex> l(s->lock);
    if (m->next_p != nullptr) {
      acquirep(m, m->next_p);
      m->spinning = m->next_spinning;
      m->next_p = nullptr;
    }
  }
  for (;;) {
    bool inherit = false;
    Fiber* f = find_runnable(s, m, &inherit);
    if (f == nullptr) break;
    execute(m, f, inherit);
  }
  if (g_hooks.on_thread_exit != nullptr) g_hooks.on_thread_exit(m);
  remove_thread_signal_stack(m);
  set_current_m(nullptr);
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points.

// In goro_text: no preemption can move the fiber between reading the M and
// reading its curg.
GORO_TEXT Fiber* current_fiber() {
  M* m = tls_m;
  return m == nullptr || m->blocking_p != nullptr ? nullptr : m->curg;
}

std::uint64_t fiber_id(const Fiber* f) { return f->id; }

GORO_TEXT void no_preempt_inc() { acquirem(); }

GORO_TEXT void no_preempt_dec() { releasem(tls_m); }

GORO_TEXT void releasem_slow(M* m) {
  // A preemption was requested while the fiber could not be preempted; honour
  // it now, at this cooperative point -- unless the fiber is in a
  // goro::NoPreempt region, inside blocking(), or not on a P.
  Fiber* f = m->curg;
  if (f->no_preempt != 0 || m->p == nullptr || m->blocking_p != nullptr) {
    return;
  }
  preempt_yield(false);
}

void preempt_check() {
  M* m = acquirem();
  releasem(m);
}

bool spin_may_help() {
  M* m = acquirem();
  bool ok = false;
  if (m != nullptr && m->p != nullptr && m->curg != nullptr) {
    const Sched* s = sched();
    // Another P is running fibers: neither idle nor spinning for work. Our
    // own P has nothing else to run (Go's sync_runtime_canSpin).
    ok = s->npidle.load(std::memory_order_relaxed) +
                 s->nmspinning.load(std::memory_order_relaxed) + 1 <
             s->nprocs &&
         m->p->runq.empty() &&
         m->p->runnext.load(std::memory_order_relaxed) == nullptr;
  }
  releasem(m);
  return ok;
}

void park(bool (*commit)(void*), void* arg) {
  M* m = acquirem();
  Fiber* self = m != nullptr ? m->curg : nullptr;
  if (self == nullptr || m->p == nullptr) {
    fatal("park called outside a fiber (or inside goro::blocking)");
  }
  m->after = M::After::kPark;
  m->after_fiber = self;
  m->after_commit = commit;
  m->after_arg = arg;
  // Resumed, possibly on another M: drop the count the switcher held there.
  release_after_switch(leave_fiber(m, self, false));
}

void ready(Fiber* f) {
  // kWaiting -> kRunnable. By the park protocol exactly one waker owns this
  // transition (whoever removed the fiber from where its commit published
  // it), so a load and a store suffice; the check still catches a second
  // ready() of the same park in practice. acquire: pairs with the release
  // store in finish_switch, so the fiber's saved context is visible.
  const FiberState st = f->state.load(std::memory_order_acquire);
  if (st != FiberState::kWaiting) {
    fatal("ready() of fiber %llu in state %s",
          static_cast<unsigned long long>(f->id), fiber_state_name(st));
  }
  f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
  Sched* s = sched();
  M* m = acquirem();
  if (m != nullptr && m->p != nullptr) {
    runq_put(m->p, f, true);
    // A fiber readied into an empty runnext of a P whose ring is empty runs
    // as soon as the caller blocks or yields -- usually at once (a channel
    // hand-off, a mutex release before a wait). Waking an idle M for it
    // would only have that M steal it across CPUs or go back to sleep, which
    // costs more than the hand-off itself (Tokio's LIFO slot makes the same
    // trade). If the caller keeps running instead, sysmon wakes an M for the
    // waiting fiber within one of its periods (retake). Anything in the ring
    // is stealable work: wake as usual.
    if (!m->p->runq.empty()) {
      std::atomic_thread_fence(std::memory_order_seq_cst);  // see runq_put
      wakep(s);
    }
  } else {
    global_put(s, f);
    wakep(s);
  }
  releasem(m);
}

void yield_impl(bool preempted, bool async) {
  M* m = acquirem();
  Fiber* self = m != nullptr ? m->curg : nullptr;
  if (self == nullptr || m->p == nullptr || m->blocking_p != nullptr) {
    releasem(m);
    if (!preempted) std::this_thread::yield();
    return;
  }
  self->preempt_requested.store(false, std::memory_order_relaxed);
  Sched* s = sched();
  if (preempted) {
    // The slice of a runnext chain is over: whoever waits in runnext goes
    // behind the run queue, whose fibers run first.
    if (Fiber* r = m->p->runnext.exchange(nullptr, std::memory_order_acquire)) {
      runq_put(m->p, r, false);
    }
  }
  Fiber* next = nullptr;
  bool inherit = false;
  Pick pick = pick_next(s, m, &next, &inherit);
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
  // A preempted fiber's successor starts a fresh time slice.
  if (preempted) inherit = false;
  release_after_switch(switch_from_fiber(m, self, next, inherit, false));
}

void preempt_yield(bool async) { yield_impl(true, async); }

namespace {

// Refills an empty per-P free list: a batch from the global list, or new
// objects allocated outside the lock, so that spawning costs one lock round
// trip per batch, not per fiber.
void refill_free_fibers(Sched* s, P* p) {
  constexpr std::size_t kBatch = kFreeFibersCap / 2;
  {
    std::lock_guard<Mutex> l(s->free_lock);
    const std::size_t n = std::min(kBatch, s->free_fibers.size());
    p->free_fibers.insert(p->free_fibers.end(), s->free_fibers.end() - n,
                          s->free_fibers.end());
    s->free_fibers.resize(s->free_fibers.size() - n);
  }
  if (!p->free_fibers.empty()) return;
  Fiber* batch[kBatch];
  for (Fiber*& g : batch) g = new Fiber;
  std::lock_guard<Mutex> l(s->free_lock);
  for (Fiber* g : batch) {
    g->all_next = s->all_fibers;
    s->all_fibers = g;
    p->free_fibers.push_back(g);
  }
}

}  // namespace

Fiber* fiber_new(const SpawnOptions* o) {
  Sched* s = sched();
  if (s == nullptr) {
    throw std::logic_error(
        "goro::go: no runtime is running (call it inside goro::run)");
  }
  std::size_t ss = s->opts.stack_size;
  if (o->stack_size != 0) {
    ss = validate_stack_size(o->stack_size, "SpawnOptions::stack_size");
  }
  M* m = acquirem();
  P* p = m != nullptr ? m->p : nullptr;
  Fiber* f = nullptr;
  if (p != nullptr && p->free_fibers.empty()) refill_free_fibers(s, p);
  if (p != nullptr) {
    f = p->free_fibers.back();
    p->free_fibers.pop_back();
  } else {
    std::lock_guard<Mutex> l(s->free_lock);
    if (!s->free_fibers.empty()) {
      f = s->free_fibers.back();
      s->free_fibers.pop_back();
    } else {
      f = new Fiber;
      f->all_next = s->all_fibers;
      s->all_fibers = f;
    }
  }
  f->sched_next = nullptr;
  if (p != nullptr) {
    if (p->id_next == p->id_end) {
      p->id_next = s->next_fiber_id.fetch_add(16, std::memory_order_relaxed);
      p->id_end = p->id_next + 16;
    }
    f->id = p->id_next++;
  } else {
    f->id = s->next_fiber_id.fetch_add(1, std::memory_order_relaxed);
  }
  f->stack_size = ss;
  f->name = o->name;
  f->sp = nullptr;
  f->closure = nullptr;
  f->closure_on_heap = false;
  f->preempt_requested.store(false, std::memory_order_relaxed);
  f->no_preempt = 0;
  f->os_locks = 0;
  f->eh = EhGlobals{};
  releasem(m);
  return f;
}

void* fiber_closure_storage(Fiber* f, std::size_t size, std::size_t align) {
  if (size <= Fiber::kInlineClosure && align <= 16) {
    f->closure = f->inline_closure;
    f->closure_on_heap = false;
  } else {
    f->closure = ::operator new(size, std::align_val_t(align));
    f->closure_on_heap = true;
    f->closure_align = align;
  }
  return f->closure;
}

void fiber_discard(Fiber* f) {
  if (f->closure_on_heap) {
    ::operator delete(f->closure, std::align_val_t(f->closure_align));
  }
  f->closure = nullptr;
  f->closure_on_heap = false;
  f->name.clear();
  Sched* s = sched();
  std::lock_guard<Mutex> l(s->free_lock);
  s->free_fibers.push_back(f);
}

void fiber_start(Fiber* f, void (*invoke)(void*), void (*destroy)(void*)) {
  f->invoke = invoke;
  f->destroy = destroy;
  f->state.store(FiberState::kRunnable, std::memory_order_relaxed);
  Sched* s = sched();
  M* m = acquirem();
  if (m != nullptr && m->p != nullptr) {
    m->p->fibers_created.add();
    runq_put(m->p, f, true);
  } else {
    s->created_off_p.fetch_add(1, std::memory_order_relaxed);
    global_put(s, f);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see runq_put
  wakep(s);
  releasem(m);  // a cooperative preemption point
}

bool blocking_enter() {
  M* m = acquirem();
  if (m == nullptr || m->curg == nullptr || m->p == nullptr) {
    releasem(m);
    return false;
  }
  Sched* s = sched();
  P* p = m->p;
  // Fibers pinned to this thread (async-preempted) cannot wait for it: fn
  // may be waiting for one of them. They go with the P and may migrate.
  while (Fiber* f = pinned_pop(m)) runq_put(p, f, false);
  p->m = nullptr;
  m->p = nullptr;
  m->blocking_p = p;
  handoffp(s, p);
  // The fiber keeps one count while in blocking(): it must not be preempted
  // (it holds no P), and blocking_exit drops it.
  return true;
}

void blocking_exit() {
  M* m = current_m();  // still holding the count from blocking_enter
  Sched* s = sched();
  P* old = m->blocking_p;
  m->blocking_p = nullptr;
  {
    std::lock_guard<Mutex> l(s->lock);
    P* p = nullptr;
    if (pidle_remove_locked(s, old)) {
      p = old;
    } else {
      p = pidle_get_locked(s);
    }
    if (p != nullptr) {
      acquirep(m, p);
    }
  }
  if (m->p == nullptr) {
    // No P is free: queue this fiber (and any fiber pinned to this thread:
    // this M is about to stop, so they may migrate after all) globally and
    // let this M stop.
    while (Fiber* f = pinned_pop(m)) global_put(s, f);
    Fiber* self = m->curg;
    m->after = M::After::kRequeueGlobal;
    m->after_fiber = self;
    m = switch_from_fiber(m, self, nullptr, false, false);
  }
  releasem(m);
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
  std::unique_lock<Mutex> l(s->lock);
  if (s->gq_size.load(std::memory_order_relaxed) > 0) {
    l.unlock();
    s->handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(s, p, false);
    return;
  }
  pidle_put_locked(s, p);
}

void timer_start(Timer* t) {
  Sched* s = sched();
  M* m = acquirem();
  struct Release {
    M* m;
    ~Release() { releasem(m); }
  } release{m};
  P* p = m != nullptr && m->p != nullptr ? m->p : s->ps[0].get();
  bool earliest = p->timers.add(t);
  if (earliest && (m == nullptr || m->p != p)) {
    // An idle M may be sleeping until a later deadline: wake one to re-plan.
    std::unique_lock<Mutex> l(s->lock);
    if (M* idle = s->idle_m) {
      s->idle_m = idle->idle_next;
      idle->idle_next = nullptr;
      idle->idle = false;
      idle->next_p = pidle_get_locked(s);
      idle->next_spinning = false;
      l.unlock();
      idle->note.wake();
    }
  }
}

bool timer_stop(Timer* t) {
  void* h = std::atomic_ref<void*>(t->heap).load(std::memory_order_acquire);
  if (h == nullptr) return false;
  return static_cast<TimerHeap*>(h)->remove(t);
}

void sleep_until_impl(std::int64_t when) {
  M* m = current_m();
  if (m == nullptr || m->curg == nullptr || m->blocking_p != nullptr) {
    std::int64_t now = mono_now_ns();
    if (when > now) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(when - now));
    }
    return;
  }
  if (when <= mono_now_ns()) return;
  Timer t;
  t.when = when;
  t.fire = [](void* f) { ready(static_cast<Fiber*>(f)); };
  t.arg = m->curg;
  park(
      [](void* tp) {
        current_m()->p->timers.add(static_cast<Timer*>(tp));
        return true;
      },
      &t);
}

// Called by sysmon after it marked a spare kSpareRetire: a spare idling on
// the list is switched off here; one held by an M retires itself.
void retire_idle_spare(Sched* s, P* spare) {
  std::lock_guard<Mutex> l(s->lock);
  if (pidle_remove_locked(s, spare)) {
    spare->spare_state.store(kSpareOff, std::memory_order_release);
  }
}

// Runs the scheduler loop of M0 on a new thread for p; used by run_main.
void start_first_m(Sched* s) {
  P* p;
  {
    std::lock_guard<Mutex> l(s->lock);
    p = pidle_get_locked(s);
  }
  startm(s, p, false);
}

void stop_all_ms(Sched* s) {
  std::vector<M*> ms;
  {
    std::lock_guard<Mutex> l(s->lock);
    s->stopping.store(true, std::memory_order_release);
    while (M* m = s->idle_m) {
      s->idle_m = m->idle_next;
      m->idle_next = nullptr;
      m->idle = false;
      m->next_p = nullptr;
      m->note.wake();
    }
    for (auto& m : s->ms) ms.push_back(m.get());
  }
  for (M* m : ms) {
    if (m->thread.joinable()) m->thread.join();
  }
}

}  // namespace goro::runtime_internal
