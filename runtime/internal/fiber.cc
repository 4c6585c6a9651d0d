// Copyright goro authors.
//
// A fiber's life cycle (see the state machine in fiber.h): go() reserves a
// Fiber object, an id and a stack from the P's cache (fiber_new), stores the
// closure (inline or on the heap), and queues it (fiber_start); the first
// switch to it trades that (cold) stack for the warm one the P's last
// finished fiber left, if any, and builds its first frame there
// (init_first_frame); when its function returns, fiber_main switches away
// for good and the next context recycles the stack and the object
// (fiber_free).
//
// Fiber objects are never freed while the runtime runs (as Go keeps its Gs):
// they move between per-P free lists and a global one under Sched::free_lock,
// in batches, so that spawning costs one lock round trip per batch.
//
// Uncaught exceptions. fiber_main has no catch. An exception that no frame
// of the fiber catches finds no handler in the unwinder's search phase --
// the fiber's stack ends at goro_context_trampoline, whose CFI marks the
// bottom (return address undefined) -- so the C++ runtime calls
// std::terminate from __cxa_throw without unwinding anything: the frames
// that threw are still on the stack. The terminate handler installed while
// a runtime runs (fiber_terminate) prints goro's message and, through
// Hooks::fiber_backtrace (diag/), that fiber's frames, then aborts. A catch
// in fiber_main would unwind the stack to itself first and lose them. (A
// noexcept function on the way terminates the same way, with the stack
// unwound up to it, as in any C++ program.)

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "runtime/internal/api.h"
#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/run_queues.h"
#include "runtime/internal/sanitizers.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace goro::runtime_internal {
namespace {

// Refills an empty per-P free list: a batch from the global list, or new
// objects allocated outside the lock.
void refill_free_fibers(Sched* s, P* p) {
  constexpr std::size_t kBatch = kFreeFibersCap / 2;
  {
    MutexLock l(&s->free_lock);
    const std::size_t n = std::min(kBatch, s->free_fibers.size());
    p->free_fibers.insert(p->free_fibers.end(), s->free_fibers.end() - n,
                          s->free_fibers.end());
    s->free_fibers.resize(s->free_fibers.size() - n);
  }
  if (!p->free_fibers.empty()) return;
  Fiber* batch[kBatch];
  for (Fiber*& g : batch) g = new Fiber;
  MutexLock l(&s->free_lock);
  for (Fiber* g : batch) {
    g->all_next = s->all_fibers;
    s->all_fibers = g;
    p->free_fibers.push_back(g);
  }
}

// Takes a Fiber object from P's free list, or the global one off a P.
Fiber* take_free_fiber(Sched* s, P* p) {
  if (p != nullptr) {
    if (p->free_fibers.empty()) refill_free_fibers(s, p);
    Fiber* f = p->free_fibers.back();
    p->free_fibers.pop_back();
    return f;
  }
  MutexLock l(&s->free_lock);
  if (!s->free_fibers.empty()) {
    Fiber* f = s->free_fibers.back();
    s->free_fibers.pop_back();
    return f;
  }
  Fiber* f = new Fiber;
  f->all_next = s->all_fibers;
  s->all_fibers = f;
  return f;
}

// The terminate handler run_main replaced (see "Uncaught exceptions");
// called for a std::terminate that is not a fiber's uncaught exception.
std::atomic<std::terminate_handler> g_prev_terminate{nullptr};

[[noreturn]] void fiber_terminate() {
  // Not current_fiber(): inside goro::blocking() the fiber is still the
  // M's curg, and its exception is just as uncaught.
  M* m = current_m();
  const Fiber* f = m != nullptr ? m->curg() : nullptr;
  const std::exception_ptr ep = std::current_exception();
  if (f == nullptr || ep == nullptr) {
    // A plain thread's, or std::terminate() called directly: what would
    // have happened without goro.
    if (std::terminate_handler prev = g_prev_terminate.load()) prev();
    std::abort();
  }
  const char* what = "(not a std::exception)";
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    what = e.what();  // lives as long as ep
  } catch (...) {
  }
  std::fprintf(stderr, "goro: uncaught exception in fiber %llu: %s\n",
               static_cast<unsigned long long>(f->id), what);
  std::fflush(stderr);
  if (g_hooks.fiber_backtrace != nullptr) {
    try {
      const std::string bt = g_hooks.fiber_backtrace();
      std::fprintf(stderr, "\n%s", bt.c_str());
    } catch (...) {
      // Out of memory, or no thread to be had: the message stands alone.
    }
  }
  std::fflush(stderr);
  std::abort();
}

