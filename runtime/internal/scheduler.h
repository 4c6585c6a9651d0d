// Copyright goro authors.
//
// The scheduler's data: P (processor), M (OS thread) and Sched (one runtime).
//
// Reading order of runtime/internal/ (each file opens with what it owns):
//   scheduler.h          this file: P, M, Sched and who may touch each field
//   fiber.h              the fiber (G) and its state machine
//   scheduler_internal.h the functions the runtime's files share
//   run_queues.h         runnext, the local ring, the global queue, pinned
//                        fibers, and pick_next (inline: the hot path)
//   m.cc                 the M: thread-locals, acquirem/releasem, goro_text,
//                        the M's main loop, fatal()
//   switch.cc            the context switch and finish_switch (M::after)
//   fiber.cc             fiber life cycle: spawn, start, exit, free lists
//   idle.cc              idle Ps and Ms: startm, wakep, handoffp, stopm, the
//                        spinning protocol, spare Ps (essay at the top)
//   find_work.cc         find_runnable: timers, queues, netpoll, stealing
//   park.cc              the park/ready API (park.h), yield, blocking(),
//                        sleep, timers
//   sysmon.cc, retake.h  the monitor thread and its per-P decisions
//   runtime.cc           run(): start, stop and tear down one runtime; stats
//   trace.*              execution-trace events into per-P rings (the
//                        consumer and the JSON are diag/'s)
//   stack.*, signals.cc  stacks, guard pages and overflow reports
//   context_x86_64.*     the register switch
// and the small pieces the files above build on: locks.h, mutex.h, futex.h
// (the runtime's own locks), timer_heap.*, run_queue.h (the lock-free ring),
// dcheck.h, raw_msg.h (async-signal-safe messages), sanitizers.h; api.h
// (what the public templates call) and options.cc (GORO_* variables).
// preempt/ implements the signal half of preemption behind Hooks (below).

#ifndef GORO_RUNTIME_INTERNAL_SCHEDULER_H_
#define GORO_RUNTIME_INTERNAL_SCHEDULER_H_

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
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

// P states. Both transitions happen under Sched::lock:
//   kIdle -> kRunning     acquirep, startm (an M takes it off the idle list)
//   kRunning -> kIdle     pidle_put_locked (onto the idle list)
// Read without the lock by sysmon (may be stale by one transition).
enum class PStatus : std::uint32_t { kIdle, kRunning };

// A spare P's life (P::spare_state), see idle.cc "Spare Ps":
//   kOff -> kOn        sysmon (lend_spare), then startm
//   kOn -> kRetire     sysmon, when the stuck M runs again
//   kRetire -> kOff    sysmon if the spare idled on the list
//                      (retire_idle_spare), else the M running it at its next
//                      scheduling point (retire_spare)
enum class SpareState : int { kOff, kOn, kRetire };

// A P's ring of runnable fibers holds this many (Go's holds 256). In-process
// loopback connections keep one fiber per connection runnable on the P of
// its last writer (net/'s hand-off), so the ring is sized for a thousand
// busy connections on two Ps without spilling into the global queue, whose
// lock and fair shares made 1,000 connections run at half the rate of 64
// (bench/README.md, "Echo"). 8 KiB per P.
inline constexpr std::uint32_t kLocalRunQueueSize = 1024;

struct alignas(64) P {
  int id = 0;
  std::atomic<PStatus> status{PStatus::kIdle};

  // A spare P (Sched::ps[nprocs..2*nprocs)) is lent by sysmon to another M
  // while the M holding P number (id - nprocs) is stuck in the kernel in a
  // system call that did not go through goro::blocking(): the stuck M keeps
  // its P (it will run its fiber on return), the spare runs everything else.
  // While on, the spare goes on the idle list like any P when its M runs out
  // of work (not counted in npidle).
  bool is_spare = false;
  std::atomic<SpareState> spare_state{SpareState::kOff};

  // A just-readied or just-spawned fiber that runs next. Only the owner
  // stores a non-null value; thieves may CAS it to null (Go's rule).
  std::atomic<Fiber*> runnext{nullptr};

  TimerHeap timers;

  // The M holding this P, or null. Written by that M (acquire/release of the
  // P) or under Sched::lock when the P is handed over; read by sysmon.
  // Release/acquire (plain moves on x86): sysmon follows the pointer to an
  // M another thread constructed.
  M* m() const { return m_.load(std::memory_order_acquire); }
  void set_m(M* m) { m_.store(m, std::memory_order_release); }

