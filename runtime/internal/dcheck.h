// Copyright goro authors.
//
// GORO_DCHECK(cond): an invariant check that is on in debug builds
// (--config=dbg, i.e. without NDEBUG) and in the sanitizer builds
// (--config=asan/tsan define __SANITIZE_*__; --config=ubsan defines
// GORO_ENABLE_DCHECK in .bazelrc), and compiled out of optimized builds. A
// failed check prints "goro: DCHECK failed: <cond> at <file>:<line>" and
// aborts. Async-signal-safe (write(2) and abort), so it may be used in
// signal handlers and in the preemption path.

#ifndef GORO_RUNTIME_INTERNAL_DCHECK_H_
#define GORO_RUNTIME_INTERNAL_DCHECK_H_

#if !defined(NDEBUG) || defined(__SANITIZE_ADDRESS__) || \
    defined(__SANITIZE_THREAD__) || defined(GORO_ENABLE_DCHECK)
#define GORO_DCHECK_IS_ON 1
#else
#define GORO_DCHECK_IS_ON 0
#endif

namespace goro::runtime_internal {
[[noreturn]] void dcheck_failed(const char* cond, const char* file, int line);
}  // namespace goro::runtime_internal

#define GORO_DCHECK(cond)                                                 \
  do {                                                                    \
    if (GORO_DCHECK_IS_ON && !(cond)) {                                   \
      ::goro::runtime_internal::dcheck_failed(#cond, __FILE__, __LINE__); \
    }                                                                     \
  } while (0)

#endif  // GORO_RUNTIME_INTERNAL_DCHECK_H_
