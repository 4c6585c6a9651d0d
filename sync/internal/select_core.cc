// Copyright goro authors.
//
// select, after Go's runtime/select.go (selectgo):
//
//   1. Shuffle the cases into a random poll order (fairness: each ready case
//      is equally likely to be taken), and sort them by channel address into
//      the lock order (a global order, so two selects cannot deadlock; a
//      channel listed twice is locked once).
//   2. If every case is a buffered channel, first try each case's lock-free
//      ring operation in poll order (the direct operations' fast path).
//      Then lock every channel. In poll order, take the first case that can
//      proceed: a recv with a parked sender, buffered data or a closed
//      channel; a send with a parked receiver or buffer room (or a closed
//      channel: throw). Unlock all and return it.
//   3. Nothing ready and a default case: unlock all, return -1.
//   4. Otherwise queue one Waiter per case (all pointing to one SelectState)
//      on every channel and park; the park commit unlocks every channel, so
//      no waker can see a waiter before the fiber is off its stack.
//      Buffered channels also change without their lock (chan_core.cc):
//      after queuing, look at each buffered case's ring again (seq_cst); if
//      one became ready, unlink everything and start again at 2.
//   5. Exactly one waker wins SelectState::done (see waiter.h) and records
//      its waiter in SelectState::winner before waking us. On resumption,
//      lock every channel again and unlink the other waiters (a waker that
//      lost the CAS may already have unlinked some: removal is idempotent).
//      A winner marked `retry` moved nothing (chan_core.cc): start again.
//
// Rejected: waking the select on every channel and re-polling (Go before
// 1.3 and some C++ libraries): simpler, but every losing case would have to
// undo its hand-off, and a value handed straight to a parked receiver cannot
// be taken back.

#include "sync/internal/select_core.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace goro::sync_internal {

namespace {

// A per-thread xorshift64* generator; only read before any park, so a fiber
// that migrates never holds a stale thread-local address across a switch.
__attribute__((noinline)) std::uint32_t cheap_rand(std::uint32_t n) {
  static thread_local std::uint64_t state = 0;
  std::uint64_t x = state;
  if (x == 0) {
    x = static_cast<std::uint64_t>(
            std::chrono::steady_clock::now().time_since_epoch().count()) ^
        reinterpret_cast<std::uintptr_t>(&state) ^ 0x9e3779b97f4a7c15ull;
    if (x == 0) x = 1;
  }
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  state = x;
  const std::uint64_t r = (x * 0x2545f4914f6cdd1dull) >> 32;
  return static_cast<std::uint32_t>((r * n) >> 32);  // Lemire's reduction
}

struct Locks {
  SelectCase* cases;
  const CaseIndex* order;  // lock order: cases with non-nil channels
  int n;
};

void lock_all(const Locks& l) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  ChanCore* prev = nullptr;
  for (int i = 0; i < l.n; ++i) {
    ChanCore* c = l.cases[l.order[i]].chan;
    if (c != prev) SelectCore::lock_of(c).lock();
    prev = c;
  }
}

void unlock_all(const Locks& l) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (int i = l.n - 1; i >= 0; --i) {
    ChanCore* c = l.cases[l.order[i]].chan;
    if (i > 0 && l.cases[l.order[i - 1]].chan == c) continue;
    SelectCore::lock_of(c).unlock();
  }
}

// The park commit. Once it unlocks a channel, a waker may claim and ready the
// select fiber, which may run on another thread while this loop is still
// reading `l` on the fiber's stack. That is safe because the woken fiber first
// runs lock_all (pass 3), which reads `l` too but writes nothing, and blocks
// on the first channel of the lock order -- the one unlocked last, after
// which this commit touches the fiber's stack no more.
bool unlock_all_commit(void* arg) {
  unlock_all(*static_cast<const Locks*>(arg));
  return true;
}

// unlink_all removes every waiter but `keep` from its channel's queue
// (idempotent: a waker that lost the claim may have removed some already).
void unlink_all(SelectCase* cases, const CaseIndex* lockorder, Waiter* waiters,
                int n, const Waiter* keep) {
  for (int k = 0; k < n; ++k) {
    const int i = lockorder[k];
    Waiter* w = &waiters[i];
    if (w == keep) continue;
    ChanCore* c = cases[i].chan;
    SelectCore::assume_locked(c);  // by the caller's lock_all
    (cases[i].is_send ? SelectCore::sendq_of(c) : SelectCore::recvq_of(c))
        .remove(w);
  }
}

}  // namespace