[[noreturn]] void fiber_main(Fiber* f) {
  release_after_switch(finish_switch());  // the count the switcher held
  // No catch: see "Uncaught exceptions" at the top.
  f->invoke(f->closure);
  f->destroy(f->closure);
  if (f->closure_on_heap) {
    ::operator delete(f->closure, std::align_val_t(f->closure_align));
  }
  f->closure = nullptr;
  f->invoke = nullptr;
  f->destroy = nullptr;
  M* m = acquirem();
  trace_stop(m, f, TraceStop::kExit);
  m->after = M::After::kExit;
  m->after_fiber = f;
  leave_fiber(m, f, /*dying=*/true);
  fatal("dead fiber %llu resumed", static_cast<unsigned long long>(f->id));
}

}  // namespace

void install_terminate_handler() {
  const std::terminate_handler prev = std::set_terminate(fiber_terminate);
  if (prev != fiber_terminate) g_prev_terminate.store(prev);
}

void remove_terminate_handler() {
  // Only if nobody replaced it meanwhile (the program's own stays).
  if (std::get_terminate() == fiber_terminate) {
    std::set_terminate(g_prev_terminate.load());
  }
}

Fiber* fiber_new(const SpawnOptions* o) {
  MHold hold;
  P* p = hold.m() != nullptr ? hold.m()->p : nullptr;
  // On a P the runtime cannot end under us (run_main joins every M before it
  // frees anything). Off a P -- a plain thread, or inside blocking() -- hold
  // it until fiber_start or fiber_discard (SchedUse).
  Sched* s = p != nullptr ? sched() : SchedUse::acquire();
  struct Release {
    bool armed;
    ~Release() {
      if (armed) SchedUse::release();
    }
  } release{p == nullptr};
  if (s == nullptr) {
    throw std::logic_error(
        "goro::go: no runtime is running (call it inside goro::run)");
  }
  std::size_t ss = s->opts.stack_size;
  if (o->stack_size != 0) {
    ss = validate_stack_size(o->stack_size, "SpawnOptions::stack_size");
  }
  Fiber* f = take_free_fiber(s, p);
  GORO_DCHECK(f->state.load(std::memory_order_relaxed) == FiberState::kFree);
  f->sched_next = nullptr;
  if (p != nullptr) {
    if (p->id_next == p->id_end) {
      p->id_next =
          s->next_fiber_id.fetch_add(kFiberIdBatch, std::memory_order_relaxed);
      p->id_end = p->id_next + kFiberIdBatch;
    }
    f->id = p->id_next++;
  } else {
    f->id = s->next_fiber_id.fetch_add(1, std::memory_order_relaxed);
  }
  f->stack_size = ss;
  // The stack is reserved here, on the caller's side, so that running out
  // of address space (or of mappings) is a std::bad_alloc from go() with
  // nothing queued -- not an exception inside a context switch. It costs
  // address space only: pages are committed as the fiber touches them.
  try {
    f->stack = p != nullptr
                   ? p->stack_cache.reserve(s->stacks, ss, s->opts.stack_size)
                   : s->stacks.allocate(ss);
  } catch (...) {
    if (p != nullptr) {
      p->free_fibers.push_back(f);
    } else {
      MutexLock l(&s->free_lock);
      s->free_fibers.push_back(f);
    }
    throw;
  }
  f->name = o->name;
  f->epoch = s->epoch;
  f->held_sched = p == nullptr ? s : nullptr;
  release.armed = false;  // passed on to fiber_start / fiber_discard
  f->sp = nullptr;
  f->closure = nullptr;
  f->closure_on_heap = false;
  f->preempt_requested.store(false, std::memory_order_relaxed);
  f->no_preempt = 0;
  f->os_locks = 0;
  f->eh = EhGlobals{};
  f->wait_since.store(0, std::memory_order_relaxed);
  f->created_function = f->created_file = nullptr;
  f->created_line = 0;
  f->parent_id = 0;
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
  Sched* s = f->held_sched != nullptr ? f->held_sched : sched();
  s->stacks.release(f->stack);
  f->stack = Stack{};
  {
    MutexLock l(&s->free_lock);
    s->free_fibers.push_back(f);
  }
  if (f->held_sched != nullptr) {
    f->held_sched = nullptr;
    SchedUse::release();
  }
}

