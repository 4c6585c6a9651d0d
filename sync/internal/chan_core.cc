// Copyright goro authors.
//
// Channel operations. See chan_core.h for the invariants (C1)-(C3).
//
// Unbuffered channels, as Go's runtime/chan.go, all under lock_:
//   send: closed -> throw; a parked receiver -> move the value straight into
//   its storage and ready it (it goes to runnext); else park on sendq_ with
//   the value on our stack, where a receiver (or close) finds it.
//   recv: a parked sender -> take its value from its stack; closed -> report
//   closed; else park on recvq_ with raw storage a sender fills in.
//
// Buffered channels keep their values in ring_, which works without the
// lock. The fast paths:
//   send: no fiber parked on either queue -> push without the lock.
//   recv: no receiver parked -> pop without the lock.
// Everything else takes lock_ and behaves as Go's channel: a parked receiver
// gets the value handed straight to it, parked fibers are FIFO, a parked
// sender's value goes into the buffer as soon as there is room for it.
//
// Lost wake-ups. A receiver parks only after finding the ring empty, and a
// push may happen between its look and its park; a sender likewise. Each
// side closes the gap with a Dekker handshake, all four accesses seq_cst:
//   waiter (under lock_):  link itself into recvq_, publish() (store);
//                          then ring_.empty_seq_cst() (loads); non-empty:
//                          unlink and try again instead of parking.
//   lock-free push:        the CAS on the ring's tail (RMW); then
//                          recvq_.empty_seq_cst() (load); non-empty: take
//                          lock_ and settle().
// In the single total order of seq_cst operations either the waiter's
// publish comes first, so the pusher sees the waiter and settles, or the
// push's CAS comes first, so the waiter sees the value and does not park.
// Senders and lock-free pops are the mirror image (sendq_, full_seq_cst,
// the CAS on the ring's head). settle() runs with lock_ held and moves
// values until no parked receiver can be given a buffered value and no
// parked sender's value fits (C2).
//
// settle() claims a waiter before it knows whether the ring still has the
// value (or room) for it: a lock-free operation that looked at the queues
// before the waiter arrived may take it in between. A plain waiter then goes
// back to the front of its queue; a select cannot be un-claimed (another
// case may already have dropped its waiter), so it is woken with `retry`
// and runs again. Both are rare: settle() checks the ring first.
//
// Spinning. A blocking send (recv) that finds a buffered channel full
// (empty) and would leave its P idle by parking first watches the ring for a
// few microseconds while another P runs (spin_wait, runtime_internal::
// spin_may_help). In a producer/consumer pipeline across CPUs the other side
// usually makes room (data) within that time; parking instead would put the
// fiber to sleep, and its wake-up would land it on the other side's P, so
// producers and consumers end up taking turns on both CPUs, fighting over the
// ring's cache lines (measured: 4 producers x 4 consumers on 2 Ps, median
// 20 M msg/s without the spin, 37 M with it; bench/README.md).
//
// Close sets closed_ and the ring's close mark under lock_: later lock-free
// pushes fail, pushes already past their CAS finish (a pop waits for them),
// so settle() can then hand every buffered value to a parked receiver before
// the remaining receivers learn that the channel is closed.
//
// Non-blocking operations on an obviously full/empty channel take no lock.
// Each peek reads one word, a state the channel was really in at that
// instant; reporting "would block" is linearizable there. For recv we read
// "empty" first, then closed_: if not closed, the channel was open and
// empty at the first read.

#include "sync/internal/chan_core.h"

#include <cstdlib>
#include <new>

#include "runtime/internal/locks.h"
#include "runtime/internal/park.h"

