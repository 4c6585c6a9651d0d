// Copyright goro authors.
//
// goro::dump_fibers: every fiber's stack, in Go's goroutine-dump format with
// "fiber" for "goroutine", so that habits and parsers carry over:
//
//   fiber 7 "worker-3" [chan receive, 2 minutes]:
//   goro::Chan<int>::recv(...)
//   	sync/chan.h:120 +0x5d
//   worker(...)
//   	tools/demo.cc:40 +0x2a
//   created by main::{lambda()#1}::operator() in fiber 1
//   	tools/demo.cc:77
//
// One block per fiber, in id order, separated by blank lines: the id, the
// name if it has one, the state -- the wait reason of a parked fiber (chan
// receive, chan send, select, select (no cases), sleep, mutex lock, rwmutex
// rlock, rwmutex lock, cond wait, semaphore acquire, wait group wait, IO
// wait), "blocking call" inside goro::blocking(), "runnable", "preempted"
// (switched out asynchronously), "running" -- and, when it has waited for a
// minute or more, for how many (approximate: dated by sysmon's clock, to
// within 100 ms). Then one line per frame (inlined calls included), the
// function demangled without its parameters, a tab, file:line and the
// offset in the function; then "created by" and where go() was called (not
// for main). Frames of the runtime itself (the switch, park, the fiber's
// entry) are left out, as Go leaves out most of runtime's.
//
// Guarantees: a parked or runnable fiber is pinned while its stack is read
// (a thread about to run it waits), so its frames are exact; a fiber running
// on another thread prints "fiber running on other thread; stack
// unavailable". The caller's own fiber shows where dump_fibers was called.
// File and line come from the binary's DWARF (the default build keeps -g),
// read with elfutils' libdw, loaded with dlopen on the first dump; without
// it frames show the ELF symbol and no file:line.
//
// Callable from any fiber or thread, with or without a running runtime
// (then it writes "goro: no runtime is running"). On a fiber the work runs
// on a helper thread while the fiber is inside goro::blocking(), so its
// stack size does not matter and its P keeps running other fibers.
//
// Cost: milliseconds per hundred fibers, plus loading the debug info on the
// first call (tens of ms for a large binary); each thread that is about to
// run a pinned fiber waits for that fiber's unwind (microseconds). Not for
// hot paths. Not async-signal-safe: SIGQUIT hands off to a thread (see
// docs/diagnostics.md).

#ifndef GORO_DIAG_DUMP_H_
#define GORO_DIAG_DUMP_H_

#include <ostream>

namespace goro {

void dump_fibers(std::ostream& out);

}  // namespace goro

#endif  // GORO_DIAG_DUMP_H_
