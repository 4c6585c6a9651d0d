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
//     their stacks are unmapped, and closures of fibers that never started are
//     destroyed. (A fiber that started is not unwound: objects on its stack
//     are not destroyed.) run waits for the runtime's threads to leave fiber
//     code first: a thread inside goro::blocking() leaves when its call
//     returns; a fiber spinning with async preemption off leaves at its next
//     goro call.
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
