// Copyright goro authors.
//
// goro::blocking: run a call that may block the OS thread (a system call, a C
// library that waits, a std::mutex held by a plain thread) without stopping
// the other fibers -- Go's entersyscall/exitsyscall, made explicit.
//
//   ssize_t n = goro::blocking([&] { return ::read(fd, buf, len); });
//
// The thread gives its P to another thread before calling `fn`, so the P's
// other fibers keep running, and takes a P back afterwards; if none is free,
// the fiber is queued and resumes when a P has room. `fn` runs on the calling
// fiber's stack and thread.
//
// Returns what `fn` returns; rethrows what it throws (after taking a P back).
// Outside a fiber it simply calls `fn`.
//
// When main returns (goro::run) while a fiber is inside `fn`, run does not
// wait for `fn`: when `fn` returns (or throws), blocking never returns to the
// fiber, whose code -- destructors included -- never runs again; the thread
// exits. If the runtime is stopping when blocking is entered, `fn` is not
// called at all.
//
// Cost: two short critical sections on the scheduler lock (~100 ns) plus, when
// the P has other work, waking a thread for it (a few microseconds). For calls
// that usually do not block, a plain call is cheaper; sysmon still takes the P
// away from a thread stuck in the kernel.
//
// Warning: inside `fn` do not call goro functions that park (channel
// operations, WaitGroup::wait, sleep): they would run without a P. go() and
// ready-ing other fibers are fine (as from a plain thread: see go.h).

#ifndef GORO_RUNTIME_BLOCKING_H_
#define GORO_RUNTIME_BLOCKING_H_

#include <functional>
#include <utility>

#include "runtime/internal/api.h"

namespace goro {

template <typename F>
decltype(auto) blocking(F&& fn) {
  struct Scope {
    bool active = runtime_internal::blocking_enter();
    ~Scope() {
      if (active) runtime_internal::blocking_exit();
    }
  } scope;
  return std::invoke(std::forward<F>(fn));
}

}  // namespace goro

#endif  // GORO_RUNTIME_BLOCKING_H_
