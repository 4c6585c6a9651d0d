// Copyright goro authors.
//
// goro::Once: run an initialisation exactly once, Go's sync.Once.
//
//   goro::Once once;
//   Config* config;
//   void use() {
//     once.call([] { config = load_config(); });
//     ...  // config is ready here, in every fiber
//   }
//
// Guarantees:
//   * Of all call(f) calls on one Once, exactly one runs its f (the first);
//     the others park until it has returned, then return without running
//     theirs.
//   * If f throws, the exception propagates from that call and the Once is
//     not done: the next call runs its f (as std::call_once; Go's Once would
//     count the panicking call as done).
//   * Memory ordering: everything f did is visible to every call() after it
//     returns.
//   * A call() from inside f on the same Once deadlocks (as in Go).
//
// Cost: after the first call, one atomic load (acquire). Before that, the
// callers take a goro::Mutex.

#ifndef GORO_SYNC_ONCE_H_
#define GORO_SYNC_ONCE_H_

#include <atomic>
#include <functional>
#include <mutex>
#include <utility>

#include "sync/mutex.h"

namespace goro {

class Once {
 public:
  Once() = default;
  Once(const Once&) = delete;
  Once& operator=(const Once&) = delete;

  // call runs f() if no call on this Once has completed yet (see above).
  template <typename F>
  void call(F&& f) {
    // load-acquire: pairs with the store-release after f ran.
    if (done_.load(std::memory_order_acquire)) return;
    std::lock_guard<Mutex> l(mu_);
    if (done_.load(std::memory_order_relaxed)) return;
    std::invoke(std::forward<F>(f));
    done_.store(true, std::memory_order_release);
  }

  // done reports whether a call() has completed.
  bool done() const { return done_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> done_{false};  // written under mu_
  Mutex mu_;
};

}  // namespace goro

#endif  // GORO_SYNC_ONCE_H_
