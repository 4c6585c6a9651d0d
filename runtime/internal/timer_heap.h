// Copyright goro authors.
//
// A P's timers: a binary min-heap on Timer::when, guarded by its own lock
// because other Ps run an idle P's expired timers and any thread may stop a
// timer. `earliest` mirrors the top for lock-free peeks (0 = no timers).

#ifndef GORO_RUNTIME_INTERNAL_TIMER_HEAP_H_
#define GORO_RUNTIME_INTERNAL_TIMER_HEAP_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "runtime/internal/park.h"

namespace goro::runtime_internal {

class TimerHeap {
 public:
  enum class Added { kNotEarliest, kEarliest, kClosed };
  // add arms t: kEarliest if t became the earliest timer. kClosed: the heap
  // was closed, t is left unarmed.
  Added add(Timer* t);
  // A timer taken out by close(): what to call instead of its firing.
  struct Dropped {
    void (*drop)(void*);
    void* arg;
  };
  // close disarms every timer, appends those with a drop to *out, and makes
  // later adds fail (the runtime is ending).
  void close(std::vector<Dropped>* out);
  // remove disarms t if this heap holds it; returns whether it did.
  bool remove(Timer* t);
  // move_all_to moves every armed timer to `dst` (a spare P's heap to its
  // regular P's: always in that direction, so the two locks are always taken
  // in the same order). Returns true if dst's earliest deadline moved
  // earlier.
  bool move_all_to(TimerHeap* dst);
  // run_expired fires every timer due at `now`; returns how many fired.
  int run_expired(std::int64_t now);
  // earliest deadline, or 0 when empty. Lock-free, may be stale.
  std::int64_t earliest() const {
    return earliest_.load(std::memory_order_acquire);
  }

 private:
  // Puts t at heap_[i] and keeps t->index equal to its position.
  void place(std::size_t i, Timer* t) {
    heap_[i] = t;
    t->index = static_cast<std::int32_t>(i);
  }
  void sift_up(std::size_t i);
  void sift_down(std::size_t i);
  void remove_at(std::size_t i);
  void publish_earliest();

  std::mutex mu_;
  std::vector<Timer*> heap_;  // guarded by mu_
  bool closed_ = false;       // guarded by mu_
  // Written under mu_; read anywhere.
  std::atomic<std::int64_t> earliest_{0};
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_TIMER_HEAP_H_
