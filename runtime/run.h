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
//   * An exception escaping `main` (or any fiber) prints
//     "goro: uncaught exception in fiber N: <what>" and aborts the process, as
//     a panic ends a Go program.
//
// Cost: starts Options::procs threads plus sysmon; tens of microseconds.
// Ending it costs the stacks kept for parked fibers (above): a program that
// calls run many times, each abandoning fibers parked on sync objects, keeps
// that address space.

#ifndef GORO_RUNTIME_RUN_H_
#define GORO_RUNTIME_RUN_H_

#include <functional>
#include <type_traits>
#include <utility>

#include "runtime/internal/api.h"
#include "runtime/options.h"

namespace goro {

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
