// Copyright goro authors.
//
// The code map: which loaded code a fiber may be preempted in, and the
// unwind tables the preemption walk needs, learned once, outside any signal
// handler, so that the walk itself never calls dl_iterate_phdr.
//
// "Code that may be preempted" is a set of objects: the program and its own
// libraries are allowed; the C library and the rest of glibc, libm,
// libstdc++, libgcc_s, libatomic, the dynamic loader, the vDSO, libunwind and
// the sanitizer runtimes are denied, and so is goro's own runtime text (the
// goro_text section). Shared objects are classified by file name; the
// runtimes linked statically into the program (libstdc++, libgcc, ...) by
// the range denied_text.lds gathers them into (goro_denied_text). A program
// linked without that script is denied whole, and so is a shared object
// that calls __cxa_guard_acquire itself (its function-local statics' guards
// cannot be counted: code_map.cc, calls_cxa_guard). Code in no known object
// (JIT code, an object loaded after the map was built) is unknown, and unknown
// refuses.
//
// Once libunwind is loaded (unwinder.h: by sysmon, before its first round),
// each executable segment with a usable .eh_frame_hdr binary-search table is
// also registered with libunwind's dynamic unwind-info list
// (_U_dyn_register), which libunwind consults before its own
// dl_iterate_phdr-based search. A map built before that registers nothing,
// and code_has_unwind_info is false for every address in it. The walk only
// lets libunwind look up an address for which code_has_unwind_info() found
// an FDE in that table, so libunwind never falls back to dl_iterate_phdr
// (which takes the loader lock).
//
// Not for use by anything but the preemption code in preempt/internal/ (and
// its stack-overflow backtrace, fault_backtrace.cc, which needs the same
// lock-free unwinding).

#ifndef GORO_PREEMPT_INTERNAL_CODE_MAP_H_
#define GORO_PREEMPT_INTERNAL_CODE_MAP_H_

#include <cstdint>

namespace goro::preempt_internal {

enum class CodeKind : std::uint8_t {
  kUnknown,  // in no object the map knows: refuse
  kAllowed,  // the program or one of its other libraries
  kDenied,   // libc, libstdc++, the loader, libunwind, sanitizers, ...
  kGoro,     // goro's runtime text (goro_text): never switch here
};

struct CodeSegment;

// Longest object file name a segment keeps (longer ones are cut).
inline constexpr int kCodeObjectNameMax = 256;

// (Re)builds the map from dl_iterate_phdr and, if libunwind is loaded,
// registers the unwind tables with it. Not async-signal-safe: called when a
// runtime starts and when its sysmon starts (after loading libunwind), before
// sysmon can send a signal, and never while a walk may run. Cheap when no
// object was loaded or unloaded and libunwind was already loaded at the
// last call.
void code_map_refresh();

// What kind of code `pc` is in; *seg (if not null) gets its segment, or null.
// Async-signal-safe: a binary search over a fixed array, no lock.
CodeKind code_kind(std::uintptr_t pc, const CodeSegment** seg = nullptr);

// The executable segment holding `pc` (goro_text included), or null.
// Async-signal-safe, like code_kind.
const CodeSegment* code_segment(std::uintptr_t pc);

// The segment's object file (the program's own path for the program) and
// load bias: pc - base is the address addr2line takes for that file.
// Async-signal-safe.
const char* code_segment_object(const CodeSegment* seg);
std::uintptr_t code_segment_base(const CodeSegment* seg);

// True if the segment's .eh_frame_hdr table is registered with libunwind
// and has an FDE covering `ip`. Uses libunwind's table search without
// unwind info (no allocation, no lock).
bool code_has_unwind_info(const CodeSegment* seg, std::uintptr_t ip);

// The number of segments known, and of those registered with libunwind
// (0 until libunwind is loaded: the walk and the overflow backtrace check
// it). Async-signal-safe.
int code_map_segments();
int code_map_registered();

}  // namespace goro::preempt_internal

#endif  // GORO_PREEMPT_INTERNAL_CODE_MAP_H_