  // --- Owner only (the M holding this P) ---
  std::uint32_t schedtick = 0;       // fresh slices started; see pick_next
  std::uint32_t runnext_streak = 0;  // fibers run from runnext in a row
  std::uint32_t io_chain = 0;  // net/ hand-offs into runnext since the ring
                               // last had a turn (ready_handoff)
  std::uint32_t rand = 0;
  StackCache stack_cache;
  std::vector<Fiber*> free_fibers;        // kFree fibers
  std::uint64_t id_next = 0, id_end = 0;  // batch of fiber ids

  // sysmon's view of the running fiber: counts fresh time slices, written by
  // the owner at each one (new_slice), read by sysmon.
  std::atomic<std::uint64_t> sched_seq{0};

  P* idle_next = nullptr;  // Sched's idle list; guarded by Sched::lock

  // Set by the M holding this P while it writes an execution-trace event,
  // so that stopping a trace can wait for writers to leave its rings
  // (trace.h, T2).
  std::atomic<bool> trace_busy{false};

  // Statistics (owner-written).
  OwnerCounter context_switches, steals, fibers_created, fibers_exited,
      timers_fired, preemptions_async, preemptions_cooperative, io_handoffs;

  // The large arrays last, uninitialised (Sched makes each P with
  // make_unique_for_overwrite): a page of them is faulted in only once a
  // fiber goes there, so a short run, or a spare P never lent, pays for
  // the fields above only.
  // Local run queue: owner pushes and pops; any P steals.
  RunQueue<Fiber, kLocalRunQueueSize> runq;
  // runq_overflow's batch (owner only), off the fiber stacks it runs on.
  Fiber* overflow_batch[kLocalRunQueueSize / 2 + 1];

 private:
  std::atomic<M*> m_{nullptr};
};

// One OS thread that runs fibers. Owned by Sched; lives until the runtime
// ends.
struct M {
  int id = 0;
  // The thread's kernel id: written by the thread as it starts, read by
  // sysmon (0 until then).
  std::atomic<pid_t> tid{0};
  // Made by startm with pthread_create, not std::thread: std::thread frees
  // its start-up state on the new thread, and a thread's first malloc or
  // free makes glibc set up a malloc arena for it (a 64 MiB reservation,
  // four system calls, page faults) that an M whose fibers never allocate
  // does not need. Joined by stop_all_ms, or detached by abandon_m.
  pthread_t thread{};
  bool joinable = false;   // written by startm under Sched::lock
  Sched* sched = nullptr;  // for the thread's start routine
  // Set by the thread as m_main returns normally (not for an M abandoned in
  // blocking()); read by stop_all_ms, which waits for it before deciding
  // whether sysmon is needed to stop the Ms.
  std::atomic<bool> exited{false};

  // The P this M holds, or null (idle, or inside blocking()). Written only by
  // this M, or by the thread that hands it a P before waking it.
  P* p = nullptr;
  P* next_p = nullptr;         // handed by startm; guarded by Sched::lock
  bool next_spinning = false;  // likewise

  // The fiber running, null on the scheduler context. Written only by this
  // M; read by sysmon and the signal handlers.
  // Release/acquire (plain moves on x86): sysmon follows the pointer to a
  // Fiber another thread set up.
  Fiber* curg() const { return curg_.load(std::memory_order_acquire); }
  void set_curg(Fiber* f) { curg_.store(f, std::memory_order_release); }

  void* g0_sp = nullptr;  // the scheduler context while a fiber runs

  // What the context that resumes after a switch must do for the one that
  // left (see finish_switch in switch.cc).
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

  bool spinning = false;    // looking for work; counted in Sched::nmspinning
  Note note;                // idle parking
  M* idle_next = nullptr;   // Sched's idle list; guarded by Sched::lock
  bool idle = false;        // on that list; guarded by Sched::lock
  P* blocking_p = nullptr;  // the P given up by blocking(), to take back

