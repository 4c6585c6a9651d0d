// The code map's classes of code (preempt/internal/code_map.h) for the link
// mode goro programs use: libstdc++, libgcc and the other runtimes linked
// statically into the program are denied (gathered by denied_text.lds), as
// their shared objects are, while the program's own code stays allowed and
// goro's runtime text is kGoro. Under the sanitizer configs libstdc++ is
// shared (.bazelrc), and the same classes hold by file name. A shared
// object that calls __cxa_guard_acquire itself is denied.

#include "preempt/internal/code_map.h"

#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "gtest/gtest.h"

extern "C" const char __start_goro_denied_text[]
    __attribute__((weak, visibility("hidden")));
extern "C" int __real___cxa_guard_acquire(__cxxabiv1::__guard*);
// In libgoro_test_so_spin.so: plain user code.
extern "C" std::uint64_t so_spin(const std::atomic<bool>* stop,
                                 std::int64_t max_ns);

namespace {

using goro::preempt_internal::code_kind;
using goro::preempt_internal::CodeKind;

template <typename F>
std::uintptr_t addr(F* f) {
  return reinterpret_cast<std::uintptr_t>(f);
}

__attribute__((noinline)) int user_function(int x) { return x * 3 + 1; }

TEST(CodeMap, StaticRuntimesAreDeniedAndTheProgramIsAllowed) {
  goro::preempt_internal::code_map_refresh();
  // Every goro link carries the linker script.
  EXPECT_NE(__start_goro_denied_text, nullptr);
  // libstdc++: a function compiled into the library, not into this file.
  EXPECT_EQ(code_kind(addr(&std::_Hash_bytes)), CodeKind::kDenied);
  // libsupc++'s guard: every call in the program goes to goro's counting
  // wrapper (goro_text), which reaches libstdc++'s definition by --wrap's
  // __real_ name (denied). Under the sanitizers that is libstdc++.so's, or
  // the sanitizer's interceptor.
  EXPECT_EQ(code_kind(addr(&__cxxabiv1::__cxa_guard_acquire)), CodeKind::kGoro);
  EXPECT_EQ(code_kind(addr(&__real___cxa_guard_acquire)), CodeKind::kDenied);
  // The program's own code.
  EXPECT_EQ(code_kind(addr(&user_function)), CodeKind::kAllowed);
  EXPECT_EQ(code_kind(addr(&goro::preempt_internal::code_map_refresh)),
            CodeKind::kAllowed);
  EXPECT_EQ(user_function(1), 4);
}

TEST(CodeMap, SharedObjectCallingCxaGuardIsDenied) {
  // Loaded here rather than linked: linked, it would also provide the
  // program's own __cxa_guard_acquire (it exports its libstdc++ copy).
  void* h = dlopen("tests/preempt/libgoro_test_so_cxx.so", RTLD_NOW);
  ASSERT_NE(h, nullptr) << dlerror();
  auto* init = reinterpret_cast<int (*)(int)>(dlsym(h, "so_cxx_static_init"));
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init(3), 3);
  goro::preempt_internal::code_map_refresh();
  // Its function-local static takes its own libstdc++'s guard, which
  // os_locks.cc cannot count: no switch inside its code.
  EXPECT_EQ(code_kind(addr(init)), CodeKind::kDenied);
  // User code in a shared object that makes no guard calls is preempted.
  EXPECT_EQ(code_kind(addr(&so_spin)), CodeKind::kAllowed);
}

}  // namespace
