// Copyright goro authors.
//
// The sanitizer interfaces the runtime calls at every switch and stack
// recycle (ASan's fiber switches and poisoning, TSan's fibers), included
// only in the builds that have them.

#ifndef GORO_RUNTIME_INTERNAL_SANITIZERS_H_
#define GORO_RUNTIME_INTERNAL_SANITIZERS_H_

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#endif  // GORO_RUNTIME_INTERNAL_SANITIZERS_H_
