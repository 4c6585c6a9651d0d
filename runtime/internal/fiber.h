// Copyright goro authors.
//
// Fiber: goro's G. One per go() call; objects are recycled through per-P and
// global free lists and freed only when the runtime ends (as Go keeps its Gs).
//
// State machine (Fiber::state). Every transition is listed here; any other is a
// runtime bug and aborts in checked builds (every change goes through
// transition() in scheduler_internal.h, except ready()'s, which always checks).
//
//   kFree      On a free list. Owned by the list's owner (a P, or Sched under
//              Sched::free_lock). No stack, no closure.
//   kRunnable  Has a closure and is on exactly one run queue: a P's runnext or
//              ring, the global queue, or an M's pinned list (async-preempted,
//              must resume on that thread) -- or is being moved between them
//              by whoever popped it. Not running; no M owns it. If it ran
//              before, its context is saved at `sp`.
//   kRunning   Owned by the M whose curg it is; executing, or switching out.
//   kWaiting   Parked: on no run queue. Its context is saved. Exactly one party
//              -- whoever the park commit published it to (a wait list, a
//              timer) -- may ready() it, moving it to kRunnable.
//   kDead      Its function returned; its stack is being recycled. Becomes
//              kFree at once.
//
//   kFree -> kRunnable            fiber_start (go)
//   kRunnable -> kRunning         execute (the M that popped it)
//   kRunning -> kRunnable         yield, preemption (onto a run queue, or the
//                                 M's pinned list), blocking() exit w/o a P
//   kRunning -> kWaiting          park, after the switch (finish_switch)
//   kWaiting -> kRunnable         ready (by the one waker the commit published
//                                 the fiber to)
//   kRunning -> kDead -> kFree    return from the fiber's function
//
// A parked fiber's state becomes kWaiting only after its context is saved and
// the code that resumes is running on another stack; the park commit then
// publishes it. So no waker can run a fiber that is still on its own stack.

#ifndef GORO_RUNTIME_INTERNAL_FIBER_H_
#define GORO_RUNTIME_INTERNAL_FIBER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/internal/park.h"
#include "runtime/internal/stack.h"

namespace goro::runtime_internal {

struct M;
struct P;
class Sched;

enum class FiberState : std::uint32_t {
  kFree,
  kRunnable,
  kRunning,
  kWaiting,
  kDead,
};

const char* fiber_state_name(FiberState s);

// libstdc++'s per-thread exception state (cxxabi.h's __cxa_eh_globals). Each
// fiber keeps its own copy, swapped in and out with the fiber, so a fiber that
// switches inside a catch block or during unwinding, and resumes on another
// thread, still sees its own exceptions (and std::uncaught_exceptions()).
struct EhGlobals {
  void* caught_exceptions = nullptr;
  unsigned int uncaught_exceptions = 0;
};

struct Fiber {
  // Saved stack pointer while not running (see SwitchFrame); null before the
  // first run. Written by the switch on the owning M, read by the next M after
  // it popped the fiber from a run queue (the queue's release/acquire orders
  // it).
  void* sp = nullptr;

  std::atomic<FiberState> state{FiberState::kFree};

  std::uint64_t id = 0;

  // Sched::epoch of the runtime that made it (set by go()). ready() ignores
  // a fiber of an ended runtime: sync objects that outlive run may still
  // hold its waiters (see run_main's graveyard).
  std::uint64_t epoch = 0;
  // Non-null while a go() called off a P holds that runtime with a SchedUse,
  // from fiber_new until fiber_start or fiber_discard.
  Sched* held_sched = nullptr;

  // Intrusive link: global run queue, free lists, wait lists of sync/.
  // Belongs to whoever owns the fiber in its current state (see above).
  Fiber* sched_next = nullptr;

  // Every Fiber object ever made, for teardown. Written once, under
  // Sched::free_lock.
  Fiber* all_next = nullptr;

  // The stack: reserved by go() (fiber_new), so that running out of address
  // space is an error of go() and never of a context switch; its pages are
  // committed as the fiber touches them. Exchanged for a warm one when the
  // fiber first runs (StackCache::swap_for_warm), before anything but the
  // scheduler can see it. Recycled when the fiber dies.
  // stack_size is the requested usable size.
  Stack stack;
  std::size_t stack_size = 0;

  // The closure go() was given. closure points into inline_closure when it
  // fits, else to heap memory the fiber owns.
  void (*invoke)(void*) = nullptr;
  void (*destroy)(void*) = nullptr;
  void* closure = nullptr;
  bool closure_on_heap = false;
  std::size_t closure_align = 0;  // of the heap closure: for operator delete
  static constexpr std::size_t kInlineClosure = 48;
  alignas(16) unsigned char inline_closure[kInlineClosure];

  // Set by sysmon (or anyone) to ask the fiber to yield at its next
  // cooperative point. Cleared by the fiber when it yields.
  std::atomic<bool> preempt_requested{false};

  // Async-preemption vetoes, both owned by the fiber and written only by the
  // thread running it (the SIGURG handler on that thread reads them):
  //   no_preempt: depth of goro::NoPreempt guards;
  //   os_locks:   OS-level locks (std::mutex, std::shared_mutex, ...) the
  //               fiber holds, counted by preempt/'s interposed pthread
  //               functions.
  int no_preempt = 0;
  int os_locks = 0;

  EhGlobals eh;

  // Why the fiber is parked (kNone unless kWaiting). Written by the fiber in
  // park() before its state becomes kWaiting, cleared by ready(); read by
  // dumps and schedtrace without synchronisation, hence relaxed atomic.
  std::atomic<WaitReason> wait_reason{WaitReason::kNone};
  // g_coarse_now_ns when the fiber parked or entered blocking() (0: not
  // known): for the minutes of a dump. Written by the fiber, read by dumps;
  // relaxed (an approximate figure).
  std::atomic<std::int64_t> wait_since{0};

  // Where go() was called (std::source_location of the caller) and the
  // spawning fiber's id (0: a plain thread), for "created by" in dumps.
  // Written by go() before the fiber is queued.
  const char* created_function = nullptr;
  const char* created_file = nullptr;
  std::uint32_t created_line = 0;
  std::uint64_t parent_id = 0;

  // A dump is reading this fiber's stack: an M about to run it waits in
  // enter_fiber until it is cleared (diag/dump.cc has the protocol).
  std::atomic<bool> dump_pin{false};

  std::string name;

  // The execution trace (trace.h): the TraceSession::seq of the trace that
  // has this fiber's name (written with its kCreate or first kStart there).
  // Written by whoever owns the fiber then (its creator, the M starting it).
  std::uint32_t trace_seq = 0;

#if defined(__SANITIZE_THREAD__)
  void* tsan_fiber = nullptr;
#endif
#if defined(__SANITIZE_ADDRESS__)
  void* asan_fake_stack = nullptr;
#endif
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_FIBER_H_
