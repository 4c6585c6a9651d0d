// Copyright goro authors.
//
// goro::go: start a new fiber, like Go's `go` statement.
//
//   goro::go([ch] { worker(ch); });
//   goro::go({.stack_size = 1 << 20, .name = "parser"}, [&] { parse(); });
//
// `fn` is any callable taking no arguments (move-only ones too); its result is
// discarded. It is moved (or copied) into the fiber; closures up to 48 bytes
// are stored inline, larger ones cost one heap allocation.
//
// Guarantees: the new fiber is runnable when go returns; it runs soon on this
// P (Go's runnext: it runs next when the caller blocks or yields) or on
// another P that steals it. Everything the caller did before go() is visible
// to the new fiber.
//
// Errors: std::logic_error when no runtime is running (outside goro::run);
// std::invalid_argument for a bad SpawnOptions::stack_size; std::bad_alloc
// when the new fiber's stack cannot be mapped (address space or
// vm.max_map_count exhausted); exceptions from copying `fn` propagate. In
// every error case no fiber is created and nothing is queued. An exception
// escaping `fn` prints "goro: uncaught exception in fiber N: <what>" and
// the fiber's frames from the throw (docs/diagnostics.md), and aborts.
//
// Cost: no system call and no allocation in the common case (stacks and fiber
// objects are recycled per P). The stack is reserved here, as address space:
// its pages are committed as the fiber touches them.
//
// May be called from any thread while a runtime runs; from a thread that is
// not running a fiber the fiber goes to the global queue. Racing the end of
// run from such a thread is safe: go() either queues the fiber -- which, if
// main has already returned, never runs, and whose closure is destroyed when
// run returns -- or, once run is returning, throws std::logic_error.

#ifndef GORO_RUNTIME_GO_H_
#define GORO_RUNTIME_GO_H_

#include <cstdint>
#include <functional>
#include <new>
#include <source_location>
#include <type_traits>
#include <utility>

#include "runtime/internal/api.h"
#include "runtime/options.h"

namespace goro {

namespace runtime_internal {
#if defined(__cpp_lib_source_location)
using CallSite = std::source_location;
#else
// Clang 14 with libstdc++ 12 has no std::source_location: the same three
// facts from the builtins both compilers have (in a default argument they
// name the call site, as std::source_location::current() does).
class CallSite {
 public:
  static constexpr CallSite current(
      const char* function = __builtin_FUNCTION(),
      const char* file = __builtin_FILE(),
      std::uint_least32_t line = __builtin_LINE()) noexcept {
    CallSite c;
    c.function_ = function;
    c.file_ = file;
    c.line_ = line;
    return c;
  }
  constexpr const char* function_name() const noexcept { return function_; }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr std::uint_least32_t line() const noexcept { return line_; }

 private:
  const char* function_ = "";
  const char* file_ = "";
  std::uint_least32_t line_ = 0;
};
#endif
}  // namespace runtime_internal

// `where` is the caller's position, recorded for the "created by" line of
// fiber dumps (goro::dump_fibers); leave it defaulted.
template <typename F>
void go(
    const SpawnOptions& options, F&& fn,
    runtime_internal::CallSite where = runtime_internal::CallSite::current()) {
  using Fn = std::decay_t<F>;
  static_assert(std::is_invocable_v<Fn&>,
                "goro::go: the callable must take no arguments");
  runtime_internal::Fiber* f = runtime_internal::fiber_new(&options);
  try {
    void* mem =
        runtime_internal::fiber_closure_storage(f, sizeof(Fn), alignof(Fn));
    ::new (mem) Fn(std::forward<F>(fn));
  } catch (...) {
    runtime_internal::fiber_discard(f);
    throw;
  }
  runtime_internal::fiber_start(
      f, [](void* p) { std::invoke(*static_cast<Fn*>(p)); },
      [](void* p) { static_cast<Fn*>(p)->~Fn(); }, where.function_name(),
      where.file_name(), where.line());
}

template <typename F>
void go(F&& fn, runtime_internal::CallSite where =
                    runtime_internal::CallSite::current()) {
  static const SpawnOptions kDefault;
  go(kDefault, std::forward<F>(fn), where);
}

}  // namespace goro

#endif  // GORO_RUNTIME_GO_H_
