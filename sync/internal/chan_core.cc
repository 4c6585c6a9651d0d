// Copyright goro authors.
//
// Channel operations, after Go's runtime/chan.go. See chan_core.h for the
// invariants (C1)-(C5).
//
// Send: closed -> throw; a parked receiver -> hand the value straight to it
// (send_to) and ready it (it goes to runnext); room in the buffer -> buffer
// it; else park on sendq_ with the value on our stack, where a receiver (or
// close) finds it.
// Recv: a parked sender -> take its value (unbuffered: straight from its
// stack; buffered: the buffer's head, and the sender's value goes to the
// tail, which keeps FIFO order and (C3)); a buffered value -> take it;
// closed -> report closed; else park on recvq_ with raw storage on our stack
// that a sender fills in.
//
// Non-blocking fast paths (try_send/try_recv) look at the channel without
// the lock and give up when it is obviously full/empty. As Go argues: each
// peek reads one word, so it is a snapshot of a state the channel really was
// in at that instant; reporting "would block" then is linearizable at the
// read. For recv we must also look at closed_: we read "empty" first, then
// closed_; if not closed, the channel was open and empty at the first read.
// If closed, we re-check emptiness (a closed channel can only drain), and only
// then report closed; reversing the reads could report "not ready" for a
// channel that was closed and still had data... or closed and drained, which
// must report closed.

#include "sync/internal/chan_core.h"

#include <cstdlib>
#include <mutex>
#include <new>

namespace goro::sync_internal {

namespace {

bool unlock_commit(void* lock) {
  static_cast<SpinLock*>(lock)->unlock();
  return true;
}

}  // namespace

ChanCore* ChanCore::create(std::int64_t capacity, const ElemOps* ops) {
  if (capacity < 0) {
    throw std::invalid_argument("goro::Chan: negative capacity");
  }
  const std::size_t cap = static_cast<std::size_t>(capacity);
  if (cap > (std::size_t{1} << 40) / (ops->stride ? ops->stride : 1)) {
    throw std::invalid_argument("goro::Chan: capacity too large");
  }
  const std::size_t align =
      ops->align > alignof(ChanCore) ? ops->align : alignof(ChanCore);
  const std::size_t head = (sizeof(ChanCore) + align - 1) / align * align;
  void* mem = ::operator new(head + cap * ops->stride, std::align_val_t(align));
  return ::new (mem)
      ChanCore(cap, ops, static_cast<unsigned char*>(mem) + head);
}

void ChanCore::destroy() {
  // Sole owner: no lock needed, but take it so TSan sees the last writers'
  // history through the lock as well as through refs_.
  lock_.lock();
  const std::size_t n = count_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i) {
    destroy_elem(slot((recvx_ + i) % cap_));
  }
  lock_.unlock();
  const std::size_t align =
      ops_->align > alignof(ChanCore) ? ops_->align : alignof(ChanCore);
  this->~ChanCore();
  ::operator delete(this, std::align_val_t(align));
}

void ChanCore::send_to(Waiter* w, void* src) {
  move_elem(w->elem, src);
  w->success = true;
}

void ChanCore::recv_from(Waiter* w, void* dst) {
  if (cap_ == 0) {
    move_elem(dst, w->elem);
  } else {
    // Full buffer (C3): take the head, put the sender's value in its place,
    // which becomes the new tail.
    void* s = slot(recvx_);
    move_elem(dst, s);
    destroy_elem(s);
    move_elem(s, w->elem);
    if (++recvx_ == cap_) recvx_ = 0;
    sendx_ = recvx_;
  }
  w->success = true;
}

void ChanCore::buf_put(void* src) {
  move_elem(slot(sendx_), src);
  if (++sendx_ == cap_) sendx_ = 0;
  count_.store(count_.load(std::memory_order_relaxed) + 1,
               std::memory_order_relaxed);
}

void ChanCore::buf_take(void* dst) {
  void* s = slot(recvx_);
  move_elem(dst, s);
  destroy_elem(s);
  if (++recvx_ == cap_) recvx_ = 0;
  count_.store(count_.load(std::memory_order_relaxed) - 1,
               std::memory_order_relaxed);
}

void ChanCore::park_unlock(Waiter* self) {
  if (self->fiber != nullptr) {
    runtime_internal::park(unlock_commit, &lock_);
  } else {
    lock_.unlock();
    thread_wait(self->wake_word);
  }
}

bool ChanCore::send(void* src, bool block) {
  if (!block && !closed_.load(std::memory_order_relaxed) && full_relaxed()) {
    return false;
  }
  lock_.lock();
  if (closed_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    throw ChanClosed("goro::Chan: send on closed channel");
  }
  if (Waiter* w = recvq_.dequeue()) {
    send_to(w, src);
    lock_.unlock();
    wake(w);
    return true;
  }
  if (count_.load(std::memory_order_relaxed) < cap_) {
    buf_put(src);
    lock_.unlock();
    return true;
  }
  if (!block) {
    lock_.unlock();
    return false;
  }
  Waiter self;
  self.init_self();
  self.elem = src;
  sendq_.push_back(&self);
  park_unlock(&self);
  // Woken by a receiver (success) or by close (not delivered).
  if (!self.success) throw ChanClosed("goro::Chan: send on closed channel");
  return true;
}

ChanCore::Recv ChanCore::recv(void* dst, bool block) {
  if (!block && empty_relaxed()) {
    if (!closed_.load(std::memory_order_acquire)) return Recv::kWouldBlock;
    if (empty_relaxed()) {
      // Closed and drained. Take the lock once so that what the closer and
      // the last senders did is ordered before our return (TSan, too).
      std::lock_guard<SpinLock> l(lock_);
      if (count_.load(std::memory_order_relaxed) == 0 && sendq_.empty()) {
        return Recv::kClosed;
      }
    }
  }
  lock_.lock();
  if (Waiter* w = sendq_.dequeue()) {
    recv_from(w, dst);
    lock_.unlock();
    wake(w);
    return Recv::kReceived;
  }
  if (count_.load(std::memory_order_relaxed) > 0) {
    buf_take(dst);
    lock_.unlock();
    return Recv::kReceived;
  }
  if (closed_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    return Recv::kClosed;
  }
  if (!block) {
    lock_.unlock();
    return Recv::kWouldBlock;
  }
  Waiter self;
  self.init_self();
  self.elem = dst;
  recvq_.push_back(&self);
  park_unlock(&self);
  return self.success ? Recv::kReceived : Recv::kClosed;
}

void ChanCore::close() {
  lock_.lock();
  if (closed_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    throw ChanClosed("goro::Chan: close of closed channel");
  }
  closed_.store(true, std::memory_order_release);
  // (C5): empty both queues; every waiter learns success == false.
  Waiter* head = nullptr;
  Waiter** tail = &head;
  for (WaitQueue* q : {&recvq_, &sendq_}) {
    while (Waiter* w = q->dequeue()) {
      w->success = false;
      w->next = nullptr;
      *tail = w;
      tail = &w->next;
    }
  }
  lock_.unlock();
  while (head != nullptr) {
    Waiter* w = head;
    head = w->next;  // before wake: w lives on the woken fiber's stack
    wake(w);
  }
}

}  // namespace goro::sync_internal
