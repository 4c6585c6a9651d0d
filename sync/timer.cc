// Copyright goro authors.
//
// Timers on runtime_internal::Timer. The runtime copies fire/arg before
// calling fire(arg), so `arg` must outlive a firing that already started
// (park.h). Hence: each arming is a heap object (Arming) owning one
// reference to the shared TimerState; the firing (or a successful
// timer_stop) frees it and drops that reference. A firing that lost a race
// with stop/reset recognises itself by a stale generation and delivers
// nothing. An arming still pending when its runtime ends is dropped
// (Timer::drop): freed like a firing that delivers nothing, so after()'s
// timers, which have no handle to stop them, are not leaked.
//
// Invariants (under TimerState::lock):
//   (T1) current is the live arming or null; gen identifies it.
//   (T2) refs counts the handle (Timer/Ticker, or after()'s caller until it
//        returns) plus one per Arming not yet freed.
//   (T3) orphaned: the arming that was current when its runtime ended was
//        dropped; the next disarm reports it as active (it never fired).

#include "sync/timer.h"

#include <atomic>
#include <utility>

#include "runtime/internal/futex.h"  // mono_now_ns
#include "runtime/internal/park.h"
#include "sync/internal/spin_lock.h"

namespace goro::sync_internal {

struct Arming {
  runtime_internal::Timer t;
  TimerState* st;
  std::uint64_t gen;
};

struct TimerState {
  std::atomic<int> refs{1};
  SpinLock lock;
  Chan<TimePoint> ch{1};
  std::function<void()> fn;
  std::int64_t period_ns ABSL_GUARDED_BY(lock) = 0;
  std::uint64_t gen ABSL_GUARDED_BY(lock) = 0;
  Arming* current ABSL_GUARDED_BY(lock) = nullptr;
  bool orphaned ABSL_GUARDED_BY(lock) = false;
};

namespace {

void unref(TimerState* s) {
  if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
}

void fire(void* arg) {
  auto* a = static_cast<Arming*>(arg);
  TimerState* s = a->st;
  std::function<void()> fn;
  bool rearmed = false;
  {
    SpinLockGuard l(&s->lock);
    if (a->gen == s->gen && s->current == a) {
      if (s->fn) {
        fn = s->fn;
      } else {
        const TimePoint now = std::chrono::steady_clock::now();
        s->ch.try_send(now);  // full: the reader fell behind; drop it
      }
      if (s->period_ns > 0) {
        std::int64_t next =
            runtime_internal::add_saturating(a->t.when, s->period_ns);
        const std::int64_t now = runtime_internal::mono_now_ns();
        if (next <= now) {  // skip missed ticks
          next = runtime_internal::add_saturating(now, s->period_ns);
        }
        a->t.when = next;
        // Fails only once the runtime ends: then it is over, as below.
        rearmed = runtime_internal::timer_start(&a->t);
        if (!rearmed) s->current = nullptr;
      } else {
        s->current = nullptr;
      }
    }
  }
  if (fn) fn();
  if (!rearmed) {
    delete a;
    unref(s);
  }
}

// Timer::drop: the runtime ended with `arg` pending; it will not fire.
void drop(void* arg) {
  auto* a = static_cast<Arming*>(arg);
  TimerState* s = a->st;
  {
    SpinLockGuard l(&s->lock);
    if (s->current == a) {
      s->current = nullptr;
      s->orphaned = true;
    }
  }
  delete a;
  unref(s);
}

// Disarms the current arming, if any. Returns whether it was pending.
bool disarm_locked(TimerState* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  Arming* a = s->current;
  s->current = nullptr;
  ++s->gen;
  bool was = std::exchange(s->orphaned, false);
  if (a != nullptr) {
    if (runtime_internal::timer_stop(&a->t)) {
      delete a;
      s->refs.fetch_sub(1, std::memory_order_acq_rel);  // the handle remains
      was = true;
    } else {
      // Firing now or fired: that firing frees `a` (stale generation).
      was = s->period_ns > 0;
    }
  }
  while (s->ch.try_recv()) {
  }
  return was;
}

}  // namespace

TimerState* timer_new(std::int64_t period_ns, std::function<void()> fn) {
  auto* s = new TimerState;
  {
    SpinLockGuard l(&s->lock);
    s->period_ns = period_ns;
  }
  s->fn = std::move(fn);
  return s;
}

void timer_unref(TimerState* s) { unref(s); }

namespace {

// Disarms, then arms a new arming at now + d_ns. Returns whether the timer
// was active; *started: whether the runtime took the new arming (without
// one it never fires, and the next disarm frees it: timer_stop says the
// caller owns it).
bool arm_locked(TimerState* s, std::int64_t d_ns, std::int64_t period_ns,
                bool* started) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->lock) {
  const bool was = disarm_locked(s);
  s->period_ns = period_ns;
  auto* a = new Arming;
  a->st = s;
  a->gen = s->gen;
  a->t.when = runtime_internal::add_saturating(runtime_internal::mono_now_ns(),
                                               d_ns > 0 ? d_ns : 0);
  a->t.fire = fire;
  a->t.drop = drop;
  a->t.arg = a;
  s->refs.fetch_add(1, std::memory_order_relaxed);
  s->current = a;
  *started = runtime_internal::timer_start(&a->t);
  return was;
}

}  // namespace

bool timer_arm(TimerState* s, std::int64_t d_ns, std::int64_t period_ns) {
  SpinLockGuard l(&s->lock);
  bool started;
  return arm_locked(s, d_ns, period_ns, &started);
}

Chan<TimePoint> after_ns(std::int64_t d_ns) {
  TimerState* s = timer_new(0, nullptr);
  Chan<TimePoint> c = s->ch;
  {
    SpinLockGuard l(&s->lock);
    bool started;
    arm_locked(s, d_ns, 0, &started);
    // Not armed (no runtime): it would never fire, and nobody could stop
    // it. Armed: the arming's reference keeps it until it fires or its
    // runtime ends.
    if (!started) disarm_locked(s);
  }
  timer_unref(s);
  return c;
}

bool timer_stop(TimerState* s) {
  SpinLockGuard l(&s->lock);
  return disarm_locked(s);
}

Chan<TimePoint> timer_chan(TimerState* s) { return s->ch; }

}  // namespace goro::sync_internal