SelectResult SelectCore::run(SelectCase* cases, CaseIndex* order,
                             Waiter* waiters, int n, bool block) {
  runtime_internal::preempt_check();  // as ChanCore::send (chan_core.cc)
  CaseIndex* pollorder = order;
  CaseIndex* lockorder = order + n;
  int norder = 0;
  bool all_buffered = true;
  for (int i = 0; i < n; ++i) {
    if (cases[i].chan == nullptr) continue;
    if (cases[i].chan->cap_ == 0) all_buffered = false;
    // Inside-out Fisher-Yates shuffle.
    const std::uint32_t j = cheap_rand(static_cast<std::uint32_t>(norder + 1));
    pollorder[norder] = pollorder[j];
    pollorder[j] = static_cast<CaseIndex>(i);
    lockorder[norder] = static_cast<CaseIndex>(i);
    ++norder;
  }
  auto by_addr = [cases](CaseIndex a, CaseIndex b) {
    return reinterpret_cast<std::uintptr_t>(cases[a].chan) <
           reinterpret_cast<std::uintptr_t>(cases[b].chan);
  };
  if (norder <= 16) {
    for (int i = 1; i < norder; ++i) {  // insertion sort: small n
      CaseIndex v = lockorder[i];
      int j = i;
      for (; j > 0 && by_addr(v, lockorder[j - 1]); --j) {
        lockorder[j] = lockorder[j - 1];
      }
      lockorder[j] = v;
    }
  } else {
    std::sort(lockorder, lockorder + norder, by_addr);
  }
  Locks locks{cases, lockorder, norder};

  if (norder == 0) {
    if (!block) return {-1, false};
    // Only nil channels: block forever, as Go's `select {}`.
    Waiter self;
    self.init_self();
    if (self.fiber != nullptr) {
      runtime_internal::park([](void*) { return true; }, nullptr,
                             runtime_internal::WaitReason::kSelectNoCases);
    }
    for (;;) thread_wait(self.wake_word);
  }

  // Pass 0, without locks, when every case is a buffered channel: in poll
  // order, each case's ring operation, as the direct send/recv fast paths do
  // it. At the first doubt -- a fiber parked that the operation must not
  // overtake, or an empty ring with senders parked -- fall back to the
  // locked passes, which poll in the same order. Nothing ready: also the
  // locked passes (a select with a default must see all its channels at
  // one instant before it reports that none is ready).
  if (all_buffered) {
    for (int k = 0; k < norder; ++k) {
      const int i = pollorder[k];
      SelectCase& sc = cases[i];
      ChanCore* c = sc.chan;
      if (sc.is_send) {
        if (!c->sendq_empty_relaxed() || !c->recvq_empty_relaxed()) break;
        const Ring::Status st = c->push_lock_free(sc.elem);
        if (st == Ring::Status::kOk) return {i, false};
        if (st == Ring::Status::kClosed) {
          throw ChanClosed("goro::select: send on closed channel");
        }
      } else {
        if (!c->recvq_empty_relaxed()) break;
        const Ring::Status st = c->pop_lock_free(sc.elem);
        if (st == Ring::Status::kOk) return {i, true};
        if (st == Ring::Status::kClosed) return {i, false};
        if (!c->sendq_empty_relaxed()) break;
      }
    }
  }

  for (;;) {
    lock_all(locks);
    WakeList wl;

    // Pass 1: look for a case that can proceed now.
    for (int k = 0; k < norder; ++k) {
      const int i = pollorder[k];
      SelectCase& sc = cases[i];
      assume_locked(sc.chan);  // by lock_all
      const ChanCore::Try t = sc.is_send
                                  ? sc.chan->try_send_locked(sc.elem, wl)
                                  : sc.chan->try_recv_locked(sc.elem, wl);
      if (t == ChanCore::Try::kWouldBlock) continue;
      unlock_all(locks);
      wl.wake_all();
      if (sc.is_send) {
        if (t == ChanCore::Try::kClosed) {
          throw ChanClosed("goro::select: send on closed channel");
        }
        return {i, false};
      }
      return {i, t == ChanCore::Try::kDone};
    }

    if (!block) {
      unlock_all(locks);
      wl.wake_all();
      return {-1, false};
    }

    if (!wl.empty()) {
      // Pass 1 moved values for fibers that must be woken before we park
      // (they may be the ones we would wait for). Wake them, start again.
      unlock_all(locks);
      wl.wake_all();
      continue;
    }

    // Pass 2: queue on every channel, in lock order, and park -- unless a
    // buffered channel changed under a lock-free operation meanwhile (the
    // registering half of chan_core.cc's handshake): then unlink and start
    // again.
    SelectState st;
    runtime_internal::Fiber* self = runtime_internal::current_fiber();
    bool again = false;
    for (int k = 0; k < norder; ++k) {
      const int i = lockorder[k];
      Waiter& w = waiters[i];
      w.fiber = self;
      w.wake_word = &st.word;
      w.elem = cases[i].elem;
      w.select = &st;
      w.case_index = static_cast<std::uint32_t>(i);
      w.success = false;
      w.retry = false;
      ChanCore* c = cases[i].chan;
      assume_locked(c);  // by lock_all
      WaitQueue& q = cases[i].is_send ? c->sendq_ : c->recvq_;
      q.push_back(&w);
      if (c->cap_ != 0 && !again) {
        q.publish();
        again = cases[i].is_send ? !c->ring_.full_seq_cst()
                                 : !c->ring_.empty_seq_cst();
      }
    }
    if (again) {
      unlink_all(cases, lockorder, waiters, norder, nullptr);
      unlock_all(locks);
      continue;
    }
    if (self != nullptr) {
      runtime_internal::park(unlock_all_commit, &locks,
                             runtime_internal::WaitReason::kSelect);
    } else {
      unlock_all(locks);
      thread_wait(&st.word);
    }

    // Pass 3: woken by exactly one case; unlink the others.
    lock_all(locks);
    Waiter* winner = st.winner;
    unlink_all(cases, lockorder, waiters, norder, winner);
    unlock_all(locks);
    if (winner->retry) continue;
    const int i = static_cast<int>(winner->case_index);
    if (cases[i].is_send) {
      if (!winner->success) {
        throw ChanClosed("goro::select: send on closed channel");
      }
      return {i, false};
    }
    return {i, winner->success};
  }
}

std::size_t select_dispatch(SelectCase* cases, CaseIndex* order,
                            Waiter* waiters, const CaseRef* refs, int n,
                            int default_pos, CaseRef def) {
  const SelectResult r =
      SelectCore::run(cases, order, waiters, n, default_pos < 0);
  if (r.index < 0) {
    def.fire(def.obj, false);
    return static_cast<std::size_t>(default_pos);
  }
  refs[r.index].fire(refs[r.index].obj, r.received);
  const int skip = default_pos >= 0 && r.index >= default_pos ? 1 : 0;
  return static_cast<std::size_t>(r.index + skip);
}

}  // namespace goro::sync_internal
