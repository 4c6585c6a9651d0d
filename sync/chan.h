// Copyright goro authors.
//
// goro::Chan<T>: Go's channels for fibers.
//
//   goro::Chan<int> ch(16);          // capacity 16; 0 is unbuffered
//   goro::go([ch] {                  // copies share one channel
//     for (int i = 0; i < 100; ++i) ch.send(i);
//     ch.close();
//   });
//   for (int v : ch) use(v);         // ends once closed and drained
//
// A Chan<T> is a cheap handle (one pointer, reference counted): copies share
// one channel, which lives until the last handle goes. Like Go's channel
// value or a std::shared_ptr, constness is about the handle, not the
// channel: every operation (send, recv, close, range-for, ...) is callable
// on a const Chan, so a lambda that captures a Chan by value needs no
// `mutable`. Only assignment changes which channel a handle names. A
// default-constructed Chan is nil: select never chooses its cases; any other
// operation on it throws std::logic_error. T may be move-only; it must be
// nothrow move constructible (moves happen inside the channel's critical
// sections).
//
// Guarantees (as Go):
//   * Nothing is lost or duplicated: a value passed to a send that returns is
//     received exactly once (or stays in the buffer until the channel is
//     destroyed); a send that throws delivered nothing.
//   * FIFO: values from one sender arrive in the order sent; parked senders
//     and receivers are served first come, first served.
//   * Unbuffered (capacity 0): a send completes only when a receiver takes
//     the value, which goes straight from the sender's stack to the
//     receiver's. Buffered: a send completes when the value is in the buffer
//     or handed straight to a parked receiver.
//   * A parked fiber woken by a channel operation goes into the waker's P's
//     runnext slot: it runs next, on the waker's thread.
//   * Memory ordering: everything a fiber did before a send is visible to the
//     fiber whose receive gets that value, after the receive returns; and
//     everything done before close() is visible to a receive that reports the
//     channel closed.
//
// Blocking: send and recv park the calling fiber (never the OS thread) while
// they cannot proceed. Called from a plain thread (not a fiber), they block
// the thread instead (futex), so threads and fibers can talk over a channel.
//
// A channel may outlive goro::run, and plain threads may use it while run
// ends: fibers parked on it are then abandoned (run.h). An operation that
// takes an abandoned fiber's place completes as if that fiber had taken part
// (a value sent goes to a receiver that never runs; close wakes it, and it
// never runs); a plain thread waiting for a peer that will never come stays
// blocked, as a goroutine would. No operation touches freed memory.
//
// Errors: goro::ChanClosed (a std::logic_error) from a send on a closed
// channel -- including a send that was parked when the channel was closed;
// its value is then not delivered -- and from closing a closed channel.
// std::invalid_argument for a negative capacity.
//
// Cost: no allocation after construction (one for the channel and its
// buffer: capacity * (8 + sizeof(T)) bytes, rounded up to T's alignment).
// Unbuffered: one SpinLock acquisition per operation (held with preemption
// off, for a few dozen instructions). Buffered: a send or receive that
// finds no fiber parked to serve or to queue behind takes no lock (one CAS
// on a lock-free ring); otherwise one lock acquisition. A blocking send
// (recv) on a full (empty) buffered channel may first spin for a few
// microseconds, only while another P runs fibers and the caller's P has
// nothing else to run. try_send/try_recv on an obviously full/empty channel
// take no lock. A hand-off to a parked fiber is one ready() (no system call
// when it goes to runnext).

#ifndef GORO_SYNC_CHAN_H_
#define GORO_SYNC_CHAN_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "sync/internal/chan_core.h"

namespace goro {

// The outcome of Chan<T>::try_recv_status() (Go's `v, ok := <-c` inside a
// select with a default case).
enum class RecvStatus {
  kReceived,  // a value was received
  kEmpty,     // nothing to receive now; the channel is open
  kClosed,    // the channel is closed and drained: nothing will ever come
};

// RecvAttempt<T>: a status and, for kReceived only, the value.
template <typename T>
struct RecvAttempt {
  RecvStatus status;
  std::optional<T> value;  // engaged iff status == RecvStatus::kReceived

  bool received() const { return status == RecvStatus::kReceived; }
  bool empty() const { return status == RecvStatus::kEmpty; }
  bool closed() const { return status == RecvStatus::kClosed; }
};

namespace sync_internal {

// Raw storage for one T that a channel may construct a value into.
template <typename T>
struct Slot {
  union {
    T value;
  };
  Slot() {}
  ~Slot() {}
  // take moves the value out into an optional and destroys the slot's copy.
  std::optional<T> take() {
    std::optional<T> r(std::move(value));
    value.~T();
    return r;
  }
};

}  // namespace sync_internal

template <typename T>
class Chan {
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "goro::Chan<T>: T must be nothrow move constructible");
  static_assert(!std::is_reference_v<T>, "goro::Chan<T>: T is a reference");

