// Copyright goro authors.
//
// goro: goroutine-style, preemptive M:N fibers for C++20 on Linux x86-64.
// Include this header and depend on //:goro.
//
//   #include "goro.h"
//
//   int main() {
//     return goro::run([] {
//       goro::WaitGroup wg;
//       wg.add(2);
//       goro::go([&] { work_a(); wg.done(); });
//       goro::go([&] { work_b(); wg.done(); });
//       wg.wait();
//     });
//   }
//
// The parts, each documented in its header:
//   runtime/run.h         goro::run, the runtime's lifetime
//   runtime/options.h     goro::Options, goro::SpawnOptions, GORO_* variables
//   runtime/go.h          goro::go
//   runtime/this_fiber.h  goro::yield, sleep_for/sleep_until, this_fiber::id
//   runtime/blocking.h    goro::blocking, for calls that block the OS thread
//   runtime/stats.h       goro::stats
//   diag/dump.h           goro::dump_fibers (deadlock detection: run.h;
//                         SIGQUIT, GORO_DEBUG: docs/diagnostics.md)
//   diag/trace.h          goro::trace::start/stop, GORO_TRACE: an execution
//                         trace for Perfetto and Chromium's trace viewer
//   preempt/no_preempt.h  goro::NoPreempt
//   sync/wait_group.h     goro::WaitGroup
//   sync/chan.h           goro::Chan<T>, goro::ChanClosed
//   sync/select.h         goro::select, recv_case/send_case/default_case,
//                         goro::Selector (case lists built at run time)
//   sync/mutex.h          goro::Mutex
//   sync/rw_mutex.h       goro::RWMutex
//   sync/once.h           goro::Once
//   sync/cond.h           goro::Cond
//   sync/semaphore.h      goro::Semaphore
//   sync/timer.h          goro::after, goro::Timer, goro::Ticker
//   sync/context.h        goro::Context, with_cancel/with_deadline/with_timeout
//   net/net.h             goro::net: listen, dial, Conn, Listener, PacketConn
// docs/ explains the scheduler and the rules fibers must follow.

#ifndef GORO_GORO_H_
#define GORO_GORO_H_

#include "diag/dump.h"
#include "diag/trace.h"
#include "net/net.h"
#include "preempt/no_preempt.h"
#include "runtime/blocking.h"
#include "runtime/go.h"
#include "runtime/options.h"
#include "runtime/run.h"
#include "runtime/stats.h"
#include "runtime/this_fiber.h"
#include "sync/chan.h"
#include "sync/cond.h"
#include "sync/context.h"
#include "sync/mutex.h"
#include "sync/once.h"
#include "sync/rw_mutex.h"
#include "sync/select.h"
#include "sync/semaphore.h"
#include "sync/timer.h"
#include "sync/wait_group.h"

#endif  // GORO_GORO_H_
