// Copyright goro authors.
//
// The netpoller (see poll.h for the slot protocol and its memory ordering)
// and its wiring into the scheduler's hooks.

#include "net/internal/poll.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <mutex>

#include "absl/status/statusor.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::net_internal {

using runtime_internal::Fiber;
using runtime_internal::MutexLock;

std::atomic<void (*)(PollDesc*, Mode)> g_test_before_wait{nullptr};

namespace {

// One runtime's epoll instance and its wake-up eventfd.
struct Poller {
  int epfd = -1;
  int evfd = -1;
  std::uint64_t epoch = 0;
  // A break is pending (written to evfd and not yet read): later breaks
  // skip the write (Go's netpollWakeSig). Exchange by breakers, store by
  // the poller once it read the eventfd; acq_rel/release.
  std::atomic<bool> wake_sig{false};
};

// The epoll data word of the eventfd (no PollDesc has this address).
constexpr std::uint64_t kBreakData = 1;
constexpr int kTagShift = 48;
constexpr std::uint64_t kPtrMask = (std::uint64_t{1} << kTagShift) - 1;

// Guards the creation and teardown of Pollers and every use of their fds
// outside the pollers' own epoll_wait (registration, break writes), so that
// no write reaches an fd number that teardown closed and the kernel reused.
// Held briefly; never across a park.
std::mutex g_poller_mu;
// The running runtime's Poller (always g_the_poller), or null. Written
// under g_poller_mu; read anywhere (acquire: the Poller's fields were set
// before publication). The one Poller object is reused by every runtime
// (one runs at a time) and never freed, so a late reader's pointer stays
// valid; on_stop closes its fds once no M runs.
Poller g_the_poller;
std::atomic<Poller*> g_poller{nullptr};

std::atomic<std::uint64_t> g_epoll_ctl_calls{0};
std::atomic<bool> g_have_pwait2{true};

// The type-stable descriptor pool. Guards g_free; chunks are never freed.
runtime_internal::Mutex g_pool_mu;
PollDesc* g_free ABSL_GUARDED_BY(g_pool_mu) = nullptr;
constexpr int kChunk = 256;

PollDesc* pd_alloc() {
  MutexLock l(&g_pool_mu);
  if (g_free == nullptr) {
    auto* chunk = new PollDesc[kChunk];
    for (int i = 0; i < kChunk; ++i) {
      chunk[i].next_free = g_free;
      g_free = &chunk[i];
    }
  }
  PollDesc* pd = g_free;
  g_free = pd->next_free;
  pd->next_free = nullptr;
  return pd;
}

void pd_free(PollDesc* pd) {
  MutexLock l(&g_pool_mu);
  pd->next_free = g_free;
  g_free = pd;
}

std::atomic<std::uintptr_t>* slot_of(PollDesc* pd, Mode mode) {
  return mode == Mode::kRead ? &pd->rg : &pd->wg;
}

std::atomic<std::int64_t>* deadline_of(PollDesc* pd, Mode mode) {
  return mode == Mode::kRead ? &pd->rd : &pd->wd;
}

// Ends the wait in `mode` (Go's netpollunblock). ioready: the direction is
// ready (the poller), so readiness is recorded for a later waiter; else
// (close, deadline) only a waiter is woken. Returns the parked fiber whose
// ready() the caller now owns, or null.
Fiber* unblock(PollDesc* pd, Mode mode, bool ioready) {
  std::atomic<std::uintptr_t>* slot = slot_of(pd, mode);
  for (;;) {
    // seq_cst: the second half of the closer's / deadline's Dekker pair.
    std::uintptr_t old = slot->load(std::memory_order_seq_cst);
    if (old == kReady) return nullptr;
    if (old == kNil && !ioready) return nullptr;
    const std::uintptr_t next = ioready ? kReady : kNil;
    if (slot->compare_exchange_weak(old, next, std::memory_order_seq_cst)) {
      if (old == kNil || old == kWait) return nullptr;  // nobody parked yet
      runtime_internal::io_waiters_add(-1);
      return reinterpret_cast<Fiber*>(old);
    }
  }
}

struct Commit {
  std::atomic<std::uintptr_t>* slot;
  Fiber* self;
};

// The park commit (on the next context, the fiber off its stack): publish
// the fiber in its slot unless readiness or a close came meanwhile (the
// slot is then no longer kWait and the fiber is not parked). After a
// successful CAS the waker owns the fiber: `c` (on its stack) is not
// touched again.
bool commit_wait(void* arg) {
  auto* c = static_cast<Commit*>(arg);
  std::atomic<std::uintptr_t>* slot = c->slot;
  const auto self = reinterpret_cast<std::uintptr_t>(c->self);
  runtime_internal::io_waiters_add(1);
  std::uintptr_t expected = kWait;
  if (slot->compare_exchange_strong(expected, self,
                                    std::memory_order_acq_rel)) {
    return true;
  }
  runtime_internal::io_waiters_add(-1);
  return false;
}

// Go's netpollblock: returns true if the direction became ready, false if
// the wait ended for another reason (the caller checks which).
bool block(PollDesc* pd, Mode mode, Fiber* self) {
  std::atomic<std::uintptr_t>* slot = slot_of(pd, mode);
  for (;;) {
    std::uintptr_t old = kReady;
    if (slot->compare_exchange_strong(old, kNil, std::memory_order_acq_rel)) {
      return true;  // readiness recorded while nobody waited
    }
    if (old == kNil) {
      if (auto* hook = g_test_before_wait.load(std::memory_order_relaxed)) {
        hook(pd, mode);
      }
      // seq_cst: the first half of the Dekker pair with evict/deadlines.
      if (slot->compare_exchange_strong(old, kWait,
                                        std::memory_order_seq_cst)) {
        break;
      }
      continue;
    }
    runtime_internal::fatal(
        "net: two fibers wait to %s the same socket at once",
        mode == Mode::kRead ? "read" : "write");
  }
  // Re-check after publishing kWait: a close or an expiry that stored its
  // flag before our CAS did not see us; we see it here (poll.h).
  if (check(pd, mode) == PollErr::kNone) {
    Commit c{slot, self};
    runtime_internal::park(commit_wait, &c,
                           runtime_internal::WaitReason::kIOWait);
  }
  const std::uintptr_t old = slot->exchange(kNil, std::memory_order_acq_rel);
  if (old > kWait) runtime_internal::fatal("net: corrupted wait slot");
  return old == kReady;
}

// A plain thread's wait: poll(2) on the fd in slices (poll.h).
PollErr thread_wait(PollDesc* pd, Mode mode) {
  for (;;) {
    if (PollErr e = check(pd, mode); e != PollErr::kNone) return e;
    const std::int64_t d =
        deadline_of(pd, mode)->load(std::memory_order_seq_cst);
    const std::int64_t now = runtime_internal::mono_now_ns();
    if (d > 0 && d <= now) return PollErr::kTimeout;
    std::int64_t slice = kThreadPollSlice;
    if (d > 0) slice = std::min(slice, d - now);
    timespec ts{static_cast<time_t>(slice / 1'000'000'000),
                static_cast<long>(slice % 1'000'000'000)};
    pollfd p{pd->fd,
             static_cast<short>(mode == Mode::kRead ? (POLLIN | POLLRDHUP)
                                                    : POLLOUT),
             0};
    const int r = ::ppoll(&p, 1, &ts, nullptr);
    if (r > 0) return PollErr::kNone;
  }
}

void expire(PollDesc* pd, Mode mode) {
  Fiber* f = nullptr;
  {
    MutexLock l(&pd->lock);
    std::atomic<std::int64_t>* d = deadline_of(pd, mode);
    const std::int64_t v = d->load(std::memory_order_relaxed);
    // Cleared, already expired, or moved later since this timer was armed
    // (a set_deadline that lost the race with the firing): nothing to do.
    if (v <= 0 || v > runtime_internal::mono_now_ns()) return;
    d->store(-1, std::memory_order_seq_cst);
    f = unblock(pd, mode, false);
  }
  if (f != nullptr) runtime_internal::ready(f);
}

void fire_read(void* arg) { expire(static_cast<PollDesc*>(arg), Mode::kRead); }
void fire_write(void* arg) {
  expire(static_cast<PollDesc*>(arg), Mode::kWrite);
}

// The running runtime's Poller (created on first use). Caller holds
// g_poller_mu.
absl::StatusOr<Poller*> poller_locked(std::uint64_t epoch) {
  Poller* pl = g_poller.load(std::memory_order_acquire);
  if (pl != nullptr && pl->epoch == epoch) return pl;
  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return absl::ErrnoToStatus(errno, "netpoll: epoll_create1");
  const int evfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd < 0) {
    const int e = errno;
    ::close(epfd);
    return absl::ErrnoToStatus(e, "netpoll: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: stays ready until read
  ev.data.u64 = kBreakData;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) != 0) {
    const int e = errno;
    ::close(epfd);
    ::close(evfd);
    return absl::ErrnoToStatus(e, "netpoll: epoll_ctl");
  }
  pl = &g_the_poller;
  pl->wake_sig.store(false, std::memory_order_relaxed);
  pl->epfd = epfd;
  pl->evfd = evfd;
  pl->epoch = epoch;
  g_poller.store(pl, std::memory_order_release);
  return pl;
}

void netpoll_break() {
  Poller* pl = g_poller.load(std::memory_order_acquire);
  if (pl == nullptr || pl->wake_sig.exchange(true, std::memory_order_acq_rel)) {
    return;  // no poller, or a wake-up is already on its way
  }
  std::lock_guard<std::mutex> g(g_poller_mu);
  if (g_poller.load(std::memory_order_relaxed) != pl) return;
  const std::uint64_t one = 1;
  ssize_t r;
  do {
    r = ::write(pl->evfd, &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
}

bool netpoll_inited() {
  return g_poller.load(std::memory_order_relaxed) != nullptr;
}

void on_stop(runtime_internal::Sched* s) {
  std::lock_guard<std::mutex> g(g_poller_mu);
  Poller* pl = g_poller.load(std::memory_order_relaxed);
  if (pl == nullptr || pl->epoch != s->epoch) return;
  ::close(pl->epfd);
  ::close(pl->evfd);
  g_poller.store(nullptr, std::memory_order_release);
}

struct Register {
  Register() {
    runtime_internal::g_hooks.netpoll = netpoll;
    runtime_internal::g_hooks.netpoll_break = netpoll_break;
    runtime_internal::g_hooks.netpoll_inited = netpoll_inited;
    runtime_internal::g_hooks.on_stop = on_stop;
  }
} g_register;

}  // namespace

absl::StatusOr<PollDesc*> open(int fd) {
  const std::uint64_t epoch = runtime_internal::runtime_epoch();
  if (epoch == 0) {
    return absl::FailedPreconditionError("no goro runtime is running");
  }
  PollDesc* pd = pd_alloc();
  std::uint32_t seq;
  {
    MutexLock l(&pd->lock);
    pd->fd = fd;
    pd->epoch = epoch;
    pd->rg.store(kNil, std::memory_order_relaxed);
    pd->wg.store(kNil, std::memory_order_relaxed);
    pd->closing.store(false, std::memory_order_relaxed);
    pd->rd.store(0, std::memory_order_relaxed);
    pd->wd.store(0, std::memory_order_relaxed);
    pd->peer.store(nullptr, std::memory_order_relaxed);
    pd->sent.store(0, std::memory_order_relaxed);
    pd->received.store(0, std::memory_order_relaxed);
    seq = pd->seq.load(std::memory_order_relaxed);
    // Release: publishes the descriptor (its construction and the resets
    // above) to the poller, whose acquire load of seq comes after the
    // kernel hands it our event (ThreadSanitizer cannot see that edge
    // through epoll).
    pd->seq.store(seq, std::memory_order_release);
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = reinterpret_cast<std::uint64_t>(pd) |
                (std::uint64_t{seq & 0xffff} << kTagShift);
  int err = 0;
  {
    std::lock_guard<std::mutex> g(g_poller_mu);
    absl::StatusOr<Poller*> pl = poller_locked(epoch);
    if (!pl.ok()) {
      close(pd);
      return pl.status();
    }
    g_epoll_ctl_calls.fetch_add(1, std::memory_order_relaxed);
    if (::epoll_ctl((*pl)->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) err = errno;
  }
  if (err != 0) {
    close(pd);
    return absl::ErrnoToStatus(err, "netpoll: epoll_ctl");
  }
  return pd;
}

// Disarms the deadline timers. Once the descriptor's runtime has ended its
// timer heaps are gone with it: the timers are only forgotten then.
void stop_timers(PollDesc* pd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pd->lock) {
  if (pd->epoch == runtime_internal::runtime_epoch()) {
    runtime_internal::timer_stop(&pd->rt);
    runtime_internal::timer_stop(&pd->wt);
  } else {
    pd->rt = runtime_internal::Timer{};
    pd->wt = runtime_internal::Timer{};
  }
}

void close(PollDesc* pd) {
  {
    MutexLock l(&pd->lock);
    stop_timers(pd);
    // Events still in flight for this fd carry the old number: dropped.
    pd->seq.store(pd->seq.load(std::memory_order_relaxed) + 1,
                  std::memory_order_release);
    pd->fd = -1;
    pd->rd.store(0, std::memory_order_relaxed);
    pd->wd.store(0, std::memory_order_relaxed);
    pd->peer.store(nullptr, std::memory_order_relaxed);
  }
  pd_free(pd);
}

void link_peers(PollDesc* a, PollDesc* b) {
  a->peer_seq.store(b->seq.load(std::memory_order_relaxed),
                    std::memory_order_relaxed);
  b->peer_seq.store(a->seq.load(std::memory_order_relaxed),
                    std::memory_order_relaxed);
  // b first: b may be in use already, a is not (poll.h). A poller that sees
  // a linked (and so may drop a's events as stale) then also sees b linked
  // to it, or b's writer saw the link: either way b's writes hand off.
  b->peer.store(a, std::memory_order_seq_cst);
  a->peer.store(b, std::memory_order_seq_cst);
}

namespace {

// pd's peer, if linked and not recycled since. The check can race a
// recycle; the worst that follows is a spurious wake-up of the descriptor's
// next user, which it survives (top of poll.h).
PollDesc* live_peer(PollDesc* pd) {
  PollDesc* q = pd->peer.load(std::memory_order_acquire);
  if (q == nullptr || q->seq.load(std::memory_order_acquire) !=
                          pd->peer_seq.load(std::memory_order_relaxed)) {
    return nullptr;
  }
  return q;
}

}  // namespace

void on_written(PollDesc* pd, std::size_t n) {
  // Before the hand-off: see "Stale events" in poll.h.
  pd->sent.store(pd->sent.load(std::memory_order_relaxed) + n,
                 std::memory_order_seq_cst);
  PollDesc* q = live_peer(pd);
  if (q == nullptr) return;
  if (Fiber* f = unblock(q, Mode::kRead, true)) {
    runtime_internal::ready_handoff(f);
  }
}

void evict(PollDesc* pd) {
  Fiber* rf;
  Fiber* wf;
  {
    MutexLock l(&pd->lock);
    // seq_cst: the first half of the closer's Dekker pair (poll.h).
    pd->closing.store(true, std::memory_order_seq_cst);
    stop_timers(pd);
    rf = unblock(pd, Mode::kRead, false);
    wf = unblock(pd, Mode::kWrite, false);
  }
  if (rf != nullptr) runtime_internal::ready(rf);
  if (wf != nullptr) runtime_internal::ready(wf);
}

PollErr check(PollDesc* pd, Mode mode) {
  if (pd->closing.load(std::memory_order_seq_cst)) return PollErr::kClosing;
  if (deadline_of(pd, mode)->load(std::memory_order_seq_cst) < 0) {
    return PollErr::kTimeout;
  }
  return PollErr::kNone;
}

PollErr wait(PollDesc* pd, Mode mode) {
  Fiber* self = runtime_internal::current_fiber();
  if (self == nullptr) return thread_wait(pd, mode);
  if (PollErr e = check(pd, mode); e != PollErr::kNone) return e;
  while (!block(pd, mode, self)) {
    if (PollErr e = check(pd, mode); e != PollErr::kNone) return e;
  }
  return PollErr::kNone;
}

void set_deadline(PollDesc* pd, std::int64_t when, bool read, bool write) {
  Fiber* woken[2] = {nullptr, nullptr};
  {
    MutexLock l(&pd->lock);
    const std::int64_t now = runtime_internal::mono_now_ns();
    for (int i = 0; i < 2; ++i) {
      if (!(i == 0 ? read : write)) continue;
      const Mode mode = i == 0 ? Mode::kRead : Mode::kWrite;
      runtime_internal::Timer* t = i == 0 ? &pd->rt : &pd->wt;
      std::atomic<std::int64_t>* d = deadline_of(pd, mode);
      runtime_internal::timer_stop(t);
      if (when == 0) {
        d->store(0, std::memory_order_seq_cst);
      } else if (when <= now) {
        d->store(-1, std::memory_order_seq_cst);
        woken[i] = unblock(pd, mode, false);
      } else {
        d->store(when, std::memory_order_seq_cst);
        t->when = when;
        t->fire = i == 0 ? fire_read : fire_write;
        t->arg = pd;
        runtime_internal::timer_start(t);
      }
    }
  }
  for (Fiber* f : woken) {
    if (f != nullptr) runtime_internal::ready(f);
  }
}

namespace {

// An EPOLLIN of a linked end for bytes it has read already ("Stale events",
// poll.h).
bool stale_read_event(PollDesc* pd) {
  PollDesc* q = live_peer(pd);
  return q != nullptr && pd->received.load(std::memory_order_seq_cst) ==
                             q->sent.load(std::memory_order_seq_cst);
}

// Readies the waiters of n epoll events into out[k...]; returns the new k.
// *broke: the eventfd was among them (netpoll_break).
int take_events(Poller* pl, const epoll_event* evs, int n, Fiber** out, int k,
                bool* broke) {
  for (int i = 0; i < n; ++i) {
    const std::uint64_t data = evs[i].data.u64;
    if (data == kBreakData) {
      std::uint64_t v;
      (void)!::read(pl->evfd, &v, sizeof(v));
      pl->wake_sig.store(false, std::memory_order_release);
      *broke = true;
      continue;
    }
    auto* pd = reinterpret_cast<PollDesc*>(data & kPtrMask);
    if ((pd->seq.load(std::memory_order_acquire) & 0xffff) !=
        (data >> kTagShift)) {
      continue;  // an event for a closed (and maybe reused) socket
    }
    std::uint32_t e = evs[i].events;
    if ((e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0 && (e & EPOLLIN) &&
        stale_read_event(pd)) {
      e &= ~static_cast<std::uint32_t>(EPOLLIN);
    }
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      if (Fiber* f = unblock(pd, Mode::kRead, true)) out[k++] = f;
    }
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
      if (Fiber* f = unblock(pd, Mode::kWrite, true)) out[k++] = f;
    }
  }
  return k;
}

// Non-blocking polls drain at most this many batches (netpoll_with).
constexpr int kMaxDrainRounds = 16;

}  // namespace

// The event array is sized by the caller's batch: a small batch is polled
// from a preempted fiber's stack (yield_impl), whose frames must fit the
// preemption's allowance (kPreemptFrames, runtime/internal/stack.h).
template <int kMaxEvents>
__attribute__((noinline)) int netpoll_with(Poller* pl, std::int64_t until_ns,
                                           Fiber** out, int cap) {
  epoll_event evs[kMaxEvents];
  const int max_events = std::min(kMaxEvents, cap / 2);
  for (;;) {
    std::int64_t wait_ns = 0;
    if (until_ns < 0) {
      wait_ns = -1;
    } else if (until_ns > 0) {
      wait_ns =
          std::max<std::int64_t>(0, until_ns - runtime_internal::mono_now_ns());
    }
    int n = -1;
    if (g_have_pwait2.load(std::memory_order_relaxed)) {
      timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000),
                  static_cast<long>(wait_ns % 1'000'000'000)};
      n = static_cast<int>(::syscall(SYS_epoll_pwait2, pl->epfd, evs,
                                     max_events, wait_ns < 0 ? nullptr : &ts,
                                     nullptr, 0));
      if (n < 0 && errno == ENOSYS) {
        g_have_pwait2.store(false, std::memory_order_relaxed);
      }
    }
    if (!g_have_pwait2.load(std::memory_order_relaxed)) {
      // Kernels before 5.11: millisecond timeout, rounded up.
      // Clamped: a timer "for ever" (INT64_MAX) is 9e12 ms, past int.
      const int ms =
          wait_ns < 0
              ? -1
              : static_cast<int>(std::min<std::int64_t>(
                    std::numeric_limits<int>::max(),
                    wait_ns / 1'000'000 + (wait_ns % 1'000'000 != 0 ? 1 : 0)));
      n = ::epoll_wait(pl->epfd, evs, max_events, ms);
    }
    if (n <= 0) return 0;  // timeout, EINTR, or the fd closed at teardown
    bool broke = false;
    int k = 0;
    for (int round = 1;; ++round) {
      k = take_events(pl, evs, n, out, k, &broke);
      // A non-blocking poll drains epoll's ready list while each batch comes
      // back full and `out` has room for another: events wait there in
      // order, and most may be stale -- for bytes an in-process peer's
      // hand-off already delivered (on_written) -- so one batch per poll
      // would leave the events that matter behind them until later polls
      // (sysmon's comes every 10 ms). Bounded, so a flood cannot keep the
      // poller here.
      if (until_ns != 0 || n < max_events || k + 2 * max_events > cap ||
          round == kMaxDrainRounds) {
        break;
      }
      n = ::epoll_wait(pl->epfd, evs, max_events, 0);
      if (n <= 0) break;
    }
    // A blocking poll woken only by stale events (nothing readied, no
    // break) waits again, until its deadline: returning would send this M
    // through the scheduler for nothing, twice per round trip of an
    // in-process pair while the runtime has an idle P.
    if (k > 0 || broke || until_ns == 0) return k;
    if (until_ns > 0 && runtime_internal::mono_now_ns() >= until_ns) return 0;
  }
}

int netpoll(std::int64_t until_ns, Fiber** out, int cap) {
  Poller* pl = g_poller.load(std::memory_order_acquire);
  if (pl == nullptr || cap < 2) return 0;
  if (cap <= 2 * 8) return netpoll_with<8>(pl, until_ns, out, cap);
  return netpoll_with<64>(pl, until_ns, out, cap);
}

std::uint64_t epoll_ctl_calls() {
  return g_epoll_ctl_calls.load(std::memory_order_relaxed);
}

}  // namespace goro::net_internal
