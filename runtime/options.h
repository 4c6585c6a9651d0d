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
//                          (binary units): "65536", "64K", "1M"
//   GORO_TIMESLICE=T       overrides time_slice: "500us", "10ms", "1s"
//   GORO_ASYNCPREEMPT=0|1  overrides async_preempt
//   GORO_PREEMPT_MIGRATE=0|1 overrides preempt_migrate
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

struct Options {
  // Number of processors (Ps): how many fibers run in parallel. 0 means
  // GORO_MAXPROCS if set, else the CPUs this process may use (its affinity
  // mask, capped by a cgroup CPU quota). Valid: 0..1024.
  int procs = 0;

  // How long a fiber may run before sysmon asks it to yield. Valid: 100us to
  // 10s.
  std::chrono::microseconds time_slice{10000};

  // Default fiber stack size in bytes, rounded up to whole pages. Memory is
  // reserved, not committed: a fiber only uses the pages it touches. Valid:
  // 16 KiB to 1 GiB.
  std::size_t stack_size = 64 * 1024;

  // Preempt fibers asynchronously (SIGURG) when they overrun their time slice.
  // false: only cooperative preemption at runtime calls, like Go's
  // GODEBUG=asyncpreemptoff=1.
  bool async_preempt = true;

  // Let an asynchronously preempted fiber resume on another OS thread. false
  // (the default) resumes it on the thread it was preempted on, so thread-local
  // addresses the compiler kept in registers stay valid; see
  // docs/preemption.md. Cooperative switches may always migrate.
  bool preempt_migrate = false;
};

// Options for one fiber.
struct SpawnOptions {
  // Stack size in bytes for this fiber; 0 means Options::stack_size. Valid: 0
  // or 16 KiB to 1 GiB, else goro::go throws std::invalid_argument.
  std::size_t stack_size = 0;

  // A name for diagnostics (stack dumps, traces, the overflow message).
  std::string name;
};

}  // namespace goro

#endif  // GORO_RUNTIME_OPTIONS_H_
