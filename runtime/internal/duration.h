// Copyright goro authors.
//
// Saturating time arithmetic for the public templates that take a
// std::chrono duration (sleep_for, with_timeout, Timer, after, Ticker). Not
// for users: include "goro.h" instead.
//
// Why: "sleep for hours::max()" or "a timeout of nanoseconds::max()" is how
// C++ code says "forever", and the plain arithmetic overflows -- the
// conversion to nanoseconds for anything past 292 years, then now + d --
// which is undefined behaviour and in practice a deadline in the past: the
// fiber that meant to wait forever returns at once. Both steps saturate
// here instead: a duration too long for 64-bit nanoseconds becomes the
// longest one, and a deadline past the clock's range becomes
// steady_clock::time_point::max(), which never passes.

#ifndef GORO_RUNTIME_INTERNAL_DURATION_H_
#define GORO_RUNTIME_INTERNAL_DURATION_H_

#include <chrono>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace goro::runtime_internal {

// d in nanoseconds, rounded up (a wait is never shorter than asked), and
// clamped to the range of std::int64_t.
template <typename Rep, typename Period>
constexpr std::int64_t saturating_ns(std::chrono::duration<Rep, Period> d) {
  // The bound is checked in long double, whose conversion cannot overflow;
  // 9.2e18 is just below 2^63 (9.22e18), so the exact conversion below is
  // in range.
  const long double x =
      std::chrono::duration<long double, std::nano>(d).count();
  if (x != x) return 0;  // NaN (a floating-point Rep): no time at all
  if (x >= 9.2e18L) return std::numeric_limits<std::int64_t>::max();
  if (x <= -9.2e18L) return std::numeric_limits<std::int64_t>::min();
  return std::chrono::ceil<std::chrono::nanoseconds>(d).count();
}

// t + ns in nanoseconds (mono_now_ns's clock), clamped to std::int64_t.
inline std::int64_t add_saturating(std::int64_t t, std::int64_t ns) {
  if (ns > 0 && t > std::numeric_limits<std::int64_t>::max() - ns) {
    return std::numeric_limits<std::int64_t>::max();
  }
  if (ns < 0 && t < std::numeric_limits<std::int64_t>::min() - ns) {
    return std::numeric_limits<std::int64_t>::min();
  }
  return t + ns;
}

// now + ns on steady_clock, clamped to its range (time_point::max() never
// passes).
inline std::chrono::steady_clock::time_point deadline_after(std::int64_t ns) {
  using Clock = std::chrono::steady_clock;
  static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>);
  return Clock::time_point(Clock::duration(
      add_saturating(Clock::now().time_since_epoch().count(), ns)));
}

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_DURATION_H_
