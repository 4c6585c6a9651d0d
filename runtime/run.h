// Copyright goro authors.
//
// goro::run: start a runtime, run `main` as its main fiber, return when `main`
// returns -- like a Go program's main.
//
//   int main() {
//     return goro::run([] {
//       goro::WaitGroup wg;
//       for (int i = 0; i < 10; ++i) {
//         wg.add(1);
//         goro::go([&wg, i] { std::printf("fiber %d\n", i); wg.done(); });
//       }
//       wg.wait();
//     });
//   }
//
// Guarantees:
//   * `main` runs on a fiber, so it may use every goro call. Its stack is
//     thread-sized: max(8 MiB, Options::stack_size), reserved and committed
//     as used, so a program moved inside run keeps the stack it had.
//   * run returns main's int result (0 for a void main) once main returns.
//     Fibers still alive then are abandoned, as in Go: they never run again,
//     and closures of fibers that never started are destroyed. (A fiber that
//     started is not unwound: objects on its stack are not destroyed.)
//   * run waits for the runtime's threads to leave fiber code: a fiber that
//     is running is stopped at its next goro call or, with asynchronous
//     preemption (the default), within a few time slices even in a loop
//     without calls. With Options::async_preempt == false nothing can stop
//     such a loop: run waits for the fiber's next goro call, which then never
//     returns.
//   * run does not wait for a fiber inside goro::blocking(): its call runs on
//     (a read of stdin may never return), with its stack kept mapped; when
//     it returns, the thread exits without running any more of the fiber's
//     code (not even destructors) and unmaps the stack.
//   * Nor, with asynchronous preemption, for a fiber blocked in a raw call
//     into the C library (a read, a std::condition_variable wait, a sleep,
//     not wrapped in blocking()): run signals its thread after 2 ms and
//     abandons it; when the call returns, the thread exits without running
//     the fiber's code after it (docs/runtime.md, "The end of run"). A pthread
//     mutex the fiber holds (or re-locks, as a condition variable's wait
//     does) stays locked. Under TSan, with async_preempt == false, or where
//     the stack cannot be walked, run waits for the call.
//   * Stacks of abandoned fibers are unmapped, except those of fibers parked
//     on a sync object (a Chan, Mutex, WaitGroup...) or readied and not yet
//     run: that object may outlive run and still hold the fiber's wait
//     record, so their stacks (and fiber records) are kept until the process
//     exits. An operation on such an object that takes the fiber's record
//     completes as if the fiber had taken part (a send's value goes to a
//     fiber that never runs) and the fiber stays abandoned.
//   * Plain threads may race the end of run (go.h, sync/chan.h): they never
//     touch freed memory.
//   * run may be called again afterwards in the same process, one runtime at a
//     time.
//
// Errors:
//   * std::logic_error: called from a fiber, or while another thread is inside
//     run.
//   * std::invalid_argument: a bad Options field or GORO_* environment value
//     (see options.h); the message names it.
//   * A deadlock -- every fiber asleep and nothing left that could wake one
//     (below) -- prints the message and a dump of every fiber and exits with
//     status 2 (Options::on_deadlock == kExit, the default), or makes run
//     throw goro::DeadlockError (kThrow).
//   * An exception escaping `main` (or any fiber) prints
//     "goro: uncaught exception in fiber N: <what>" and that fiber's frames
//     from the throw, and aborts the process, as a panic ends a Go program.
//     (run installs a std::terminate handler for this while it runs; other
//     threads' terminations go to the handler installed before.)
//
// Cost: starts Options::procs threads plus sysmon; tens of microseconds.
// Ending it costs the stacks kept for parked fibers (above): a program that
// calls run many times, each abandoning fibers parked on sync objects, keeps
// that address space.

// Deadlock detection (Go's checkdead). Decided from the scheduler's own
// counts when the last M goes idle, never from a timeout: it is reported
// only when all of these hold at once --
//   * every M is idle: none running a fiber, looking for work, inside
//     goro::blocking(), or stuck in a system call;
//   * no fiber is runnable (global queue, every P's queue and runnext, the
//     fibers pinned to an M) and main has not returned;
//   * no timer is pending on any P (a sleeping fiber, a goro::after, a
//     Context deadline all keep the program alive, however long);
//   * no fiber waits on the netpoller (net/'s count, io_waiters() in park.h);
//   * no thread outside the runtime is alive. Plain threads may wake fibers
//     (a channel send, go(), a Mutex unlock) at any time, and nothing tells
//     the runtime whether one will, so any thread of the process that is not
//     goro's own (its Ms, sysmon, the thread inside run) defers the verdict.
//     While such a thread exists the idle M rechecks every 100 ms, so the
//     deadlock is reported once the last one has exited. A thread that will
//     never touch goro (a watchdog, a logger) may say so with
//     this_thread_never_wakes_fibers() so that it does not defer detection.
// A program that is only slow or sleeping is never reported. Cost: nothing
// while any M is busy; a few loads per P when the last M goes idle, and a
// read of /proc/self/task only when everything else says "dead".

#ifndef GORO_RUNTIME_RUN_H_
#define GORO_RUNTIME_RUN_H_

#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "runtime/internal/api.h"
#include "runtime/options.h"

namespace goro {

// Thrown by goro::run with Options::on_deadlock == OnDeadlock::kThrow. what()
// is "goro: fatal error: all fibers are asleep - deadlock!", a blank line and
// the dump of every fiber (as goro::dump_fibers prints it).
class DeadlockError : public std::runtime_error {
 public:
  explicit DeadlockError(const std::string& what) : std::runtime_error(what) {}
};

// this_thread_never_wakes_fibers declares that the calling plain thread will
// never wake a fiber of any runtime (no channel, go(), Mutex, timer or other
// goro call), so that deadlock detection does not wait for it to exit. For
// the rest of the thread's life; a no-op on goro's own threads. Cost: a lock
// and a vector insert.
void this_thread_never_wakes_fibers();

template <typename F>
int run(const Options& options, F&& main) {
  using Fn = std::remove_reference_t<F>;
  using R = std::invoke_result_t<Fn&>;
  static_assert(std::is_void_v<R> || std::is_convertible_v<R, int>,
                "goro::run: main must return void or int");
  struct Box {
    Fn* fn;
    int result;
  } box{&main, 0};
  runtime_internal::run_main(
      options,
      [](void* p) {
        Box* b = static_cast<Box*>(p);
        if constexpr (std::is_void_v<R>) {
          std::invoke(*b->fn);
        } else {
          b->result = static_cast<int>(std::invoke(*b->fn));
        }
      },
      &box);
  return box.result;
}

template <typename F>
int run(F&& main) {
  return run(Options{}, std::forward<F>(main));
}

}  // namespace goro

#endif  // GORO_RUNTIME_RUN_H_
