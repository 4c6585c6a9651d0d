// Copyright goro authors.
//
// goro::Context: cancellation and deadlines across fibers, Go's
// context.Context (without values).
//
//   auto [ctx, cancel] = goro::with_timeout(goro::Context::background(),
//                                           std::chrono::seconds(2));
//   goro::go([ctx = ctx, jobs] () mutable {
//     for (;;) {
//       bool stop = false;
//       goro::select(goro::recv_case(ctx.done(), [&] { stop = true; }),
//                    goro::recv_case(jobs, [&](auto j) { if (j) run(*j); }));
//       if (stop) return;  // ctx.err() says why
//     }
//   });
//   ...
//   cancel();  // always call it when done: it frees the context's resources
//
// A Context is a cheap copyable handle. Cancelling a context cancels every
// context derived from it (not its parent). with_deadline/with_timeout
// cancel automatically at the deadline (the earlier of the parent's and
// their own).
//
// Guarantees:
//   * done() is closed exactly once, when the context is cancelled; a
//     receive on it (or a select case) then completes at once. background()
//     is never cancelled: its done() is a nil channel, never ready in select.
//   * err() is OK until cancellation, then CancelledError("context
//     canceled") or DeadlineExceededError("context deadline exceeded"), and
//     never changes again.
//   * Memory ordering: everything done before a cancel (the call of the
//     CancelFunc, or the deadline's firing) is visible to a fiber that
//     observes done() closed or err() non-OK.
//
// Cost: one allocation per derived context; cancel is O(children).

#ifndef GORO_SYNC_CONTEXT_H_
#define GORO_SYNC_CONTEXT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "runtime/internal/duration.h"
#include "sync/chan.h"
#include "sync/timer.h"

namespace goro {

// The element of Context::done(); it is never sent, only closed.
struct Unit {};

class Context {
 public:
  // background: the root context, never cancelled, no deadline.
  static Context background();

  // done is closed when the context is cancelled (nil for background()).
  Chan<Unit> done() const;
  // err: OK, or why the context was cancelled.
  absl::Status err() const;
  // deadline, if the context has one.
  std::optional<TimePoint> deadline() const;

  struct State;  // internal

 private:
  friend std::pair<Context, std::function<void()>> with_deadline(
      const Context& parent, TimePoint d);
  friend std::pair<Context, std::function<void()>> with_cancel(
      const Context& parent);
  explicit Context(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::shared_ptr<State> s_;  // null: background
};

// A CancelFunc cancels its context (CancelledError); idempotent, any thread.
using CancelFunc = std::function<void()>;

// with_cancel: a child of `parent` cancelled by the returned CancelFunc or
// when the parent is.
std::pair<Context, CancelFunc> with_cancel(const Context& parent);

// with_deadline: as with_cancel, and cancelled with DeadlineExceededError at
// `d` (steady_clock). Precondition: a runtime is running.
std::pair<Context, CancelFunc> with_deadline(const Context& parent,
                                             TimePoint d);

// with_timeout is with_deadline(parent, now + timeout); a timeout beyond
// the clock's range (hours::max()) gives a deadline that never passes.
template <typename Rep, typename Period>
std::pair<Context, CancelFunc> with_timeout(
    const Context& parent, std::chrono::duration<Rep, Period> timeout) {
  return with_deadline(parent, runtime_internal::deadline_after(
                                   runtime_internal::saturating_ns(timeout)));
}

}  // namespace goro

#endif  // GORO_SYNC_CONTEXT_H_