void fiber_start(Fiber* f, void (*invoke)(void*), void (*destroy)(void*),
                 const char* created_function, const char* created_file,
                 std::uint32_t created_line) {
  f->invoke = invoke;
  f->destroy = destroy;
  f->created_function = created_function;
  f->created_file = created_file;
  f->created_line = created_line;

  Sched* held = f->held_sched;
  f->held_sched = nullptr;
  transition(f, FiberState::kFree, FiberState::kRunnable);
  if (held != nullptr) {
    // Off a P (the same as in fiber_new): the global queue. If the runtime
    // is already stopping the fiber never runs, and ~Sched destroys its
    // closure, as for any fiber that never started.
    f->parent_id = 0;
    held->created_off_p.fetch_add(1, std::memory_order_relaxed);
    trace_create(nullptr, f, 0);  // off-P
    global_put(held, f);
    wakep(held);
    SchedUse::release();
    return;
  }
  Sched* s = sched();
  MHold hold;  // its release is a cooperative preemption point
  M* m = hold.m();
  Fiber* parent = m->curg();
  f->parent_id = parent != nullptr ? parent->id : 0;
  m->p->fibers_created.add();
  trace_create(m, f, f->parent_id);  // before a thief can start it
  runq_put(m->p, f, true);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see runq_put
  wakep(s);
}

std::uint64_t fiber_id(const Fiber* f) { return f->id; }

void init_first_frame(P* p, Fiber* f) {
  Sched* s = sched();
  // The stack fiber_new reserved is cold; run on the warm one the P's last
  // finished fiber left, if any (StackCache explains why).
  GORO_DCHECK(!f->stack.empty());
  p->stack_cache.swap_for_warm(s->stacks, &f->stack, s->opts.stack_size);
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

void fiber_free(M* m, Fiber* f) {
  P* p = m->p;
  Sched* s = sched();
  transition(f, FiberState::kRunning, FiberState::kDead);
#if defined(__SANITIZE_THREAD__)
  __tsan_destroy_fiber(f->tsan_fiber);
  f->tsan_fiber = nullptr;
#endif
  p->stack_cache.put(s->stacks, f->stack, s->opts.stack_size);
  f->stack = Stack{};
  f->sp = nullptr;
  f->name.clear();
  transition(f, FiberState::kDead, FiberState::kFree);
  p->fibers_exited.add();
  p->free_fibers.push_back(f);
  if (p->free_fibers.size() > kFreeFibersCap) {
    // Share with other Ps: move half to the global free list, as an array of
    // pointers -- no Fiber object is touched under the lock.
    const std::size_t half = kFreeFibersCap / 2;
    MutexLock l(&s->free_lock);
    s->free_fibers.insert(s->free_fibers.end(), p->free_fibers.end() - half,
                          p->free_fibers.end());
    p->free_fibers.resize(p->free_fibers.size() - half);
  }
}

}  // namespace goro::runtime_internal
