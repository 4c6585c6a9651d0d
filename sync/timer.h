// Copyright goro authors.
//
// Timers as channels, Go's time.After / time.Timer / time.Ticker.
//
//   // A timeout in select:
//   goro::select(goro::recv_case(replies, [&](auto r) { use(r); }),
//                goro::recv_case(goro::after(std::chrono::milliseconds(50)),
//                                [&] { timed_out = true; }));
//
//   goro::Ticker tick(std::chrono::seconds(1));
//   for (;;) { tick.c().recv(); report(); }
//
// Each delivers the firing time (steady_clock) on a channel of capacity 1.
// A Ticker whose reader falls behind drops ticks (as Go's). Timers run on
// the runtime's timer heaps (no thread per timer) and fire within the
// kernel's wake-up latency of their deadline.
//
// Guarantees:
//   * after(d): one value, at or after now + d.
//   * Timer::stop() prevents a firing that has not happened yet and returns
//     whether it did; after stop() or reset() returns, no value from the
//     earlier arming is received (the channel is drained, as Go 1.23+).
//   * Ticker: a value every `period`, until stop() or destruction.
//   * A duration beyond the clock's range (hours::max(), "never") arms a
//     timer that never fires; it does not wrap around into the past.
//   * Memory ordering: none beyond the channel's.
//
// Runtimes: a timer is armed in the runtime running when it is created or
// reset, and fires only there. A Timer or Ticker may outlive that runtime:
// once run returns, its timer never fires, and stop(), reset() and the
// destructor stay safe from any thread (stop() then reports a timer that was
// pending as active: it will not fire). Armed with no runtime running, a
// timer never fires.
// Errors: std::invalid_argument for a Ticker period <= 0.
//
// Cost: one small allocation per arming; firing is a non-blocking send.
// An after(d) timer lives until it fires or its runtime ends, whoever still
// holds its channel (as Go's before 1.23): a loop of selects with an
// after(1h) timeout keeps every one of them (about 500 bytes each) for the
// hour, or until run returns. Where that matters, use a Timer and stop() it.

#ifndef GORO_SYNC_TIMER_H_
#define GORO_SYNC_TIMER_H_

#include <chrono>
#include <cstdint>
#include <functional>

#include "runtime/internal/duration.h"
#include "sync/chan.h"

namespace goro {

using TimePoint = std::chrono::steady_clock::time_point;

namespace sync_internal {
struct TimerState;
// Creates a timer state (one reference, for the caller). `fn`, if set, is
// called at each firing (on a scheduler context: it must not block) instead
// of sending on the channel.
TimerState* timer_new(std::int64_t period_ns, std::function<void()> fn);
void timer_unref(TimerState* s);
// arm (re)arms at now + d; returns whether it was active. stop disarms.
bool timer_arm(TimerState* s, std::int64_t d_ns, std::int64_t period_ns);
bool timer_stop(TimerState* s);
Chan<TimePoint> timer_chan(TimerState* s);
// after(d): a one-shot timer that frees itself when it fires, or when its
// runtime ends first.
Chan<TimePoint> after_ns(std::int64_t d_ns);

// Owns one reference to a timer and stops it when destroyed. Neither
// copyable nor movable, nor are the Timer and Ticker that hold one.
class TimerHandle {
 public:
  explicit TimerHandle(TimerState* s) : s_(s) {}
  TimerHandle(const TimerHandle&) = delete;
  TimerHandle& operator=(const TimerHandle&) = delete;
  ~TimerHandle() {
    timer_stop(s_);
    timer_unref(s_);
  }
  TimerState* get() const { return s_; }

 private:
  TimerState* s_;
};

// Saturating (runtime/internal/duration.h): hours::max() is "never".
template <typename Rep, typename Period>
std::int64_t to_ns(std::chrono::duration<Rep, Period> d) {
  return runtime_internal::saturating_ns(d);
}
}  // namespace sync_internal

// after returns a channel that receives the time once, after `d`.
template <typename Rep, typename Period>
Chan<TimePoint> after(std::chrono::duration<Rep, Period> d) {
  return sync_internal::after_ns(sync_internal::to_ns(d));
}

// Timer: a one-shot timer that can be stopped and reset.
class Timer {
 public:
  template <typename Rep, typename Period>
  explicit Timer(std::chrono::duration<Rep, Period> d)
      : s_(sync_internal::timer_new(0, nullptr)) {
    sync_internal::timer_arm(s_.get(), sync_internal::to_ns(d), 0);
  }

  // The channel the firing time is delivered on.
  Chan<TimePoint> c() const { return sync_internal::timer_chan(s_.get()); }
  // stop: true if the timer was active (it will not fire now).
  bool stop() { return sync_internal::timer_stop(s_.get()); }
  // reset re-arms for `d` from now; true if it was active.
  template <typename Rep, typename Period>
  bool reset(std::chrono::duration<Rep, Period> d) {
    return sync_internal::timer_arm(s_.get(), sync_internal::to_ns(d), 0);
  }

 private:
  sync_internal::TimerHandle s_;
};

// Ticker: delivers the time every `period`.
class Ticker {
 public:
  template <typename Rep, typename Period>
  explicit Ticker(std::chrono::duration<Rep, Period> period)
      : s_(sync_internal::timer_new(checked_period(period), nullptr)) {
    reset(period);
  }

  Chan<TimePoint> c() const { return sync_internal::timer_chan(s_.get()); }
  void stop() { sync_internal::timer_stop(s_.get()); }
  // reset changes the period and restarts the ticks from now.
  template <typename Rep, typename Period>
  void reset(std::chrono::duration<Rep, Period> period) {
    const std::int64_t p = checked_period(period);
    sync_internal::timer_arm(s_.get(), p, p);
  }

 private:
  // Checked before the constructor allocates anything: a throwing
  // constructor runs no destructor, so checking later would leak the timer.
  template <typename Rep, typename Period>
  static std::int64_t checked_period(std::chrono::duration<Rep, Period> d) {
    const std::int64_t p = sync_internal::to_ns(d);
    if (p <= 0) throw std::invalid_argument("goro::Ticker: period <= 0");
    return p;
  }

  sync_internal::TimerHandle s_;
};

}  // namespace goro

#endif  // GORO_SYNC_TIMER_H_
