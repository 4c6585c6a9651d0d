// Copyright goro authors.
//
// A runtime's life: goro::run (start the Ms, run the main fiber, stop, tear
// down), the public calls about the current fiber, and stats.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

#include "runtime/internal/api.h"
#include "runtime/internal/park.h"
#include "runtime/internal/sanitizers.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"
#include "runtime/internal/trace.h"
#include "runtime/run.h"
#include "runtime/stats.h"
#include "runtime/this_fiber.h"

namespace goro::runtime_internal {
namespace {

// At most one runtime at a time: set by run_main for its whole duration.
std::atomic<bool> g_running{false};

// Counters of the last runtime, for stats() after run returned.
std::mutex g_last_mu;
Stats g_last;  // guarded by g_last_mu

// Fiber ids are unique in the process, never reused (this_fiber.h): each
// runtime continues numbering where the previous one stopped.
std::atomic<std::uint64_t> g_next_fiber_id{1};

// Runtimes started so far (Sched::epoch).
std::uint64_t g_epochs = 0;  // only run_main, which g_running serialises

// Fibers abandoned by an ended runtime whose stacks may still be in use, and
// their Fiber objects: kept for the life of the process (see ~Sched).
std::mutex g_graveyard_mu;
Fiber* g_graveyard = nullptr;  // via all_next; guarded by g_graveyard_mu

// True if something outside the runtime may still point into f's stack: a
// sync object's wait queue holds a Waiter there (a parked fiber, or a select
// that was readied by one case and is still linked into its others). A
// sleeping fiber's Timer is only in its P's heap, which dies with the Sched.
bool stack_may_be_referenced(const Fiber* f) {
  if (f->stack.empty() || f->sp == nullptr) return false;
  switch (f->state.load(std::memory_order_relaxed)) {
    case FiberState::kWaiting:
      return f->wait_reason.load(std::memory_order_relaxed) !=
             WaitReason::kSleep;
    case FiberState::kRunnable:
      return true;  // possibly readied from a wait queue
    default:
      return false;
  }
}

}  // namespace

Sched::Sched(const Options& o, int procs) : opts(o), nprocs(procs) {
  ps.reserve(2 * static_cast<std::size_t>(procs));
  for (int i = 0; i < 2 * procs; ++i) {
    // Default-initialised: P's arrays are left as they are (see P).
    auto p = std::make_unique_for_overwrite<P>();
    p->id = i;
    p->is_spare = i >= procs;
    p->rand = 0x9E3779B9u * static_cast<std::uint32_t>(i + 1);
    // Room for the first fibers to end (fiber_free) without a malloc on the
    // M's thread: its first one makes glibc set up a malloc arena for the
    // thread (a 64 MiB reservation, four system calls and page faults),
    // which a short run would pay for nothing.
    p->free_fibers.reserve(16);
    ps.push_back(std::move(p));
  }
  MutexLock l(&lock);
  for (int i = procs; i-- > 0;) {
    ps[static_cast<std::size_t>(i)]->idle_next = idle_p;
    idle_p = ps[static_cast<std::size_t>(i)].get();
  }
  npidle.store(procs);
}

Sched::~Sched() {
  // Every M has exited. Destroy closures of fibers that never started (they
  // own no stack frames), free the fiber objects; the StackAllocator member
  // then unmaps every stack, abandoned ones included.
  //
  // Except for abandoned fibers that a sync object may still point into (a
  // Chan, Mutex or WaitGroup that outlives run, used by a plain thread or a
  // later runtime): their stacks stay mapped and their Fiber objects stay
  // allocated for the life of the process, with Fiber::epoch marking them
  // as belonging to no live runtime, so that such a late ready() is a no-op
  // and never touches freed memory. This leaks, deliberately, the address
  // space of those stacks (and the pages their fibers touched).
  MutexLock l(&free_lock);  // uncontended: for the analysis
  Fiber* f = all_fibers;
  while (f != nullptr) {
    Fiber* next = f->all_next;
    if (stack_may_be_referenced(f)) {
      stacks.keep_mapped(f->stack);
#if defined(__SANITIZE_ADDRESS__)
      // The stack lives as long as the process and may hold the only
      // pointers to what its fiber allocated (a deadlocked or abandoned
      // program's channels): LeakSanitizer must scan it like a thread's.
      __lsan_register_root_region(f->stack.lo, f->stack.size);
#endif
#if defined(__SANITIZE_THREAD__)
      if (f->tsan_fiber != nullptr) __tsan_destroy_fiber(f->tsan_fiber);
      f->tsan_fiber = nullptr;
#endif
      std::lock_guard<std::mutex> g(g_graveyard_mu);
      f->all_next = g_graveyard;
      g_graveyard = f;
      f = next;
      continue;
    }
    if (f->sp == nullptr && f->closure != nullptr && f->destroy != nullptr) {
      f->destroy(f->closure);
    }
    if (f->closure != nullptr && f->closure_on_heap) {
      ::operator delete(f->closure, std::align_val_t(f->closure_align));
    }
#if defined(__SANITIZE_THREAD__)
    if (f->tsan_fiber != nullptr) __tsan_destroy_fiber(f->tsan_fiber);
#endif
    delete f;
    f = next;
  }
  for (auto& p : ps) p->stack_cache.drain();
}

void count_preemption(P* p, bool async) {
  if (async) {
    p->preemptions_async.add();
  } else {
    p->preemptions_cooperative.add();
  }
}

void fill_stats(const Sched& s, Stats* out) {
  Stats st;
  st.procs = s.nprocs;
  st.threads = s.nthreads.load(std::memory_order_relaxed);
  std::uint64_t created = s.created_off_p.load(std::memory_order_relaxed);
  std::uint64_t exited = 0;
  for (const auto& p : s.ps) {
    created += p->fibers_created.get();
    exited += p->fibers_exited.get();
    st.context_switches += p->context_switches.get();
    st.steals += p->steals.get();
    st.timers_fired += p->timers_fired.get();
    st.preemptions_async += p->preemptions_async.get();
    st.preemptions_cooperative += p->preemptions_cooperative.get();
    st.io_handoffs += p->io_handoffs.get();
  }
  st.fibers_created = created;
  st.fibers_live = created >= exited ? created - exited : 0;
  auto get = [](const std::atomic<std::uint64_t>& c) {
    return c.load(std::memory_order_relaxed);
  };
  st.handoffs = get(s.handoffs);
  st.threads_woken = get(s.threads_woken);
  st.preempt_requests = get(s.preempt_requests);
  st.signals_sent = get(s.signals_sent);
  st.syscall_retakes = get(s.syscall_retakes);
  st.pinned_released = get(s.pinned_released);
  st.netpoll_readied = get(s.netpoll_readied);
  st.io_handoffs += get(s.io_handoffs_off_p);
  auto refused = [&](Refusal r) {
    return s.refused[r].load(std::memory_order_relaxed);
  };
  st.refused_no_preempt = refused(kRefusedNoPreempt);
  st.refused_os_lock = refused(kRefusedOsLock);
  st.refused_pc = refused(kRefusedPc);
  st.refused_stack = refused(kRefusedStack);
  st.refused_not_fiber = refused(kRefusedNotFiber);
  st.preempt_refused = st.refused_no_preempt + st.refused_os_lock +
                       st.refused_pc + st.refused_stack + st.refused_not_fiber;
  *out = st;
}

void run_main(const Options& options, void (*main_fn)(void*), void* arg) {
  if (current_m() != nullptr) {
    throw std::logic_error("goro::run: called from inside a goro fiber");
  }
  bool expected = false;
  if (!g_running.compare_exchange_strong(expected, true)) {
    throw std::logic_error(
        "goro::run: another runtime is running (goro::run called from two "
        "threads at once)");
  }
  struct Release {
    ~Release() { g_running.store(false); }
  } release;

  const Options opts = resolve_options(options);
  const DebugOptions debug = resolve_debug_options();
  install_overflow_handler();
  install_terminate_handler();
  struct RemoveTerminate {
    ~RemoveTerminate() { remove_terminate_handler(); }
  } remove_terminate;
  auto s = std::make_unique<Sched>(opts, opts.procs);
  s->debug = debug;
  s->start_ns = mono_now_ns();
  s->epoch = ++g_epochs;
  if (g_hooks.on_create != nullptr) g_hooks.on_create(s.get());
  // Fibers a previous runtime abandoned in I/O waits count no more.
  io_waiters_add(-io_waiters());
  s->next_fiber_id.store(g_next_fiber_id.load(std::memory_order_relaxed),
                         std::memory_order_relaxed);
  g_sched.store(s.get(), std::memory_order_release);

  struct MainClosure {
    void (*fn)(void*);
    void* arg;
    Sched* s;
  };
  SpawnOptions main_opts;
  main_opts.name = "main";
  // Programs put their whole main inside run: give it what a thread gets
  // (reserved, committed as used), not the per-fiber default.
  main_opts.stack_size = std::max(kMainStackSize, opts.stack_size);
  Fiber* f = fiber_new(&main_opts);
  // fiber_new, called off a P, holds the runtime for fiber_start; run_main
  // queues the main fiber itself.
  f->held_sched = nullptr;
  SchedUse::release();
  ::new (fiber_closure_storage(f, sizeof(MainClosure), alignof(MainClosure)))
      MainClosure{main_fn, arg, s.get()};
  f->invoke = [](void* p) {
    auto* c = static_cast<MainClosure*>(p);
    c->fn(c->arg);
    // Before the wake: Ms idling from here on are not a deadlock.
    c->s->main_returned.store(true, std::memory_order_release);
    c->s->main_done.wake();
  };
  f->destroy = [](void*) {};
  transition(f, FiberState::kFree, FiberState::kRunnable);
  s->created_off_p.fetch_add(1, std::memory_order_relaxed);
  trace_create(nullptr, f, 0);  // GORO_TRACE started in on_create
  global_put(s.get(), f);

  if (g_hooks.on_start != nullptr) g_hooks.on_start(s.get());
  // This thread waits for main below: goro's own, not a thread that could
  // wake fibers (deadlock detection, checkdead.cc).
  own_thread_register();
  struct Unregister {
    ~Unregister() { own_thread_unregister(); }
  } unregister;
  // Parks are dated by sysmon's coarse clock; until its first round (it
  // starts late, below) they read this, not the end of an earlier run.
  g_coarse_now_ns.store(mono_now_ns(), std::memory_order_relaxed);
  start_first_m(s.get());
  if (g_hooks.on_run != nullptr) g_hooks.on_run(s.get());
  // sysmon's thread is made only once the run outlives its start delay
  // (sysmon.cc, "Its start").
  if (!s->main_done.sleep(mono_now_ns() + sysmon_start_delay(s.get()))) {
    sysmon_start(s.get());
    s->main_done.sleep(0);
  }
  if (g_hooks.on_run_end != nullptr) g_hooks.on_run_end(s.get());
  bool deadlocked;
  {
    MutexLock l(&s->lock);
    deadlocked = s->deadlocked;
  }
  // sysmon outlives the Ms: a fiber spinning when main returns is preempted
  // (and its M then stops; stop_all_ms makes sysmon's thread for it if the
  // run ended before it was made), and startm may still read s->sysmon
  // until every M is joined.
  stop_all_ms(s.get());
  sysmon_stop(s.get());
  // No M runs now, so no timer fires: the pending ones are dropped (their
  // owners free what only a firing would have), and timers started from
  // here on, by plain threads, stay unarmed.
  drop_timers(s.get());
  if (g_hooks.on_stop != nullptr) g_hooks.on_stop(s.get());
  {
    // Hand the Ms abandoned inside blocking() their fibers (see M): from
    // here on each may free itself, and nothing here touches them.
    MutexLock l(&s->lock);
    for (M* m : s->abandoned_ms) {
      m->blocking_state.store(M::kAbandoned, std::memory_order_release);
    }
  }

  {
    // Under g_last_mu so that stats() never reads a Sched being destroyed.
    std::lock_guard<std::mutex> l(g_last_mu);
    fill_stats(*s, &g_last);
    // Everything is gone now (the main fiber may have been abandoned before
    // its exit was counted).
    g_last.fibers_live = 0;
    g_sched.store(nullptr, std::memory_order_seq_cst);
    g_next_fiber_id.store(s->next_fiber_id.load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
  }
  // Threads still inside go(), ready() or timer_start off a P finish with
  // the Sched before it is freed (SchedUse); new ones see no runtime. Each
  // holds it for a few short critical sections.
  while (g_sched_users.load(std::memory_order_acquire) != 0) {
    std::this_thread::yield();
  }
  std::string report = deadlocked ? std::move(s->deadlock_report) : "";
  const OnDeadlock on_deadlock = s->opts.on_deadlock;
  s.reset();
  if (deadlocked) {
    if (on_deadlock == OnDeadlock::kThrow) throw DeadlockError(report);
    // Like Go: the message and the dump, then exit status 2. stdio is
    // flushed (the program's own output is not lost) but no destructor or
    // atexit handler runs: fibers are abandoned mid-call.
    std::fflush(stdout);
    std::fputs(report.c_str(), stderr);
    std::fflush(stderr);
    std::_Exit(2);
  }
}

}  // namespace goro::runtime_internal

namespace goro {

using runtime_internal::Fiber;

void yield() { runtime_internal::yield_impl(false, false); }

void sleep_until(std::chrono::steady_clock::time_point deadline) {
  runtime_internal::sleep_until_impl(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          deadline.time_since_epoch())
          .count());
}

namespace this_fiber {

std::uint64_t id() {
  runtime_internal::MHold hold;
  Fiber* f = hold.m() != nullptr ? hold.m()->curg() : nullptr;
  return f != nullptr ? f->id : 0;
}

std::string_view name() {
  runtime_internal::MHold hold;
  Fiber* f = hold.m() != nullptr ? hold.m()->curg() : nullptr;
  return f != nullptr ? std::string_view(f->name) : std::string_view();
}

}  // namespace this_fiber

Stats stats() {
  // run_main clears g_sched under g_last_mu before destroying the Sched.
  std::lock_guard<std::mutex> l(runtime_internal::g_last_mu);
  if (runtime_internal::Sched* s =
          runtime_internal::g_sched.load(std::memory_order_acquire)) {
    Stats st;
    runtime_internal::fill_stats(*s, &st);
    return st;
  }
  return runtime_internal::g_last;
}

}  // namespace goro