  // goro::blocking() against the end of the runtime (park.cc, idle.cc
  // stop_all_ms). The M sets kInCall before calling fn and CASes it back to
  // kNone after; stop_all_ms CASes kInCall -> kAbandoning instead of joining
  // a thread stuck in fn and hands it the fiber (abandoned_fiber: its
  // object, closure and stack, which fn may still use); run_main sets
  // kAbandoned once sysmon, which may still read this M, is stopped. An
  // abandoned M never touches the Sched again: when fn returns it goes back
  // to its scheduler context, waits for kAbandoned, frees the fiber and
  // itself, and its thread exits.
  //
  // kInRawCall: the same for a fiber blocked in a raw system call (not in
  // blocking()) when main returns. stop_all_ms signals the M; the handler's
  // walk hijacks the return into the fiber's own code (preempt_walk.h) and
  // offers the M (kInRawCall, blocking_fiber set), which stop_all_ms
  // abandons like one in blocking(). When the call returns, the hijack stub
  // waits for that, and leaves for the scheduler context without running
  // any more of the fiber's code, as Go's abandoned goroutines never run
  // again. Only while the runtime is stopping.
  enum BlockingState : int {
    kNone,
    kInCall,
    kAbandoning,
    kAbandoned,
    kInRawCall
  };
  std::atomic<int> blocking_state{kNone};
  Fiber* blocking_fiber = nullptr;  // the fiber inside blocking(), if any
  Fiber* abandoned_fiber = nullptr;

  // The runtime-lock count (Go's m.locks) is the thread-local
  // goro_tls_locks, see locks.h.

  // Async-preempted fibers that must resume on this thread
  // (Options::preempt_migrate == false), FIFO via sched_next. The owner
  // pushes and pops; sysmon takes them all when the thread is stuck in the
  // kernel (release_pinned), so that they cannot wait on it forever.
  Mutex pin_lock;
  Fiber* pinned_head ABSL_GUARDED_BY(pin_lock) = nullptr;
  Fiber* pinned_tail ABSL_GUARDED_BY(pin_lock) = nullptr;
  // pinned_head != null; written under pin_lock, read racily by the owner
  // to skip the lock when there is nothing pinned (the common case).
  std::atomic<bool> has_pinned{false};
  std::uint32_t pin_tick = 0;  // owner only

  // A SIGURG from sysmon is in flight: preempt/ sets it before tgkill, the
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

 private:
  std::atomic<Fiber*> curg_{nullptr};
};

// Why the SIGURG handler declined to switch; indexes Sched::refused.
enum Refusal : int {
  kRefusedNoPreempt = 0,  // NoPreempt, or a runtime lock (goro_tls_locks)
  kRefusedOsLock = 1,     // the fiber holds an OS-level lock
  kRefusedPc = 2,         // interrupted in, or called from, foreign code
  kRefusedStack = 3,      // too little stack left for the save area
  kRefusedNotFiber = 4,   // not a user fiber on a regular P
  kNumRefusals = 5,
};

struct Sysmon;

// Diagnostics settings from the environment (options.cc,
// resolve_debug_options): GORO_DEBUG, GORO_SIGQUIT and GORO_TRACE.
struct DebugOptions {
  int schedtrace_ms = 0;     // GORO_DEBUG=schedtrace=MS; 0: off
  bool scheddetail = false;  // GORO_DEBUG=...,scheddetail=1
  bool sigquit = true;       // GORO_SIGQUIT (default 1)
  std::string trace_path;    // GORO_TRACE=PATH; empty: no trace
};

class Sched {
 public:
  Sched(const Options& opts, int procs);
  ~Sched();

  const Options opts;
  DebugOptions debug;         // set by run_main before any thread starts
  std::int64_t start_ns = 0;  // CLOCK_MONOTONIC at run's start; likewise
  const int nprocs;
  // nprocs Ps, then nprocs spares (see P::is_spare).
  std::vector<std::unique_ptr<P>> ps;

  // Guards the run queue, the idle lists and the Ms. Never held across a
  // context switch, never held with another runtime lock.
  Mutex lock;
  std::deque<Fiber*> gq ABSL_GUARDED_BY(lock);  // the global run queue
  P* idle_p ABSL_GUARDED_BY(lock) = nullptr;
  M* idle_m ABSL_GUARDED_BY(lock) = nullptr;
  std::vector<std::unique_ptr<M>> ms ABSL_GUARDED_BY(lock);
  // Ms that stop_all_ms abandoned inside blocking() (no longer in ms).
  std::vector<M*> abandoned_ms ABSL_GUARDED_BY(lock);

  // Fiber objects, separate from `lock` so that spawning and exiting on
  // different Ps do not contend with the run queues.
  Mutex free_lock;
  // Every Fiber object (Fiber::all_next).
  Fiber* all_fibers ABSL_GUARDED_BY(free_lock) = nullptr;
  std::vector<Fiber*> free_fibers ABSL_GUARDED_BY(free_lock);

