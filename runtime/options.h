// Copyright goro authors.
//
// Options for goro::run and goro::go.
//
// Options configure one runtime (one call of goro::run). Every field has a
// usable default; the environment can override them, so a deployed program can
// be tuned without a rebuild, as Go's GOMAXPROCS and GODEBUG do:
//
//   GORO_MAXPROCS=N        parallelism, used when Options::procs == 0
//   GORO_STACK_SIZE=S      overrides stack_size: bytes, or with a K/M/G suffix
//                          (binary units): "65536", "64K", "1M"; for the
//                          main fiber too when larger than 8 MiB
//   GORO_TIMESLICE=T       overrides time_slice: "500us", "10ms", "1s"
//   GORO_ASYNCPREEMPT=0|1  overrides async_preempt
//   GORO_PREEMPT_MIGRATE=0|1 overrides preempt_migrate
//   GORO_DEBUG=schedtrace=MS[,scheddetail=1]
//                          prints the scheduler's state every MS ms to stderr
//                          (Go's GODEBUG=schedtrace; docs/diagnostics.md)
//   GORO_SIGQUIT=0|1       0: leave SIGQUIT alone (default 1: a SIGQUIT
//                          dumps every fiber to stderr and exits with 2)
//   GORO_TRACE=PATH        writes an execution trace of the whole run to
//                          PATH (diag/trace.h); run throws if PATH is empty
//                          or cannot be opened for writing
//
// A malformed or out-of-range value, in Options or in the environment, makes
// goro::run throw std::invalid_argument naming the variable and the value; it
// is never silently ignored.

#ifndef GORO_RUNTIME_OPTIONS_H_
#define GORO_RUNTIME_OPTIONS_H_

#include <chrono>
#include <cstddef>
#include <string>

namespace goro {

// What goro::run does when no fiber can ever run again (see
// Options::on_deadlock).
enum class OnDeadlock {
  // Print "goro: fatal error: all fibers are asleep - deadlock!", a blank
  // line and the dump of every fiber to stderr, then exit the process with
  // status 2, as Go does.
  kExit,
  // goro::run throws goro::DeadlockError (run.h), whose what() holds the
  // same message and dump; fibers still parked are abandoned as when main
  // returns. For test frameworks: a failed test instead of a lost process.
  kThrow,
};

struct Options {
  // Number of processors (Ps): how many fibers run in parallel. 0 means
  // GORO_MAXPROCS if set, else the CPUs this process may use (its affinity
  // mask, capped by a cgroup CPU quota). Valid: 0..1024.
  int procs = 0;

  // How long a fiber may run before sysmon asks it to yield. Valid: 100us to
  // 10s.
  std::chrono::microseconds time_slice{10000};

  // Default fiber stack size in bytes, rounded up to whole pages. Memory is
  // reserved, not committed: a fiber only uses the pages it touches (one or
  // two for most fibers). Valid: min_stack_size() to 1 GiB.
  //
  // 256 KiB fits what ordinary C++ needs, measured by //bench:stack_need
  // (docs/runtime.md, "Stack size"): iostreams and snprintf of floating
  // point take 4-6 KiB, a throw through 100 frames 16 KiB, getaddrinfo 6 KiB,
  // but libstdc++'s std::regex recurses per character matched (about 370
  // bytes each: 75 KiB for a 200-character string), so 256 KiB matches
  // strings of about 650 characters. The main fiber gets
  // max(8 MiB, stack_size), like a thread.
  //
  // Cost: address space and page tables, not memory. Each stack sits above a
  // 64 KiB guard region; a million parked fibers cost about 4 GiB of RSS (the
  // pages they touched) and about 0.6 GiB of page tables (VmPTE) at this
  // default (docs/runtime.md has the measurements).
  //
  // Overflow: a fiber that overflows its stack is reported ("goro: fiber N
  // (name) overflowed its S-byte stack") and the process aborts; it never
  // corrupts another fiber silently, given that the code it runs was built
  // with -fstack-clash-protection or makes no frame larger than 64 KiB. The
  // exact guarantee, and what kernels without MADV_GUARD_INSTALL (Linux <
  // 6.13) get, is in docs/runtime.md, "Stack overflow".
  std::size_t stack_size = 256 * 1024;

  // Preempt fibers asynchronously (SIGURG) when they overrun their time slice.
  // false: only cooperative preemption at runtime calls, like Go's
  // GODEBUG=asyncpreemptoff=1.
  bool async_preempt = true;

  // Let an asynchronously preempted fiber resume on another OS thread. false
  // (the default) resumes it on the thread it was preempted on, so thread-local
  // addresses the compiler kept in registers stay valid; see
  // docs/preemption.md. Cooperative switches may always migrate.
  bool preempt_migrate = false;

  // What to do when every fiber is asleep for good: no fiber runnable or
  // running, none inside goro::blocking(), no timer pending, no fiber
  // waiting on the netpoller, and no thread outside the runtime alive that
  // could still wake one (see run.h, "Deadlock detection").
  OnDeadlock on_deadlock = OnDeadlock::kExit;
};

// Options for one fiber.
struct SpawnOptions {
  // Stack size in bytes for this fiber; 0 means Options::stack_size. Valid: 0
  // or min_stack_size() to 1 GiB, else goro::go throws std::invalid_argument.
  std::size_t stack_size = 0;

  // A name for diagnostics (stack dumps, traces, the overflow message).
  std::string name;
};

// min_stack_size returns the smallest stack size Options::stack_size,
// SpawnOptions::stack_size and GORO_STACK_SIZE accept: 16 KiB, or more on a
// CPU whose extended state is large, because an asynchronous preemption
// saves the whole XSAVE area (11,008 bytes with AVX-512 and AMX) on the
// fiber's stack: the minimum leaves room for that area plus 4 KiB of the
// fiber's own frames, so that a fiber with the minimum stack can still be
// preempted while it uses up to 4 KiB. Deeper than that, the preemption is
// refused and counted in Stats::refused_stack (docs/preemption.md).
// Constant for the life of the process; callable from any thread, with or
// without a runtime.
std::size_t min_stack_size();

}  // namespace goro

#endif  // GORO_RUNTIME_OPTIONS_H_