 public:
  using value_type = T;

  // A nil channel (see above).
  Chan() = default;
  // A channel with room for `capacity` values (0: unbuffered). Throws
  // std::invalid_argument if capacity < 0.
  explicit Chan(std::int64_t capacity)
      : core_(sync_internal::ChanCore::create(capacity,
                                              &sync_internal::kElemOps<T>)) {}

  Chan(const Chan& o) noexcept : core_(o.core_) {
    if (core_ != nullptr) core_->ref();
  }
  Chan(Chan&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  Chan& operator=(Chan o) noexcept {
    std::swap(core_, o.core_);
    return *this;
  }
  ~Chan() {
    if (core_ != nullptr) core_->unref();
  }

  // send sends `v`, parking until a receiver takes it (unbuffered) or there
  // is room in the buffer. Throws ChanClosed (see above).
  void send(T v) const { core()->send(&v, true); }

  // recv receives the next value, parking until there is one; an empty
  // optional once the channel is closed and drained.
  std::optional<T> recv() const { return receive(/*block=*/true); }

  // try_send sends `v` if that can be done without parking: returns false
  // (and leaves `v` untouched) when the buffer is full or, unbuffered, no
  // receiver is parked. Throws ChanClosed on a closed channel.
  bool try_send(T&& v) const { return core()->send(&v, false); }
  bool try_send(const T& v) const {
    T copy(v);
    return core()->send(&copy, false);
  }

  // try_recv receives a value if one is ready (buffered, or a parked
  // sender). Empty optional otherwise -- also when closed and drained; use
  // try_recv_status() to tell the two apart.
  std::optional<T> try_recv() const { return receive(/*block=*/false); }

  // try_recv_status receives a value if one is ready, like try_recv, and
  // says why when none is: kEmpty (open, nothing ready now) or kClosed
  // (closed and drained; every later receive reports the same). Go's
  //   select { case v, ok := <-c: ...; default: ... }
  // A closed channel with values still buffered reports kReceived until it
  // is drained. Never parks. The status is exact at one instant inside the
  // call (the same check a blocking recv makes before it parks), so kClosed
  // is final and, as for recv, everything done before close() is visible
  // after it. Cost: that of try_recv (no lock on an obviously empty open
  // channel).
  RecvAttempt<T> try_recv_status() const {
    sync_internal::Slot<T> s;
    switch (core()->recv(&s.value, false)) {
      case sync_internal::ChanCore::Recv::kReceived:
        return {RecvStatus::kReceived, s.take()};
      case sync_internal::ChanCore::Recv::kClosed:
        return {RecvStatus::kClosed, std::nullopt};
      case sync_internal::ChanCore::Recv::kWouldBlock:
        break;
    }
    return {RecvStatus::kEmpty, std::nullopt};
  }

  // close closes the channel: receivers drain the buffer, then get empty
  // optionals; parked senders throw ChanClosed. Throws ChanClosed if already
  // closed.
  void close() const { core()->close(); }

  // Values in the buffer (racy by nature; 0 for unbuffered channels).
  std::size_t size() const { return core()->size(); }
  std::size_t capacity() const { return core()->capacity(); }
  // closed reports whether close() has been called (racy by nature).
  bool closed() const { return core()->closed(); }

  // Whether this is a non-nil channel; two handles are equal iff they share
  // a channel.
  explicit operator bool() const { return core_ != nullptr; }
  friend bool operator==(const Chan& a, const Chan& b) {
    return a.core_ == b.core_;
  }

  // Range-for: receives until the channel is closed and drained.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = T*;
    using reference = T&;
    iterator() = default;
    T& operator*() { return *cur_; }
    T* operator->() { return &*cur_; }
    iterator& operator++() {
      cur_ = ch_->recv();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return !it.cur_.has_value();
    }

   private:
    friend class Chan;
    explicit iterator(const Chan* ch) : ch_(ch), cur_(ch->recv()) {}
    const Chan* ch_ = nullptr;
    std::optional<T> cur_;
  };
  // begin receives the first value (parking, like recv). On a const Chan too.
  iterator begin() const { return iterator(this); }
  std::default_sentinel_t end() const { return {}; }

  // For select (sync/select.h).
  sync_internal::ChanCore* core_for_select() const { return core_; }

 private:
  sync_internal::ChanCore* core() const {
    if (core_ == nullptr) throw std::logic_error("goro::Chan: nil channel");
    return core_;
  }

  std::optional<T> receive(bool block) const {
    sync_internal::Slot<T> s;
    if (core()->recv(&s.value, block) ==
        sync_internal::ChanCore::Recv::kReceived) {
      return s.take();
    }
    return std::nullopt;
  }

  sync_internal::ChanCore* core_ = nullptr;
};

}  // namespace goro

#endif  // GORO_SYNC_CHAN_H_
