// Copyright goro authors.
//
// The out-of-line entry points behind goro's public templates (go, run,
// blocking, park). Not for users: include "goro.h" instead.

#ifndef GORO_RUNTIME_INTERNAL_API_H_
#define GORO_RUNTIME_INTERNAL_API_H_

#include <cstddef>
#include <cstdint>

#include "runtime/options.h"

namespace goro::runtime_internal {

struct Fiber;

// Spawning: fiber_new validates and reserves a fiber (throws
// std::logic_error outside a runtime, std::invalid_argument for a bad stack
// size); closure_storage gives memory for the closure (inline or heap; may
// throw std::bad_alloc); fiber_start queues it; fiber_discard undoes
// fiber_new when constructing the closure threw.
Fiber* fiber_new(const SpawnOptions* opts);
void* fiber_closure_storage(Fiber* f, std::size_t size, std::size_t align);
// created_*: go()'s caller, for dumps (static strings).
void fiber_start(Fiber* f, void (*invoke)(void*), void (*destroy)(void*),
                 const char* created_function = nullptr,
                 const char* created_file = nullptr,
                 std::uint32_t created_line = 0);
void fiber_discard(Fiber* f);

// run's body: runs main_fn(arg) as the main fiber of a new runtime.
void run_main(const Options& opts, void (*main_fn)(void*), void* arg);

// blocking(): release the P before a call that may block; take one back
// after. Return false from enter when not on a fiber (nothing to do).
bool blocking_enter();
void blocking_exit();

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_API_H_
