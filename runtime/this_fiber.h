// Copyright goro authors.
//
// Calls about the current fiber: yield, sleep, identity.
//
// On a thread that is not running a fiber these fall back to the thread
// equivalents (std::this_thread::yield / sleep_*), and id() returns 0, so
// library code can call them from anywhere.

#ifndef GORO_RUNTIME_THIS_FIBER_H_
#define GORO_RUNTIME_THIS_FIBER_H_

#include <chrono>
#include <cstdint>
#include <string_view>

#include "runtime/internal/duration.h"

namespace goro {

// yield lets other runnable fibers run; the caller goes to the back of its
// P's run queue and is resumed later (possibly on another thread). Returns at
// once if nothing else is runnable. Also honours a pending preemption
// request. Cost: one context switch (~tens of ns) when another fiber runs.
void yield();

// sleep_until parks the fiber until `deadline` (std::chrono::steady_clock)
// has passed; the thread runs other fibers meanwhile. A deadline in the past
// returns at once. Precision: the runtime sleeps to the nanosecond; expect
// tens of microseconds of lateness from the kernel's wake-up latency.
void sleep_until(std::chrono::steady_clock::time_point deadline);

// sleep_for parks the fiber for at least `d` (d <= 0 returns at once; a
// `d` beyond the clock's range, such as hours::max(), parks for good).
template <typename Rep, typename Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  if (d <= d.zero()) return;
  sleep_until(
      runtime_internal::deadline_after(runtime_internal::saturating_ns(d)));
}

namespace this_fiber {

// id is the current fiber's id: unique within the process, never 0, never
// reused (the main fiber of each run gets a fresh one). 0 outside a fiber.
std::uint64_t id();

// name is the SpawnOptions::name the fiber was started with ("main" for the
// main fiber); empty outside a fiber or when none was given.
std::string_view name();

}  // namespace this_fiber
}  // namespace goro

#endif  // GORO_RUNTIME_THIS_FIBER_H_
