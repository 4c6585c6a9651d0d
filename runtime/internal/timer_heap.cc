// Copyright goro authors.

#include "runtime/internal/timer_heap.h"

#include <utility>

#include "runtime/internal/dcheck.h"
#include "runtime/internal/trace.h"

namespace goro::runtime_internal {

// Invariant: a Timer is armed iff t->heap == this heap and heap_[t->index] ==
// t; both change only under mu_. Timer::heap is read without mu_ by
// timer_stop (to find the heap), so it is accessed with atomic_ref.

namespace {
void set_heap(Timer* t, void* h) {
  std::atomic_ref<void*>(t->heap).store(h, std::memory_order_release);
}
}  // namespace

void TimerHeap::publish_earliest() {
  earliest_.store(heap_.empty() ? 0 : heap_[0]->when,
                  std::memory_order_release);
}

void TimerHeap::sift_up(std::size_t i) {
  Timer* t = heap_[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 2;
    if (heap_[parent]->when <= t->when) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, t);
}

void TimerHeap::sift_down(std::size_t i) {
  Timer* t = heap_[i];
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && heap_[c + 1]->when < heap_[c]->when) ++c;
    if (t->when <= heap_[c]->when) break;
    place(i, heap_[c]);
    i = c;
  }
  place(i, t);
}

void TimerHeap::remove_at(std::size_t i) {
  Timer* t = heap_[i];
  Timer* last = heap_.back();
  heap_.pop_back();
  if (last != t) {
    place(i, last);
    sift_down(i);
    sift_up(static_cast<std::size_t>(last->index));
  }
  t->index = -1;
  set_heap(t, nullptr);
}

TimerHeap::Added TimerHeap::add(Timer* t) {
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return Added::kClosed;
  heap_.push_back(t);
  set_heap(t, this);
  sift_up(heap_.size() - 1);
  publish_earliest();
  return heap_[0] == t ? Added::kEarliest : Added::kNotEarliest;
}

void TimerHeap::close(std::vector<Dropped>* out) {
  std::lock_guard<std::mutex> l(mu_);
  closed_ = true;
  for (Timer* t : heap_) {
    // As run_expired does: copied under the lock, disarmed; after that the
    // Timer may be gone (its owner saw it disarmed).
    if (t->drop != nullptr) out->push_back({t->drop, t->arg});
    t->index = -1;
    set_heap(t, nullptr);
  }
  heap_.clear();
  publish_earliest();
}

bool TimerHeap::remove(Timer* t) {
  std::lock_guard<std::mutex> l(mu_);
  if (std::atomic_ref<void*>(t->heap).load(std::memory_order_relaxed) != this ||
      t->index < 0) {
    return false;
  }
  remove_at(static_cast<std::size_t>(t->index));
  publish_earliest();
  return true;
}

bool TimerHeap::move_all_to(TimerHeap* dst) {
  std::lock_guard<std::mutex> l(mu_);
  if (heap_.empty()) return false;
  std::lock_guard<std::mutex> ld(dst->mu_);
  // Only Ms move timers, and heaps close once every M has stopped.
  GORO_DCHECK(!closed_ && !dst->closed_);
  const std::int64_t before = dst->heap_.empty() ? 0 : dst->heap_[0]->when;
  for (Timer* t : heap_) {
    dst->heap_.push_back(t);
    set_heap(t, dst);  // timer_stop, racing, retries on the new heap
    dst->sift_up(dst->heap_.size() - 1);
  }
  heap_.clear();
  publish_earliest();
  dst->publish_earliest();
  return before == 0 || dst->heap_[0]->when < before;
}

int TimerHeap::run_expired(std::int64_t now) {
  int fired = 0;
  for (;;) {
    void (*fire)(void*);
    void* arg;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (heap_.empty() || heap_[0]->when > now) {
        publish_earliest();
        return fired;
      }
      Timer* t = heap_[0];
      fire = t->fire;
      arg = t->arg;
      remove_at(0);
      publish_earliest();
    }
    // The Timer may be gone now (its owner saw it disarmed); only arg is used.
    trace_timer();
    fire(arg);
    ++fired;
  }
}

}  // namespace goro::runtime_internal