namespace goro::sync_internal {

namespace {

constexpr char kSendClosed[] = "goro::Chan: send on closed channel";

// give_back returns a claimed waiter whose transfer fell through (see the top
// of this file).
void give_back(WaitQueue* q, Waiter* w, WakeList& wl) {
  if (w->select == nullptr) {
    q->push_front(w);
  } else {
    w->retry = true;
    wl.push(w);
  }
}

// A spin of kSpinPolls looks at the ring, kSpinPauses pause instructions
// apart: ~5 us on the Xeon we measured on (13 ns per pause), less on CPUs
// with a shorter pause. Looking rarely keeps the spinner from stealing the
// ring's cache lines from the fiber it waits for.
constexpr int kSpinPolls = 4;
constexpr int kSpinPauses = 100;

// spin_wait spins while `blocked()` holds and spinning may help; returns
// whether it stopped holding.
template <typename Pred>
bool spin_wait(Pred blocked) {
  if (!runtime_internal::spin_may_help()) return false;
  for (int i = 0; i < kSpinPolls; ++i) {
    for (int k = 0; k < kSpinPauses; ++k) __builtin_ia32_pause();
    if (!blocked()) return true;
  }
  return false;
}

}  // namespace

std::size_t ChanCore::alloc_align(const ElemOps* ops) {
  const std::size_t a = Ring::slot_align(ops);
  return a > alignof(ChanCore) ? a : alignof(ChanCore);
}

std::size_t ChanCore::header_size(const ElemOps* ops) {
  const std::size_t a = alloc_align(ops);
  return (sizeof(ChanCore) + a - 1) / a * a;
}

ChanCore* ChanCore::create(std::int64_t capacity, const ElemOps* ops) {
  if (capacity < 0) {
    throw std::invalid_argument("goro::Chan: negative capacity");
  }
  const std::size_t cap = static_cast<std::size_t>(capacity);
  const std::size_t stride = Ring::slot_stride(ops);
  if (cap > (std::size_t{1} << 40) / stride) {
    throw std::invalid_argument("goro::Chan: capacity too large");
  }
  const std::size_t head = header_size(ops);
  void* mem =
      ::operator new(head + cap * stride, std::align_val_t(alloc_align(ops)));
  return ::new (mem)
      ChanCore(cap, ops, static_cast<unsigned char*>(mem) + head);
}

void ChanCore::destroy() {
  // Sole owner: no lock needed, but take it so TSan sees the last writers'
  // history through the lock as well as through refs_.
  lock_.lock();
  if (cap_ != 0) ring_.destroy_all();
  lock_.unlock();
  const std::size_t align = alloc_align(ops_);
  this->~ChanCore();
  ::operator delete(this, std::align_val_t(align));
}

void ChanCore::park_unlock(Waiter* self, runtime_internal::WaitReason why) {
  runtime_internal::wait_unlock(self->fiber, &lock_, self->wake_word, why);
}

void ChanCore::settle(WakeList& wl) {
  for (bool progress = true; progress;) {
    const bool received = serve_from_ring(&recvq_, /*senders=*/false, wl);
    const bool sent = serve_from_ring(&sendq_, /*senders=*/true, wl);
    progress = received || sent;
  }
}

bool ChanCore::serve_from_ring(WaitQueue* q, bool senders, WakeList& wl) {
  bool served = false;
  while (!q->empty() &&
         !(senders ? ring_.full_relaxed() : ring_.empty_relaxed())) {
    Waiter* w = q->dequeue();
    if (w == nullptr) break;
    const Ring::Status st = senders ? ring_.push(w->elem) : ring_.pop(w->elem);
    if (st != Ring::Status::kOk) {
      give_back(q, w, wl);
      break;
    }
    w->success = true;
    wl.push(w);
    served = true;
  }
  return served;
}

void ChanCore::settle_unlocked() {
  WakeList wl;
  lock_.lock();
  settle(wl);
  lock_.unlock();
  wl.wake_all();
}

ChanCore::Try ChanCore::try_send_locked(void* src, WakeList& wl) {
  if (closed_.load(std::memory_order_relaxed)) return Try::kClosed;
  if (cap_ != 0 && (!recvq_.empty() || !sendq_.empty())) settle(wl);
  // Buffered: settle() left the ring empty if a receiver is still parked.
  if (Waiter* w = recvq_.dequeue()) {
    ops_->move(w->elem, src);
    w->success = true;
    wl.push(w);
    return Try::kDone;
  }
  // Not kClosed: the mark is set only under lock_, with closed_.
  if (cap_ != 0 && ring_.push(src) == Ring::Status::kOk) return Try::kDone;
  return Try::kWouldBlock;
}

ChanCore::Try ChanCore::try_recv_locked(void* dst, WakeList& wl) {
  if (cap_ == 0) {
    if (Waiter* w = sendq_.dequeue()) {
      ops_->move(dst, w->elem);
      w->success = true;
      wl.push(w);
      return Try::kDone;
    }
    return closed_.load(std::memory_order_relaxed) ? Try::kClosed
                                                   : Try::kWouldBlock;
  }
  // Parked receivers are served first (FIFO), and parked senders' values go
  // behind what is buffered; the pop takes the oldest value either way, and
  // may make room for one more.
  if (!recvq_.empty() || !sendq_.empty()) settle(wl);
  switch (ring_.pop(dst)) {
    case Ring::Status::kOk:
      if (!sendq_.empty()) settle(wl);
      return Try::kDone;
    case Ring::Status::kClosed:
      return Try::kClosed;
    default:
      return Try::kWouldBlock;
  }
}

// send and recv start at a cooperative preemption point, as Go's chansend
// and chanrecv do at their prologue: a loop of operations that never park
// (a closed channel, try_recv on an empty one, a producer the consumer keeps
// up with) must still give up its P when its slice is over, where
// asynchronous preemption is off (Options::async_preempt, TSan builds).
bool ChanCore::send(void* src, bool block) {
  runtime_internal::preempt_check();
  if (!block && !closed_.load(std::memory_order_relaxed) && full_relaxed()) {
    return false;
  }
  if (cap_ == 0) return send_unbuffered(src, block);
  for (bool spun = false;;) {
    if (!sendq_empty_relaxed() || !recvq_empty_relaxed()) break;
    const Ring::Status st = push_lock_free(src);
    if (st == Ring::Status::kOk) return true;
    if (st == Ring::Status::kClosed) throw ChanClosed(kSendClosed);
    if (!block) return false;
    if (spun || !spin_wait([this] {
          return ring_.full_relaxed() &&
                 !closed_.load(std::memory_order_relaxed);
        })) {
      break;
    }
    spun = true;
  }
  return send_slow(src, block);
}

// Unbuffered channels: Go's code, with nothing to settle.
bool ChanCore::send_unbuffered(void* src, bool block) {
  lock_.lock();
  if (closed_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    throw ChanClosed(kSendClosed);
  }
  if (Waiter* w = recvq_.dequeue()) {
    ops_->move(w->elem, src);
    w->success = true;
    lock_.unlock();
    wake(w);
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
  park_unlock(&self, runtime_internal::WaitReason::kChanSend);
  // Woken by a receiver (success) or by close (not delivered).
  if (!self.success) throw ChanClosed(kSendClosed);
  return true;
}

ChanCore::Recv ChanCore::recv_unbuffered(void* dst, bool block) {
  lock_.lock();
  if (Waiter* w = sendq_.dequeue()) {
    ops_->move(dst, w->elem);
    w->success = true;
    lock_.unlock();
    wake(w);
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
  park_unlock(&self, runtime_internal::WaitReason::kChanReceive);
  return self.success ? Recv::kReceived : Recv::kClosed;
}

// Buffered channels, when the fast path is not enough.

bool ChanCore::queue_to_park(WaitQueue* q, Waiter* self, void* elem,
                             WakeList& wl) {
  self->init_self();
  self->elem = elem;
  q->push_back(self);
  q->publish();
  const bool blocked =
      q == &sendq_ ? ring_.full_seq_cst() : ring_.empty_seq_cst();
  if (blocked && wl.empty()) return true;
  // A lock-free operation on the other end got in before it could see us,
  // or settle() left fibers to wake first (they may be the ones we would
  // wait for). Again.
  q->remove(self);
  if (!wl.empty()) {
    lock_.unlock();
    wl.wake_all();
    lock_.lock();
  }
  return false;
}

ChanCore::Try ChanCore::locked_op(void* elem, bool block, bool sending) {
  WakeList wl;
  Waiter self;
  lock_.lock();
  for (;;) {
    const Try t =
        sending ? try_send_locked(elem, wl) : try_recv_locked(elem, wl);
    if (t != Try::kWouldBlock || !block) {
      lock_.unlock();
      wl.wake_all();
      return t;
    }
    if (queue_to_park(sending ? &sendq_ : &recvq_, &self, elem, wl)) break;
  }
  park_unlock(&self, sending ? runtime_internal::WaitReason::kChanSend
                             : runtime_internal::WaitReason::kChanReceive);
  // Woken by a peer or settle() (success) or by close (not delivered).
  return self.success ? Try::kDone : Try::kClosed;
}

bool ChanCore::send_slow(void* src, bool block) {
  const Try t = locked_op(src, block, /*sending=*/true);
  if (t == Try::kClosed) throw ChanClosed(kSendClosed);
  return t == Try::kDone;
}

ChanCore::Recv ChanCore::recv(void* dst, bool block) {
  runtime_internal::preempt_check();  // see send
  if (!block && sendq_empty_relaxed() && (cap_ == 0 || ring_.empty_relaxed()) &&
      !closed_.load(std::memory_order_acquire)) {
    return Recv::kWouldBlock;
  }
  if (cap_ == 0) return recv_unbuffered(dst, block);
  for (bool spun = false;;) {
    // Parked senders need no lock to be served after us: their values go
    // behind the buffered ones.
    if (!recvq_empty_relaxed()) break;
    const Ring::Status st = pop_lock_free(dst);
    if (st == Ring::Status::kOk) return Recv::kReceived;
    // The pop read the marked tail (seq_cst): it sees everything the closer
    // did before closing.
    if (st == Ring::Status::kClosed) return Recv::kClosed;
    if (!block) {
      if (sendq_empty_relaxed()) return Recv::kWouldBlock;
      break;
    }
    if (spun || !spin_wait([this] {
          return ring_.empty_relaxed() && sendq_empty_relaxed() &&
                 !closed_.load(std::memory_order_relaxed);
        })) {
      break;
    }
    spun = true;
  }
  return recv_slow(dst, block);
}

ChanCore::Recv ChanCore::recv_slow(void* dst, bool block) {
  switch (locked_op(dst, block, /*sending=*/false)) {
    case Try::kDone:
      return Recv::kReceived;
    case Try::kClosed:
      return Recv::kClosed;
    case Try::kWouldBlock:
      break;
  }
  return Recv::kWouldBlock;
}

void ChanCore::close() {
  WakeList wl;
  lock_.lock();
  if (closed_.load(std::memory_order_relaxed)) {
    lock_.unlock();
    throw ChanClosed("goro::Chan: close of closed channel");
  }
  closed_.store(true, std::memory_order_release);
  if (cap_ != 0) {
    ring_.close();
    // Buffered values (also those of pushes still in flight) go to parked
    // receivers before the rest learn of the close.
    settle(wl);
  }
  // (C3): empty both queues; every waiter left learns success == false.
  while (Waiter* w = recvq_.dequeue()) {
    w->success = false;
    wl.push(w);
  }
  while (Waiter* w = sendq_.dequeue()) {
    w->success = false;
    wl.push(w);
  }
  lock_.unlock();
  wl.wake_all();
}

}  // namespace goro::sync_internal
