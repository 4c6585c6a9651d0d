// Copyright goro authors.
//
// The scheduler's data: P (processor), M (OS thread) and Sched (one runtime).
// The algorithm is described at the top of scheduler.cc; preempt/ reads these
// structures through the accessors at the end of this file.

#ifndef GORO_RUNTIME_INTERNAL_SCHEDULER_H_
#define GORO_RUNTIME_INTERNAL_SCHEDULER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/internal/fiber.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/mutex.h"
#include "runtime/internal/run_queue.h"
#include "runtime/internal/stack.h"
#include "runtime/internal/timer_heap.h"
#include "runtime/options.h"
#include "runtime/stats.h"

namespace goro::runtime_internal {

// A counter written by one thread and read by any: a relaxed load+store
// instead of a locked read-modify-write.
class OwnerCounter {
 public:
  void add(std::uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// P states. Transitions (all under Sched::lock_ except kRunning <-> kSyscall
// by the owning M, and kSyscall -> kIdle by sysmon's CAS):
//   kIdle -> kRunning     acquirep (an M takes it from the idle list)
//   kRunning -> kIdle     releasep (onto the idle list)
//   kRunning -> kSyscall  reserved for lazy syscall hand-off (preempt/)
enum class PStatus : std::uint32_t { kIdle, kRunning, kSyscall };
inline constexpr int kSpareOff = 0, kSpareOn = 1, kSpareRetire = 2;

struct alignas(64) P {
  int id = 0;
  std::atomic<PStatus> status{PStatus::kIdle};

  // A spare P (Sched::ps[nprocs..2*nprocs)) is lent by sysmon to another M
  // while the M holding P number (id - nprocs) is stuck in the kernel in a
  // system call that did not go through goro::blocking(): the stuck M keeps
  // its P (it will run its fiber on return), the spare runs everything else.
  // spare_state: kSpareOff -> kSpareOn by sysmon (then startm); while on,
  // the spare goes on the idle list like any P when its M runs out of work
  // (not counted in npidle). kSpareOn -> kSpareRetire by sysmon when the
  // stuck M is back; then -> kSpareOff by sysmon if the spare was idle on the
  // list, else by the M running it, at its next scheduling point.
  bool is_spare = false;
  std::atomic<int> spare_state{0};

  // Local run queue: owner pushes and pops; any P steals.
  RunQueue<Fiber> runq;
  // A just-readied or just-spawned fiber that runs next. Only the owner
  // stores a non-null value; thieves may CAS it to null (Go's rule).
  std::atomic<Fiber*> runnext{nullptr};

  TimerHeap timers;

  // --- Owner only (the M holding this P) ---
  M* m = nullptr;               // also written under Sched::lock_ when handed
  std::uint32_t schedtick = 0;  // fibers started from a queue; see sysmon
  std::uint32_t runnext_streak = 0;  // fibers run from runnext in a row
  std::uint32_t rand = 0;
  StackCache stack_cache;
  std::vector<Fiber*> free_fibers;        // kFree fibers
  std::uint64_t id_next = 0, id_end = 0;  // batch of fiber ids

  // sysmon's view of the running fiber: written by the owner at each
  // execute, read by sysmon.
  std::atomic<std::uint64_t> sched_seq{0};
  std::atomic<std::int64_t> sched_when{0};

  P* idle_next = nullptr;  // Sched idle list; guarded by Sched::lock_

  // Statistics (owner-written).
  OwnerCounter context_switches, steals, fibers_created, fibers_exited,
      timers_fired, preemptions_async, preemptions_cooperative;
};

// One OS thread that runs fibers. Owned by Sched; lives until the runtime
// ends.
struct M {
  int id = 0;
  pid_t tid = 0;
  std::thread thread;

  // The P this M holds, or null (idle, or inside blocking()). Written only by
  // this M, or by the thread that hands it a P before waking it.
  P* p = nullptr;
  P* next_p = nullptr;         // handed by startm; guarded by Sched::lock_
  bool next_spinning = false;  // likewise
  Fiber* curg = nullptr;  // the fiber running, null on the scheduler context
  void* g0_sp = nullptr;  // the scheduler context while a fiber runs

  // What the context that resumes after a switch must do for the one that
  // left (see finish_switch in scheduler.cc).
  enum class After : std::uint8_t {
    kNothing,
    kRequeue,
    kRequeueGlobal,
    kPin,
    kPark,
    kExit
  };
  After after = After::kNothing;
  Fiber* after_fiber = nullptr;
  bool (*after_commit)(void*) = nullptr;
  void* after_arg = nullptr;

  bool spinning = false;    // looking for work; counted in Sched::nmspinning_
  Note note;                // idle parking
  M* idle_next = nullptr;   // Sched idle list; guarded by Sched::lock_
  bool idle = false;        // on that list; guarded by Sched::lock_
  P* blocking_p = nullptr;  // the P given up by blocking(), to take back

  // The runtime-lock count (Go's m.locks) is the thread-local
  // goro_tls_locks, see locks.h.

  // Async-preempted fibers that must resume on this thread
  // (Options::preempt_migrate == false), FIFO via sched_next. Owner only.
  Fiber* pinned_head = nullptr;
  Fiber* pinned_tail = nullptr;
  std::uint32_t pin_tick = 0;

  // A SIGURG from sysmon is in flight: sysmon sets it before tgkill, the
  // handler clears it. At most one signal in flight per M (Go's
  // signalPending).
  std::atomic<bool> signal_pending{false};

  void* sigaltstack = nullptr;
  // This thread's libstdc++ exception state, swapped per fiber (EhGlobals).
  EhGlobals* eh_globals = nullptr;
#if defined(__SANITIZE_ADDRESS__)
  void* asan_g0_fake_stack = nullptr;
  void* asan_g0_bottom = nullptr;
  std::size_t asan_g0_size = 0;
#endif
#if defined(__SANITIZE_THREAD__)
  void* tsan_g0 = nullptr;
#endif
};

class Sched {
 public:
  Sched(const Options& opts, int procs);
  ~Sched();

  const Options opts;
  const int nprocs;
  // nprocs Ps, then nprocs spares (see P::is_spare).
  std::vector<std::unique_ptr<P>> ps;

  Mutex lock;
  // --- Guarded by lock ---
  std::deque<Fiber*> gq;  // the global run queue
  P* idle_p = nullptr;
  M* idle_m = nullptr;
  std::vector<std::unique_ptr<M>> ms;

  // Fiber objects, separate from `lock` so that spawning and exiting on
  // different Ps do not contend with the run queues.
  Mutex free_lock;
  // --- Guarded by free_lock ---
  Fiber* all_fibers = nullptr;      // every Fiber object (Fiber::all_next)
  std::vector<Fiber*> free_fibers;  // global free list
  // --- Atomics, with who writes them ---
  std::atomic<int> gq_size{0};        // under lock; read anywhere
  std::atomic<int> npidle{0};         // under lock; read anywhere
  std::atomic<int> nmspinning{0};     // by Ms entering/leaving spinning
  std::atomic<int> nthreads{0};       // under lock
  std::atomic<bool> stopping{false};  // once, by the main fiber's exit
  std::atomic<std::uint64_t> next_fiber_id{1};
  std::atomic<std::uint64_t> handoffs{0}, threads_woken{0};
  std::atomic<std::uint64_t> created_off_p{0};  // go() from threads w/o a P
  // Preemption counters (preempt/ writes them).
  std::atomic<std::uint64_t> preempt_requests{0}, signals_sent{0},
      syscall_retakes{0};
  std::atomic<std::uint64_t> refused[5] = {};  // by PreemptRefusal

  StackAllocator stacks;

  // Signalled when the main fiber has returned.
  Note main_done;
};

// The active runtime, or null. Set and cleared by run_main.
extern std::atomic<Sched*> g_sched;

// The current thread's M, or null on a thread that is not an M. Not inlined:
// a fiber can resume on another thread, and the compiler must not reuse a
// thread-local address computed before a switch.
M* current_m();

// acquirem returns the current M (or null) with its `locks` raised, so the
// caller cannot be preempted asynchronously until releasem (Go's acquirem).
// Runtime entry points that touch M or P state start with it. Both live in
// the goro_text section, where the SIGURG handler never switches, so there is
// no window between reading the M and raising the count.
M* acquirem();
// releasem drops the count; at zero it honours a pending preemption request
// of the current fiber (a cooperative preemption point).
void releasem(M* m);

// Bounds of the goro_text section (code the SIGURG handler must not
// interrupt with a switch).
bool pc_in_goro_text(std::uintptr_t pc);

// Hooks for the layers above runtime/ (wired by //:goro). Each may be null.
struct Hooks {
  // Called by run_main after the Ms started / before they stop.
  void (*on_start)(Sched* s) = nullptr;
  void (*on_stop)(Sched* s) = nullptr;
  // Called by ready() and go() when a P became busy while sysmon may be
  // asleep (all Ps were idle).
  void (*wake_sysmon)() = nullptr;
  // Called by each M on its own thread as it starts / exits.
  void (*on_thread_start)(M* m) = nullptr;
  void (*on_thread_exit)(M* m) = nullptr;
  // Non-blocking netpoll: returns how many fibers it readied.
  int (*netpoll)() = nullptr;
};
extern Hooks g_hooks;

// For preempt/: yield the current fiber because of a preemption request.
// `async` counts it as an asynchronous preemption.
void preempt_yield(bool async);

// For stats(): fill the runtime's counters into *out.
void fill_stats(const Sched& s, Stats* out);

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_SCHEDULER_H_
