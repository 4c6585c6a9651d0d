// Copyright goro authors.
//
// libunwind, loaded when first needed instead of with the program.
//
// What. The libunwind functions goro calls -- the preemption walk
// (preempt_walk.cc), the code map's unwind-table registration
// (code_map.cc), the stack-overflow backtrace (fault_backtrace.cc) and the
// fiber dump (diag/internal/dump.cc) -- as a table of pointers resolved
// from libunwind.so.8, opened with dlopen(RTLD_NOW | RTLD_LOCAL). goro's
// library targets do not link libunwind: a program that never runs long
// enough to need it never maps it (nor its liblzma), which was about a
// sixth of an empty goro::run's wall time (bench/README.md, "Start-up").
// <libunwind.h> (with UNW_LOCAL_ONLY) is included for its types only; a
// direct call of an unw_* function no longer links.
//
// Who loads it, and when. sysmon's thread, before its first round
// (Hooks::on_sysmon_start, preempt/internal/hooks.cc): before sysmon can
// send the first SIGURG, so every walk finds it loaded and the code map's
// tables registered. A run shorter than sysmon's start delay never loads
// it. Explicit callers outside signal handlers (goro::dump_fibers, the
// SIGQUIT dump on sysmon's thread, the uncaught-exception backtrace) load
// it on demand.
//
// Guarantees. unwinder() is one acquire load: async-signal-safe, and a
// non-null result is a completely filled table that never changes or goes
// away (the library is never closed). "Not loaded" is a normal answer that
// every reader handles: the walk refuses (no switch), the overflow
// backtrace follows frame pointers instead (fault_backtrace.cc), the dump
// says it has no stacks. unwinder_load() is not async-signal-safe (dlopen
// takes the loader lock and allocates): never from a signal handler, nor
// from a preemption walk. If the library cannot be loaded (not installed,
// a symbol missing), unwinder_load() prints one message to stderr and
// returns null from then on: goro keeps working, with fibers preempted only
// at cooperative points (docs/preemption.md, "The code map").
//
// Cost. The first unwinder_load(): dlopen of libunwind.so.8 and liblzma.so.5
// with immediate binding, about 0.1-0.2 ms. Every later call: one acquire
// load.

#ifndef GORO_PREEMPT_INTERNAL_UNWINDER_H_
#define GORO_PREEMPT_INTERNAL_UNWINDER_H_

#define UNW_LOCAL_ONLY
#include <libunwind.h>

namespace goro::preempt_internal {

// libunwind's local-only (_ULx86_64_*) entry points, in the names of
// <libunwind.h> without the unw_ prefix.
struct Unwinder {
  int (*init_local)(unw_cursor_t* c, unw_context_t* ctx);
  int (*init_local2)(unw_cursor_t* c, unw_context_t* ctx, int flags);
  int (*get_reg)(unw_cursor_t* c, unw_regnum_t reg, unw_word_t* value);
  int (*step)(unw_cursor_t* c);
  int (*get_save_loc)(unw_cursor_t* c, int reg, unw_save_loc_t* loc);
  int (*is_signal_frame)(unw_cursor_t* c);
  int (*get_proc_info)(unw_cursor_t* c, unw_proc_info_t* pi);
  int (*set_caching_policy)(unw_addr_space_t as, unw_caching_policy_t p);
  // Defined by libunwind (PROTECTED in its source) but not declared in its
  // public headers: the binary search of an .eh_frame_hdr table that
  // libunwind itself runs on a table found by dl_iterate_phdr.
  int (*dwarf_search_unwind_table)(unw_addr_space_t as, unw_word_t ip,
                                   unw_dyn_info_t* di, unw_proc_info_t* pi,
                                   int need_unwind_info, void* arg);
  void (*dyn_register)(unw_dyn_info_t* di);
  void (*dyn_cancel)(unw_dyn_info_t* di);
  // The value of unw_local_addr_space (a variable in libunwind).
  unw_addr_space_t local_addr_space;
};

// The table, or null if libunwind is not loaded (yet, or at all).
// Async-signal-safe.
const Unwinder* unwinder();

// Loads libunwind on the first call (thread-safe; later calls wait for the
// first) and returns the table, or null if it cannot be loaded (reported
// once on stderr). Not async-signal-safe.
const Unwinder* unwinder_load();

}  // namespace goro::preempt_internal

#endif  // GORO_PREEMPT_INTERNAL_UNWINDER_H_
