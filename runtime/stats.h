// Copyright goro authors.
//
// goro::stats: counters of the running runtime (or of the last one, after run
// returned). Counters are sampled without stopping the world: each is exact at
// some moment during the call, not all at the same moment.

#ifndef GORO_RUNTIME_STATS_H_
#define GORO_RUNTIME_STATS_H_

#include <cstdint>

namespace goro {

struct Stats {
  int procs = 0;                  // Ps (parallelism)
  int threads = 0;                // Ms: OS threads that run fibers (not sysmon)
  std::uint64_t fibers_live = 0;  // created (go) and not yet returned
  std::uint64_t fibers_created = 0;    // go() calls, plus the main fiber
  std::uint64_t context_switches = 0;  // switches into a fiber
  std::uint64_t steals = 0;    // successful steals from another P's queue
  std::uint64_t handoffs = 0;  // Ps handed to another thread (blocking())
  std::uint64_t timers_fired = 0;
  std::uint64_t threads_woken = 0;  // idle threads woken to take work
  // Preemption (preempt/):
  std::uint64_t preempt_requests = 0;         // time-slice overruns noticed
  std::uint64_t preemptions_async = 0;        // switches forced by SIGURG
  std::uint64_t preemptions_cooperative = 0;  // requests honoured at a call
  std::uint64_t signals_sent = 0;             // SIGURGs sent by sysmon
  std::uint64_t preempt_refused = 0;          // sum of the reasons below
  std::uint64_t refused_no_preempt = 0;  // NoPreempt or a runtime lock held
  std::uint64_t refused_os_lock = 0;     // the fiber holds OS state (any
                                         // pthread lock, a static being
                                         // initialised, a call_once)
  std::uint64_t refused_pc = 0;          // interrupted in libc, libstdc++, ...
  std::uint64_t refused_stack = 0;       // no room for the XSAVE save area
  std::uint64_t refused_not_fiber = 0;   // not a user fiber on a regular P
  std::uint64_t syscall_retakes = 0;     // Ps taken from threads in syscalls
  // Async-preempted fibers pinned to a thread that sysmon found stuck in the
  // kernel, released to run on other threads (docs/preemption.md).
  std::uint64_t pinned_released = 0;
  // The network (net/; docs/net.md):
  std::uint64_t netpoll_readied = 0;  // fibers readied by epoll's events
  // Readers readied at once by a write on the other end of an in-process
  // loopback connection, without waiting for epoll ("Loopback hand-off").
  std::uint64_t io_handoffs = 0;
};

// stats returns the counters. Safe from any thread, any time.
Stats stats();

}  // namespace goro

#endif  // GORO_RUNTIME_STATS_H_
