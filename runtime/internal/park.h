// Copyright goro authors.
//
// The park/ready API: how sync/ and net/ block a fiber and wake it. This is
// the only way anything above runtime/ suspends a fiber. Users want the
// primitives in sync/ instead; the Bazel target //runtime:park is visible
// only to sync/, net/ and the tests.
//
// Protocol (no lost wake-ups): a fiber that must wait
//   1. takes the lock of the structure it waits on,
//   2. records itself there (current_fiber()),
//   3. calls park(commit, arg, reason) with the lock still held -- usually
//      park_unlock(&lock, reason), whose commit releases that lock.
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

#ifndef GORO_RUNTIME_INTERNAL_PARK_H_
#define GORO_RUNTIME_INTERNAL_PARK_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "runtime/internal/futex.h"

namespace goro::runtime_internal {

struct Fiber;
struct Timer;

// Why a fiber is parked: kept on the fiber while it waits, for the
// diagnostics (deadlock reports and fiber dumps name it, as Go's waitReason).
enum class WaitReason : std::uint8_t {
  kNone,
  kChanSend,
  kChanReceive,
  kSelect,
  kSelectNoCases,  // select with only nil channels: forever
  kSleep,
  kMutexLock,
  kRWMutexRLock,
  kRWMutexLock,
  kCondWait,
  kSemacquire,
  kWaitGroupWait,
  kIOWait,  // net/
};

// The reason's text ("chan receive", ...), as Go prints it.
const char* wait_reason_name(WaitReason r);

// current_fiber is the calling fiber, or null on a thread not running one
// (including inside a blocking() call: the fiber may not park there).
Fiber* current_fiber();

// park suspends the calling fiber (see the protocol above). Precondition:
// current_fiber() != null (fatal otherwise).
void park(bool (*commit)(void* arg), void* arg, WaitReason reason);

// park_unlock parks the calling fiber and releases *lock once the fiber is
// off its stack: the common commit (Go's goparkunlock). Lock is an
// ABSL_LOCKABLE type with unlock() (for clang's -Wthread-safety, callers
// hold *lock before the call and not after). Precondition: *lock is held,
// current_fiber() != null.
template <typename Lock>
void park_unlock(Lock* lock, WaitReason reason) ABSL_UNLOCK_FUNCTION(lock)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {  // the commit, not this body, unlocks
  park(
      // Unlocks what park_unlock's caller locked: invisible to the analysis.
      [](void* l) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        static_cast<Lock*>(l)->unlock();
        return true;
      },
      lock, reason);
}

// thread_wait blocks a plain thread (not a fiber) until *word is non-zero;
// thread_wake sets it and wakes that thread. The store is a release and the
// load an acquire, so what the waker wrote before thread_wake is visible
// after thread_wait returns. thread_wake reads nothing after the wake-up: the
// word may live on the waiter's stack and be gone by then (a futex wake on a
// dead address at worst wakes an unrelated futex spuriously, which futex
// users tolerate).
inline void thread_wait(std::atomic<std::uint32_t>* word) {
  while (word->load(std::memory_order_acquire) == 0) futex_wait(word, 0, 0);
}
inline void thread_wake(std::atomic<std::uint32_t>* word) {
  word->store(1, std::memory_order_release);
  futex_wake(word, 1);
}

// wait_unlock is park_unlock for code that may also run on a plain thread:
// `self` is current_fiber() (taken before locking). A fiber parks and *lock
// is released by the commit; a plain thread releases *lock and sleeps in
// thread_wait(word). Its waker calls ready(self), or thread_wake(word) when
// self was null.
template <typename Lock>
void wait_unlock(Fiber* self, Lock* lock, std::atomic<std::uint32_t>* word,
                 WaitReason reason) ABSL_UNLOCK_FUNCTION(lock) {
  if (self != nullptr) {
    park_unlock(lock, reason);
    return;
  }
  lock->unlock();
  thread_wait(word);
}

