// Copyright goro authors.
//
// The park/ready API: how sync/ and net/ block a fiber and wake it. This is
// the only way anything above runtime/ suspends a fiber. Users want the
// primitives in sync/ instead.
//
// Protocol (no lost wake-ups): a fiber that must wait
//   1. takes the lock of the structure it waits on,
//   2. records itself there (current_fiber()),
//   3. calls park(commit, arg) with the lock still held.
// park switches away from the fiber and, only once the fiber is off its stack
// and marked waiting, calls commit(arg) on the thread's next context; commit
// releases the lock. A waker that takes the lock and finds the fiber recorded
// calls ready(fiber) (it may do so after releasing the lock). If commit
// returns false the fiber is not parked after all and is made runnable again.
//
// Rules:
//   * commit runs on another context with no fiber of its own: it must not
//     park, throw, or take long. It runs with preemption disabled.
//   * ready() must be called exactly once per park, by whoever removed the
//     fiber from the structure it was recorded in.
//   * Everything the waker wrote before ready() is visible to the fiber when
//     park returns (ready is a release, the resume an acquire).

#ifndef GORO_RUNTIME_PARK_H_
#define GORO_RUNTIME_PARK_H_

#include <cstdint>

namespace goro::runtime_internal {

struct Fiber;
struct Timer;

// current_fiber is the calling fiber, or null on a thread not running one
// (including inside a blocking() call: the fiber may not park there).
Fiber* current_fiber();

// park suspends the calling fiber (see the protocol above). Precondition:
// current_fiber() != null.
void park(bool (*commit)(void* arg), void* arg);

// ready makes a parked fiber runnable: into the current P's runnext slot, so
// it runs next on this thread (inheriting the rest of the time slice), or into
// the global queue when called from a thread without a P. Any thread.
void ready(Fiber* f);

std::uint64_t fiber_id(const Fiber* f);

// spin_may_help tells a fiber about to park until another fiber makes
// progress (a channel becoming non-empty, say) whether to spin briefly
// first: true iff its P has nothing else to run -- parking would idle this
// thread anyway -- and at least one other P is running fibers, which may
// make that progress within microseconds. A park and the wake-up after it
// cost more than that, and move the fiber away from the CPU it was using.
// Cheap: a few loads.
bool spin_may_help();

// preempt_check is a cooperative preemption point: if sysmon asked the
// current fiber to yield (its time slice is over), it yields here. Cheap (a
// call and two loads) when nothing is pending; no-op off fibers and while
// preemption is disabled. sync/ calls it in its blocking operations' fast
// paths.
void preempt_check();

// Preemption-disabled regions for runtime-internal locks: while the count of
// the current thread is non-zero, its fiber is not preempted asynchronously
// (a parked lock holder would deadlock a thread spinning on the lock). The
// count belongs to the thread (Go's m.locks), so a lock held across park and
// released by commit stays balanced. No-ops off goro threads.
void no_preempt_inc();
void no_preempt_dec();

// Timers for sync/ (channel timers, timeouts). The runtime reads a Timer only
// while it is armed: it copies `fire` and `arg` and disarms the timer before
// calling fire(arg), so once timer_stop returns (either way) the Timer may be
// destroyed -- but `arg` must outlive a fire that already started. fire runs
// on a scheduler context with preemption disabled, must not block, and may
// call ready().
struct Timer {
  std::int64_t when = 0;  // CLOCK_MONOTONIC ns
  void (*fire)(void* arg) = nullptr;
  void* arg = nullptr;
  // Runtime-private: the heap holding the timer while armed, and its index.
  void* heap = nullptr;
  std::int32_t index = -1;
};

// timer_start arms `t` on the current P (or the first P off a fiber).
// Precondition: t is not armed; a runtime is running.
void timer_start(Timer* t);
// timer_stop disarms `t`. Returns true if it was armed (fire will not run),
// false if it already fired or is firing.
bool timer_stop(Timer* t);

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_PARK_H_
