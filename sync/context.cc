// Copyright goro authors.
//
// Contexts form a tree: a parent holds its live children (shared_ptr) until
// they are cancelled; a child holds its parent weakly. cancel() marks the
// context, closes done, and then -- without holding its own lock -- cancels
// the children and unlinks itself from the parent, so locks are only ever
// held one at a time.

#include "sync/context.h"

#include <algorithm>
#include <vector>

#include "sync/internal/spin_lock.h"

namespace goro {

struct Context::State : std::enable_shared_from_this<Context::State> {
  sync_internal::SpinLock lock;
  Chan<Unit> done{0};
  absl::Status err ABSL_GUARDED_BY(lock);
  bool cancelled ABSL_GUARDED_BY(lock) = false;
  std::weak_ptr<State> parent;
  std::vector<std::shared_ptr<State>> children ABSL_GUARDED_BY(lock);
  std::optional<TimePoint> deadline;
  // with_deadline only. Set after new_child linked the state into its
  // parent, whose cancel() may be cancelling it meanwhile: hence the lock.
  sync_internal::TimerState* timer ABSL_GUARDED_BY(lock) = nullptr;

  ~State() {
    if (timer != nullptr) {
      sync_internal::timer_stop(timer);
      sync_internal::timer_unref(timer);
    }
  }

  void cancel(const absl::Status& why) {
    std::vector<std::shared_ptr<State>> kids;
    sync_internal::TimerState* t;  // set once, freed by ~State only
    {
      sync_internal::SpinLockGuard l(&lock);
      if (cancelled) return;
      cancelled = true;
      err = why;
      kids.swap(children);
      t = timer;
    }
    done.close();  // wakes every receiver
    for (auto& k : kids) k->cancel(why);
    if (auto p = parent.lock()) {
      sync_internal::SpinLockGuard l(&p->lock);
      auto& c = p->children;
      c.erase(std::remove_if(c.begin(), c.end(),
                             [this](const std::shared_ptr<State>& x) {
                               return x.get() == this;
                             }),
              c.end());
    }
    if (t != nullptr) sync_internal::timer_stop(t);
  }
};

Context Context::background() { return Context(nullptr); }

Chan<Unit> Context::done() const { return s_ ? s_->done : Chan<Unit>(); }

absl::Status Context::err() const {
  if (!s_) return absl::OkStatus();
  sync_internal::SpinLockGuard l(&s_->lock);
  return s_->err;
}

std::optional<TimePoint> Context::deadline() const {
  return s_ ? s_->deadline : std::nullopt;
}

namespace {

std::shared_ptr<Context::State> new_child(
    const std::shared_ptr<Context::State>& parent) {
  auto s = std::make_shared<Context::State>();
  if (parent) {
    s->parent = parent;
    s->deadline = parent->deadline;
    absl::Status parent_err;
    {
      sync_internal::SpinLockGuard l(&parent->lock);
      if (parent->cancelled) {
        parent_err = parent->err;
      } else {
        parent->children.push_back(s);
      }
    }
    if (!parent_err.ok()) s->cancel(parent_err);
  }
  return s;
}

}  // namespace

std::pair<Context, CancelFunc> with_cancel(const Context& parent) {
  auto s = new_child(parent.s_);
  std::weak_ptr<Context::State> w = s;
  return {Context(s), [w] {
            if (auto p = w.lock())
              p->cancel(absl::CancelledError("context canceled"));
          }};
}

std::pair<Context, CancelFunc> with_deadline(const Context& parent,
                                             TimePoint d) {
  auto s = new_child(parent.s_);
  std::weak_ptr<Context::State> w = s;
  if (!s->deadline || d < *s->deadline) {
    s->deadline = d;
    // Compared before subtracting: d - now overflows for a d long past
    // (time_point::min()), and wrapped it would be a deadline far ahead.
    const auto now = std::chrono::steady_clock::now();
    const auto left =
        d > now ? d - now : std::chrono::steady_clock::duration::zero();
    if (left <= left.zero()) {
      s->cancel(absl::DeadlineExceededError("context deadline exceeded"));
    } else {
      sync_internal::TimerState* t = sync_internal::timer_new(0, [w] {
        if (auto p = w.lock()) {
          p->cancel(absl::DeadlineExceededError("context deadline exceeded"));
        }
      });
      {
        sync_internal::SpinLockGuard l(&s->lock);
        s->timer = t;
      }
      sync_internal::timer_arm(t, sync_internal::to_ns(left), 0);
    }
  }
  return {Context(s), [w] {
            if (auto p = w.lock())
              p->cancel(absl::CancelledError("context canceled"));
          }};
}

}  // namespace goro
