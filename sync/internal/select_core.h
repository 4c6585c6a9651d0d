// Copyright goro authors.
//
// SelectCore: the type-erased engine behind goro::select (Go's selectgo).
// Internal to sync/; users want sync/select.h.

#ifndef GORO_SYNC_INTERNAL_SELECT_CORE_H_
#define GORO_SYNC_INTERNAL_SELECT_CORE_H_

#include <cstddef>
#include <cstdint>

#include "sync/internal/chan_core.h"
#include "sync/internal/waiter.h"

namespace goro::sync_internal {

// One send or receive case.
struct SelectCase {
  ChanCore* chan = nullptr;  // null: a nil channel, never ready
  void* elem = nullptr;      // send: the value (T*); recv: raw T storage
  bool is_send = false;
};

// A case's position in a select: wide enough for any case count a select
// can have (n is an int). 16 bits once capped runtime-sized Selectors at
// 65,535 cases, silently (a case past that was never polled).
using CaseIndex = std::uint32_t;

struct SelectResult {
  int index;      // the case taken, or -1: nothing ready and !block
  bool received;  // recv case: a value was moved into elem (else: closed)
};

class SelectCore {
 public:
  // run performs one select over cases[0, n). `order` has room for 2 * n
  // entries, `waiters` for n. Blocks (parks) until a case is ready if
  // `block`; otherwise returns index -1 when none is. Throws ChanClosed when
  // the chosen case is a send on a closed channel. 0 <= n <= INT_MAX.
  static SelectResult run(SelectCase* cases, CaseIndex* order, Waiter* waiters,
                          int n, bool block);

  // The channel's lock, for select_core.cc's lock_all/unlock_all.
  static SpinLock& lock_of(ChanCore* c) { return c->lock_; }
  // assume_locked tells the thread-safety analysis that c->lock_ is held:
  // run() holds it between lock_all and unlock_all, which take a dynamic set
  // of locks in address order that the analysis cannot follow. A no-op.
  static void assume_locked(const ChanCore* c)
      ABSL_ASSERT_EXCLUSIVE_LOCK(c->lock_) {
    static_cast<void>(c);
  }
  static WaitQueue& sendq_of(ChanCore* c)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->lock_) {
    return c->sendq_;
  }
  static WaitQueue& recvq_of(ChanCore* c)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->lock_) {
    return c->recvq_;
  }
};

// A type-erased case for select_dispatch: the case object and its callback
// runner.
struct CaseRef {
  void* obj = nullptr;
  void (*fire)(void* obj, bool received) = nullptr;
};

// select_dispatch (select_core.cc) runs SelectCore::run over cases[0, n)
// (block unless default_pos >= 0), then the chosen case's callback (`def`
// when nothing was ready), and returns the chosen case's argument index:
// `default_pos` for the default, else the case's index among the non-default
// cases, plus one if it comes after the default. Out of line, so that each
// select instantiates only the few lines that fill in its cases.
std::size_t select_dispatch(SelectCase* cases, CaseIndex* order,
                            Waiter* waiters, const CaseRef* refs, int n,
                            int default_pos, CaseRef def);

// The arrays one select over n cases needs, on the caller's stack. Depends
// only on n, so it is shared by every select with as many cases.
template <int N>
struct SelectFrame {
  SelectCase sc[N];
  CaseRef refs[N];
  CaseIndex order[2 * N];
  Waiter waiters[N];
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_SELECT_CORE_H_