// ready makes a parked fiber runnable: into the current P's runnext slot, so
// it runs next on this thread (inheriting the rest of the time slice), or into
// the global queue when called from a thread without a P. Any thread.
void ready(Fiber* f);

// ready_behind is ready for a wake-up that is not a hand-off of the caller's
// time slice: f goes behind the fibers already in the current P's ring
// (first in, first out), not into runnext. For a waker that readies one of
// many peers in turn (net/'s hand-off past its chain, ready_handoff):
// runnext would let one pair of fibers take up to kMaxRunnextStreak turns
// while the others wait. Past a half-full ring, f goes to the global queue
// instead (overflowing would move half the ring there). Off a P it is
// ready().
// Counted in Stats::io_handoffs. Any thread.
void ready_behind(Fiber* f);

// ready_handoff is net/'s in-process loopback hand-off: ready() while this
// P's runnext chain is short (kIoHandoffChain in run_queues.h: one round
// trip of a connection's two fibers, two behind a long ring), so the other
// end runs next with warm caches; ready_behind() after it, so that the pair
// then waits its turn. Counted in Stats::io_handoffs. Any thread.
void ready_handoff(Fiber* f);

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
// call and three loads) when nothing is pending; no-op off fibers, inside
// blocking(), under a runtime lock and in a NoPreempt region. Every channel
// send and receive and every select start with it (Go's function prologue
// check), so that loops of operations that never park are preempted where
// asynchronous preemption is off.
void preempt_check();

// I/O waiters (net/): fibers parked on a socket, counted so that the
// scheduler polls only when someone waits, and so that a deadlock detector
// can tell that such fibers are not dead (an event may still wake them).
// net/ adds 1 before it publishes a parked fiber in a poll descriptor and
// subtracts 1 when the fiber is taken out again. Relaxed: a count, read as
// a hint (the scheduler) or once everything is quiet (a detector).
void io_waiters_add(int delta);
int io_waiters();

// runtime_epoch is the number of the running runtime (Sched::epoch: 1, 2,
// ... per goro::run in this process), 0 when none runs. net/ stamps each
// socket with it, so that a socket used after its runtime ended fails
// cleanly. Any thread.
std::uint64_t runtime_epoch();

// Timers for sync/ (channel timers, timeouts). The runtime reads a Timer only
// while it is armed: it copies `fire` and `arg` and disarms the timer before
// calling fire(arg), so once timer_stop returns (either way) the Timer may be
// destroyed -- but `arg` must outlive a fire that already started. fire runs
// on a scheduler context with preemption disabled, must not block, and may
// call ready().
//
// A timer still armed when its runtime ends never fires. If it has a `drop`,
// the runtime calls drop(arg) instead, on run's thread once every M has
// stopped, with the same rules as for fire: the timer is disarmed first
// (a timer_stop racing with it returns false), and `arg` must outlive it.
// Owners that free themselves on firing (after()'s timers, which nobody
// else holds) free themselves there too.
struct Timer {
  std::int64_t when = 0;  // CLOCK_MONOTONIC ns
  void (*fire)(void* arg) = nullptr;
  void (*drop)(void* arg) = nullptr;  // optional, see above
  void* arg = nullptr;
  // Runtime-private: the heap holding the timer while armed, its index, and
  // the runtime it was armed in (Sched::epoch; 0: none).
  void* heap = nullptr;
  std::int32_t index = -1;
  std::uint64_t epoch = 0;
};

// timer_start arms `t` on the current P (or the first P off a fiber) and
// returns true. With no runtime running, or one that is ending (its timers
// dropped already), `t` is left unarmed and it returns false: `t` never
// fires and is the caller's again.
// Precondition: t is not armed.
bool timer_start(Timer* t);
// timer_stop disarms `t`. Returns true if fire will not run and the caller
// owns `t` again: it was armed, or armed in a runtime that has ended (whose
// timers never fire) or never armed at all. False if it fired or is firing.
// Any thread, any time, also after run has returned.
bool timer_stop(Timer* t);

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_PARK_H_
