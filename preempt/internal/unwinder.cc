// Copyright goro authors.
//
// Loading libunwind (see unwinder.h).
//
// Invariants:
//   U1  g_table is null until g_storage is completely filled and libunwind
//       has run its one-time set-up; it is then stored once, with release,
//       and never changed: a reader that loads it with acquire (a signal
//       handler included) sees every pointer and libunwind's set-up.
//   U2  Only unwinder_load() writes g_storage and g_failed, under g_load_mu,
//       and never from a signal handler. The library is never closed, so
//       the pointers stay valid for the process's life.
//   U3  RTLD_LOCAL: libunwind's own definitions of the C++ exception ABI
//       (_Unwind_*) do not enter the global scope, so throw/catch keep
//       binding to GCC's unwinder whatever the link order.

#include "preempt/internal/unwinder.h"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

namespace goro::preempt_internal {
namespace {

// The soname Debian's libunwind 1.6.2 (libunwind8) installs; the file the
// -lunwind of earlier goro builds put in DT_NEEDED.
constexpr char kLibrary[] = "libunwind.so.8";

Unwinder g_storage;
std::atomic<const Unwinder*> g_table{nullptr};  // U1
std::mutex g_load_mu;                           // U2
bool g_failed = false;

// Resolves `name` into *fn; false (and `name` in *missing) if absent.
template <typename Fn>
bool resolve(void* lib, const char* name, Fn* fn, std::string* missing) {
  void* p = dlsym(lib, name);
  if (p == nullptr) {
    *missing = name;
    return false;
  }
  *fn = reinterpret_cast<Fn>(p);
  return true;
}

void report_failure(const std::string& why) {
  const std::string msg =
      "goro: cannot load " + std::string(kLibrary) + " (" + why +
      "): asynchronous preemption is off, fibers switch only at cooperative "
      "points, and stack dumps have no frames (install libunwind8; "
      "docs/preemption.md, \"The code map\")\n";
  (void)!write(STDERR_FILENO, msg.data(), msg.size());
}

}  // namespace

const Unwinder* unwinder() { return g_table.load(std::memory_order_acquire); }

const Unwinder* unwinder_load() {
  if (const Unwinder* u = unwinder()) return u;
  std::lock_guard<std::mutex> lock(g_load_mu);
  if (const Unwinder* u = g_table.load(std::memory_order_relaxed)) return u;
  if (g_failed) return nullptr;
  // RTLD_NOW: every lookup happens here, not at a first call from a walk
  // (the lazy resolver could take the loader lock inside one).
  void* lib = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    g_failed = true;
    const char* err = dlerror();
    report_failure(err != nullptr ? err : "dlopen failed");
    return nullptr;
  }
  Unwinder& u = g_storage;
  std::string missing;
  unw_addr_space_t* local_as = nullptr;
  const bool ok =
      resolve(lib, "_ULx86_64_init_local", &u.init_local, &missing) &&
      resolve(lib, "_ULx86_64_init_local2", &u.init_local2, &missing) &&
      resolve(lib, "_ULx86_64_get_reg", &u.get_reg, &missing) &&
      resolve(lib, "_ULx86_64_step", &u.step, &missing) &&
      resolve(lib, "_ULx86_64_get_save_loc", &u.get_save_loc, &missing) &&
      resolve(lib, "_ULx86_64_is_signal_frame", &u.is_signal_frame, &missing) &&
      resolve(lib, "_ULx86_64_get_proc_info", &u.get_proc_info, &missing) &&
      resolve(lib, "_ULx86_64_set_caching_policy", &u.set_caching_policy,
              &missing) &&
      resolve(lib, "_ULx86_64_dwarf_search_unwind_table",
              &u.dwarf_search_unwind_table, &missing) &&
      resolve(lib, "_U_dyn_register", &u.dyn_register, &missing) &&
      resolve(lib, "_U_dyn_cancel", &u.dyn_cancel, &missing) &&
      resolve(lib, "_ULx86_64_local_addr_space", &local_as, &missing);
  if (!ok) {
    // A different library under that name: nothing of it is used.
    g_failed = true;
    report_failure("no symbol " + missing);
    return nullptr;
  }
  u.local_addr_space = *local_as;
  // libunwind's one-time set-up (tdep_init, run by the first unw_* call that
  // needs it) takes a lock and fills globals that later calls read without
  // one, behind a plain "done" flag: do it here, before the release store,
  // so that every thread that sees the table sees it done (U1; ThreadSanitizer
  // reported the race when the first call came after the store). Per-thread
  // caching would keep its cache of parsed frames lock-free; Debian's 1.6.2
  // build falls back to the global cache, whose lock each step takes with
  // every signal blocked (see preempt_walk.cc).
  u.set_caching_policy(u.local_addr_space, UNW_CACHE_PER_THREAD);
  g_table.store(&u, std::memory_order_release);  // U1
  return &u;
}

}  // namespace goro::preempt_internal
