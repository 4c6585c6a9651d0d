// Copyright goro authors.
//
// Thin wrappers over futex(2) and a one-shot Note (Go's note): how an idle M
// sleeps until another thread hands it work, or until a deadline.

#ifndef GORO_RUNTIME_INTERNAL_FUTEX_H_
#define GORO_RUNTIME_INTERNAL_FUTEX_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace goro::runtime_internal {

// CLOCK_MONOTONIC in nanoseconds: the clock of every goro deadline and of
// std::chrono::steady_clock in libstdc++.
inline std::int64_t mono_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// futex_wait sleeps while *word == expected, until woken or until the absolute
// CLOCK_MONOTONIC deadline (deadline_ns <= 0: no deadline). Spurious returns
// are allowed; callers loop.
inline void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       std::int64_t deadline_ns) {
  timespec ts;
  timespec* tsp = nullptr;
  if (deadline_ns > 0) {
    ts.tv_sec = deadline_ns / 1000000000;
    ts.tv_nsec = deadline_ns % 1000000000;
    tsp = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word),
          FUTEX_WAIT_BITSET_PRIVATE, expected, tsp, nullptr,
          FUTEX_BITSET_MATCH_ANY);
}

inline void futex_wake(std::atomic<std::uint32_t>* word, int n) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE,
          n, nullptr, nullptr, 0);
}

// Note: one sleeper, any number of wakers. clear() before each use by the
// sleeper; wake() is sticky until the next clear().
class Note {
 public:
  void clear() { word_.store(0, std::memory_order_relaxed); }
  // Release: what the waker wrote before wake() is visible after sleep()
  // returns true.
  void wake() {
    if (word_.exchange(1, std::memory_order_release) == 0) {
      futex_wake(&word_, 1);
    }
  }
  // sleep returns true when woken, false at the deadline (<= 0: none).
  bool sleep(std::int64_t deadline_ns) {
    while (word_.load(std::memory_order_acquire) == 0) {
      if (deadline_ns > 0 && mono_now_ns() >= deadline_ns) return false;
      futex_wait(&word_, 0, deadline_ns);
    }
    return true;
  }

 private:
  std::atomic<std::uint32_t> word_{0};
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_FUTEX_H_