  // --- Atomics, with who writes them ---
  std::atomic<int> gq_size{0};  // under lock; read anywhere
  std::atomic<int> npidle{0};   // under lock; read anywhere
  // Lent spares on the idle list (not in npidle); under lock, read by
  // wakep, so that work queued while only a spare is idle wakes an M.
  std::atomic<int> nspare_idle{0};
  std::atomic<int> nmspinning{0};     // by Ms entering/leaving spinning
  std::atomic<int> nthreads{0};       // under lock
  std::atomic<bool> stopping{false};  // once, by the main fiber's exit
  // Ms on the idle list (stopm): written under lock, read anywhere (deadlock
  // detection compares it with ms.size() under lock; schedtrace reads it).
  std::atomic<int> nmidle{0};
  // Bumped under lock whenever an M leaves the idle list or a new M is
  // made: deadlock detection, which drops the lock to look at the process's
  // threads, checks that no M ran in between (checkdead.cc).
  std::uint64_t idle_gen ABSL_GUARDED_BY(lock) = 0;
  // The main fiber's function returned (set before main_done is woken):
  // the Ms idling meanwhile are not a deadlock.
  std::atomic<bool> main_returned{false};
  // Set once, under lock, by the M that reports a deadlock; then
  // deadlock_report is written by that M and read by run_main after
  // main_done (whose wake/sleep order it).
  bool deadlocked ABSL_GUARDED_BY(lock) = false;
  std::string deadlock_report;
  std::atomic<std::uint64_t> next_fiber_id{1};
  std::atomic<std::uint64_t> handoffs{0}, threads_woken{0};
  std::atomic<std::uint64_t> created_off_p{0};  // go() from threads w/o a P
  // Preemption counters (sysmon and preempt/ write them).
  std::atomic<std::uint64_t> preempt_requests{0}, signals_sent{0},
      syscall_retakes{0}, pinned_released{0};
  std::atomic<std::uint64_t> refused[kNumRefusals] = {};  // by Refusal
  // Network counters: fibers readied by the netpoller (netpoll_inject), and
  // by ready_behind from threads without a P (the rest are per P).
  std::atomic<std::uint64_t> netpoll_readied{0}, io_handoffs_off_p{0};

  StackAllocator stacks;

  // This runtime's number in the process (1, 2, ...), copied into each of
  // its fibers (Fiber::epoch): a fiber of an ended runtime is never readied
  // into a later one.
  std::uint64_t epoch = 0;

  // The monitor thread (sysmon.cc); set by run_main while the Ms run.
  Sysmon* sysmon = nullptr;
  // Whether sysmon's thread exists (it is made late: sysmon.cc, "Its
  // start"): set by sysmon_start, cleared by sysmon_stop; read by
  // schedtrace's thread count.
  std::atomic<bool> sysmon_made{false};
  // sysmon sleeps until new work wakes it (sysmon_wake), not only until a
  // deadline: every P idle, or every running fiber alone on its P with
  // nothing waiting. Stored by sysmon (seq_cst, before it re-checks the
  // queues), cleared by whoever wakes it; read by wakep after its seq_cst
  // fence (the submitter's half of idle.cc's protocol), so no queued work
  // can miss it. Read-mostly: off the lines the hot counters dirty.
  alignas(64) std::atomic<bool> sysmon_sleeping{false};
  // sysmon sleeps on it; sysmon_wake and sysmon_stop wake it. In the Sched,
  // not the Sysmon: a plain thread inside ready() or go() (SchedUse) may
  // still wake it after sysmon_stop has freed the Sysmon.
  Note sysmon_note;

  // Signalled when the main fiber has returned. (Aligned: sysmon_sleeping
  // keeps its line to itself.)
  alignas(64) Note main_done;

