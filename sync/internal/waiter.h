// Copyright goro authors.
//
// Waiter and WaitQueue: the parked-fiber records of sync/ (Go's sudog and
// waitq). Internal to sync/; users want goro::Chan, goro::Mutex & co.
//
// A Waiter lives on the stack of the fiber (or thread) that waits. It is
// linked into the WaitQueue of the structure it waits on under that
// structure's SpinLock, and stays valid until the waiter is woken: whoever
// dequeues it owns the duty to wake it exactly once (wake()), and must not
// touch it -- nor anything the woken fiber may free -- after wake().
//
// select: one fiber parks with one Waiter per case, on several channels at
// once. All of them point to one SelectState. A waker that dequeues such a
// waiter claims the whole select with a CAS of SelectState::done from 0 to 1
// (Go's g.selectDone); if the CAS fails, another case already won, so the
// waker drops the waiter (it is unlinked; the select fiber's own clean-up
// tolerates that) and moves on to the next one. So a parked select is woken
// by exactly one case.
//
// Plain threads may wait too (fiber == null): they sleep on a futex word,
// which wake() sets to 1.
//
// Invariants:
//   (Q1) A Waiter is in at most one WaitQueue, and queued_ is true iff it is
//        linked; both change only under the owning structure's lock.
//   (Q2) first_ (atomic for lock-free emptiness peeks) equals head while the
//        lock is not held.

#ifndef GORO_SYNC_INTERNAL_WAITER_H_
#define GORO_SYNC_INTERNAL_WAITER_H_

#include <atomic>
#include <cstdint>

#include "runtime/internal/futex.h"
#include "runtime/internal/park.h"

namespace goro::sync_internal {

struct Waiter;

// Shared by the waiters of one parked select.
struct SelectState {
  // 0 while no case has won; the waker that CASes it to 1 owns the select.
  // cas acq_rel: orders the winner's writes before the select's resumption
  // (ready() orders them too; this keeps thread waiters simple).
  std::atomic<std::uint32_t> done{0};
  Waiter* winner = nullptr;  // written by the claiming waker before wake()
  std::atomic<std::uint32_t> word{0};  // futex word for thread waiters
};

struct Waiter {
  runtime_internal::Fiber* fiber = nullptr;  // null: a plain thread
  // Threads sleep on *wake_word (own word_, or SelectState::word).
  std::atomic<std::uint32_t>* wake_word = nullptr;
  // Channels: the sender's value (T*) or the receiver's uninitialised T
  // storage. Semaphore: the requested count. Cond: the ticket.
  void* elem = nullptr;
  std::uint64_t ticket = 0;
  SelectState* select = nullptr;  // non-null: part of a parked select
  std::uint32_t case_index = 0;   // select: which case this waiter is
  // Set by the waker before wake(): true if the operation completed (value
  // handed over), false if woken because the channel closed.
  bool success = false;
  // Select only: woken without an operation (a buffered channel's value or
  // room, seen under the lock, was taken by a lock-free operation between
  // the claim and the transfer); the select runs again.
  bool retry = false;
  bool queued = false;  // (Q1)
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  std::atomic<std::uint32_t> word{0};

  // init_self fills in the calling fiber (or thread).
  void init_self() {
    fiber = runtime_internal::current_fiber();
    wake_word = &word;
  }
};

// wake wakes a dequeued waiter. Reads nothing of *w after the wake-up.
inline void wake(Waiter* w) {
  if (w->fiber != nullptr) {
    runtime_internal::ready(w->fiber);
  } else {
    runtime_internal::thread_wake(w->wake_word);
  }
}

// WakeList collects waiters taken off a queue under a lock, to wake them
// after the lock is released (a woken fiber may run at once, and must not find
// the lock held). wake_all reads each link before waking: a waiter lives on
// its fiber's stack and may be gone right after.
class WakeList {
 public:
  bool empty() const { return head_ == nullptr; }
  void push(Waiter* w) {
    w->next = nullptr;
    *tail_ = w;
    tail_ = &w->next;
  }
  void wake_all() {
    while (head_ != nullptr) {
      Waiter* w = head_;
      head_ = w->next;
      wake(w);
    }
    tail_ = &head_;
  }

 private:
  Waiter* head_ = nullptr;
  Waiter** tail_ = &head_;
};

using runtime_internal::thread_wait;

// A FIFO of waiters. Guarded by the lock of the structure that owns it.
class WaitQueue {
 public:
  bool empty() const { return head_ == nullptr; }
  // Lock-free peek (may be stale): used by the non-blocking fast paths.
  bool empty_relaxed() const {
    return first_.load(std::memory_order_relaxed) == nullptr;
  }
  Waiter* front() const { return head_; }
  // publish stores the queue's head again, seq_cst: the registering half of
  // the Dekker handshake with lock-free channel operations (chan_core.cc).
  // Under the owner's lock, after push_back.
  void publish() { first_.store(head_, std::memory_order_seq_cst); }
  // The other half: a seq_cst look from outside the lock.
  bool empty_seq_cst() const {
    return first_.load(std::memory_order_seq_cst) == nullptr;
  }

  void push_back(Waiter* w) { link(w, tail_, nullptr); }
  void push_front(Waiter* w) { link(w, nullptr, head_); }

  // remove unlinks w if it is still queued here (idempotent, for select's
  // clean-up of the cases that did not win).
  void remove(Waiter* w) {
    if (!w->queued) return;
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else {
      set_head(w->next);
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      tail_ = w->prev;
    }
    w->prev = w->next = nullptr;
    w->queued = false;
  }

  // dequeue removes and returns the first waiter that can be woken, claiming
  // select waiters (see the top of this file); null if none.
  Waiter* dequeue() {
    for (;;) {
      Waiter* w = head_;
      if (w == nullptr) return nullptr;
      remove(w);
      if (w->select != nullptr) {
        std::uint32_t zero = 0;
        if (!w->select->done.compare_exchange_strong(
                zero, 1, std::memory_order_acq_rel)) {
          continue;  // another case of that select won
        }
        w->select->winner = w;
      }
      return w;
    }
  }

 private:
  // Inserts w between the neighbours `prev` and `next` (null at either end).
  void link(Waiter* w, Waiter* prev, Waiter* next) {
    w->prev = prev;
    w->next = next;
    if (prev != nullptr) {
      prev->next = w;
    } else {
      set_head(w);
    }
    if (next != nullptr) {
      next->prev = w;
    } else {
      tail_ = w;
    }
    w->queued = true;
  }

  void set_head(Waiter* w) {
    head_ = w;
    first_.store(w, std::memory_order_relaxed);  // (Q2)
  }

  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  std::atomic<Waiter*> first_{nullptr};
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_WAITER_H_