  // --- The netpoller (find_work.cc "The netpoller") ---
  // CLOCK_MONOTONIC time of the last blocking poll's end or of sysmon's
  // last poll; 0 while an M is blocked in netpoll (Go's sched.lastpoll).
  // The M that blocks CASes it non-zero -> 0 (so at most one blocks) and
  // stores the time when it returns; sysmon CASes old -> now when it polls.
  // seq_cst: see "The netpoller" for the store-load pairs it is part of.
  std::atomic<std::int64_t> last_poll{1};
  // The deadline the blocked poller sleeps until (0: none), written by it
  // after it took last_poll and before it blocks; read by whoever adds an
  // earlier timer, to decide whether to break the poll.
  std::atomic<std::int64_t> poll_until{0};
  // Taken (exchange true) by the one M doing a non-blocking poll in
  // find_runnable, so that Ms do not pile into epoll_wait together.
  std::atomic<bool> poll_busy{false};
  // Ms in netpoll_spin (polling before they give up their P). While one
  // is, no M blocks in epoll: the kernel would wake it for every event the
  // spinner harvests anyway. Incremented/decremented by the spinner.
  std::atomic<int> npoll_spinning{0};
  // Set by an idle M that sleeps with no deadline although no M blocks in
  // netpoll, because a poll spinner will (find_work.cc, "Who owns the
  // timers"); cleared by whoever takes the timers over: the next M to block
  // in netpoll, or a spinner that takes work instead, which then wakes an
  // idle M to block in its place. Set under Sched::lock as that M goes on
  // the idle list; seq_cst: a Dekker pair with the spinner's decrement of
  // npoll_spinning.
  std::atomic<bool> poll_owed{false};
  // How long the next poll spin may last, ns (find_work.cc, netpoll_spin):
  // doubled (from 0: set to a minimum) by a spin that found an event or a
  // blocking poll that an event ended within what a full spin lasts;
  // halved by a blocking poll that lasted 4 full spins. Relaxed: a hint.
  std::atomic<std::int64_t> poll_spin_ns{50'000};
};

// A coarse CLOCK_MONOTONIC in ns, updated by sysmon at each of its rounds
// (at least once a second while it sleeps idle), 0 before the first. Park
// and blocking() stamp Fiber::wait_since with it so that dumps can say for
// how many minutes a fiber has waited without a clock read per park.
// Relaxed: an approximate time.
extern std::atomic<std::int64_t> g_coarse_now_ns;

// Dumps in progress that pin fibers (Fiber::dump_pin), for the one
// predictable branch in enter_fiber; see diag/dump.cc.
extern std::atomic<int> g_dump_pins;

// goro's own threads (Ms, sysmon, diagnostics threads, the thread inside
// run, and threads that called this_thread_never_wakes_fibers): deadlock
// detection treats every other thread as one that may still wake a fiber.
// register adds the calling thread; unregister removes it. Any thread.
void own_thread_register();
void own_thread_unregister();
// Registers the calling thread until it exits (a thread_local's destructor
// unregisters it).
void own_thread_register_for_life();
// True if the process has a thread that is not registered as goro's own.
// Reads /proc/self/task; allocates. Not async-signal-safe.
bool foreign_thread_alive();

// The active runtime, or null. Set and cleared by run_main.
extern std::atomic<Sched*> g_sched;

// Threads that are not running a fiber on a P (plain threads, and M threads
// inside goro::blocking()) may call go(), ready() (a channel operation) or
// start a timer at any time, also while run ends. They hold the Sched with a
// SchedUse: run_main clears g_sched, then waits until g_sched_users is zero
// before it frees anything. Both sides are seq_cst (Dekker): either the user
// loads null, or run_main sees its count.
extern std::atomic<int> g_sched_users;

class SchedUse {
 public:
  SchedUse() : s_(acquire()) {}
  ~SchedUse() { release(); }
  SchedUse(const SchedUse&) = delete;
  SchedUse& operator=(const SchedUse&) = delete;
  // The running runtime, or null once run has (nearly) returned.
  Sched* get() const { return s_; }

  // The same as a pair of calls, for a hold that spans go()'s two halves.
  static Sched* acquire() {
    g_sched_users.fetch_add(1, std::memory_order_seq_cst);
    return g_sched.load(std::memory_order_seq_cst);
  }
  static void release() {
    g_sched_users.fetch_sub(1, std::memory_order_release);
  }

 private:
  Sched* s_;
};

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

// MHold is acquirem/releasem as a scope: an exception thrown inside cannot
// leave the thread unpreemptible.
class MHold {
 public:
  MHold() : m_(acquirem()) {}
  ~MHold() { releasem(m_); }
  MHold(const MHold&) = delete;
  MHold& operator=(const MHold&) = delete;
  M* m() const { return m_; }

 private:
  M* m_;
};

// Bounds of the goro_text section (code the SIGURG handler must not
// interrupt with a switch).
bool pc_in_goro_text(std::uintptr_t pc);

// Hooks for the layers above runtime/ (wired by //:goro). Each may be null.
struct Hooks {
  // Called by run_main before the first M starts, on the thread calling run
  // (install process-wide handlers).
  void (*on_start)(Sched* s) = nullptr;
  // Called by sysmon for an M whose fiber overran its slice, after it set
  // the fiber's preempt_requested flag, when the M's thread is on a CPU and
  // holds a regular P: interrupt the thread so the fiber switches at an
  // async-safe point. Returns true if a signal was sent. Null when
  // asynchronous preemption is unavailable (ThreadSanitizer): fibers are
  // then preempted only at cooperative points.
  bool (*preempt_m)(M* m) = nullptr;
  // The netpoller (net/, see find_work.cc "The netpoller"). netpoll polls
  // for ready I/O: until_ns == 0 returns at once, < 0 blocks until
  // netpoll_break, otherwise blocks until that CLOCK_MONOTONIC time at most
  // (nanosecond precision). It stores up to `cap` fibers whose I/O wait it
  // ended into out[] -- still kWaiting: the caller makes them runnable
  // (netpoll_inject) -- and returns how many. netpoll_break wakes a blocked
  // netpoll (coalesced: many breaks, one wake-up); any thread, any time.
  // netpoll_inited says whether this runtime's poller exists (a socket was
  // opened): until then nobody polls. on_stop runs on run's thread once
  // every M has stopped (net/ closes the runtime's epoll instance).
  int (*netpoll)(std::int64_t until_ns, Fiber** out, int cap) = nullptr;
  void (*netpoll_break)() = nullptr;
  bool (*netpoll_inited)() = nullptr;
  // For diag/: the dump of every fiber, as goro::dump_fibers prints it.
  // Deadlock reports include it; null: the report says it is unavailable.
  std::string (*dump_fibers)() = nullptr;
  // For diag/: on_create is called by run_main once the Sched exists and
  // before anything runs on it (no M, no sysmon, no fiber; not yet in
  // g_sched): GORO_TRACE starts its trace there. It may throw
  // std::invalid_argument (GORO_TRACE's file cannot be written), which run
  // then throws, with nothing started.
  void (*on_create)(Sched* s) = nullptr;
  // For diag/: on_run is called by run_main after on_start with the
  // runtime running; on_run_end once main has returned, before the Ms stop
  // (the SIGQUIT handler and the schedtrace thread start and stop there).
  void (*on_run)(Sched* s) = nullptr;
  void (*on_run_end)(Sched* s) = nullptr;
  // For diag/: called by sysmon at the top of every round, on its thread
  // (it may allocate, and need not return: the SIGQUIT dump ends the
  // process there). A signal handler that wants it called soon wakes
  // sysmon with s->sysmon_note.wake().
  void (*on_sysmon_round)(Sched* s) = nullptr;
  // For preempt/: called by sysmon on its thread once, before its first
  // round -- so before it can call preempt_m -- to load what the signal half
  // needs and a runtime's start should not pay for (libunwind:
  // preempt/internal/unwinder.h). It may block and allocate.
  void (*on_sysmon_start)(Sched* s) = nullptr;
  void (*on_stop)(Sched* s) = nullptr;
  // For diag/: the calling fiber's stack as one block of the dump's format
  // (the throw and terminate machinery left out), for the uncaught-
  // exception message (fiber.cc). Called from std::terminate on the thread
  // of the fiber whose exception found no handler, its frames intact;
  // allocates and starts a thread. Null: the message has no backtrace.
  std::string (*fiber_backtrace)() = nullptr;
  // For preempt/: writes to fd the return addresses of fiber f's stack
  // from a fault's signal context (a ucontext_t), for the stack overflow
  // report (signals.cc). Runs in the SIGSEGV handler on the alternate
  // signal stack: no allocation, no lock the faulting code may hold (see
  // preempt/internal/fault_backtrace.cc). Null: the report has none.
  void (*fault_backtrace)(const Fiber* f, const void* ucontext,
                          int fd) = nullptr;
};
extern Hooks g_hooks;

// For preempt/: yield the current fiber because of a preemption request.
// `async` counts it as an asynchronous preemption.
void preempt_yield(bool async);

// For stats(): fill the runtime's counters into *out.
void fill_stats(const Sched& s, Stats* out);

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_SCHEDULER_H_
