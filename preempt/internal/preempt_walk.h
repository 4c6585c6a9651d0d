// Copyright goro authors.
//
// The async-safe-point walk and the return-address hijack.
//
// The SIGURG handler only makes the cheap checks (a user fiber, a pending
// request, no lock or NoPreempt, a known pc outside goro_text, stack room)
// and then sends the fiber into goro_async_preempt. There, with every
// register saved and the signal over, goro_async_preempt_yield walks the
// interrupted stack with libunwind (DWARF CFI, from the interrupted context)
// up to the fiber's entry frame:
//   * every frame in code that may be preempted (code_map.h): yield;
//   * frames in denied code (libc, libstdc++, the loader, ... or goro_text),
//     each further frame out to the entry in allowed code: hijack the return
//     of the outermost denied frame -- its return slot gets the address of
//     goro_hijack_stub -- and resume. The switch happens when that frame
//     returns, the first moment at which no denied frame is on the stack;
//   * a hijack of this fiber already pending on the stack: resume;
//   * anything else (an unknown object, no FDE, a frame libunwind cannot
//     step, too deep, an unusual return slot): refuse and resume.
// See "Why the walk runs in the trampoline" in preempt_walk.cc.
//
// The hijack table: the real return addresses of hijacked frames, at a fixed
// address so that the stub's CFI (a DWARF expression; no relocation) can
// find them. Entry index = ((S >> 3) * 0x9e3779b97f4a7c15) >> 52 for the
// slot address S; must match async_preempt_x86_64.S.

#ifndef GORO_PREEMPT_INTERNAL_PREEMPT_WALK_H_
#define GORO_PREEMPT_INTERNAL_PREEMPT_WALK_H_

#include <cstddef>
#include <cstdint>

#include "runtime/internal/fiber.h"
#include "runtime/internal/stack.h"

namespace goro::preempt_internal {

// What goro_async_preempt and goro_hijack_stub push, lowest address first
// (async_preempt_x86_64.S).
struct TrampolineFrame {
  std::uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx,
      rbx, rax, rflags;
  std::uint64_t rip;  // interrupted pc, or the hijacked frame's real return
  std::uint64_t red_zone_gap[16];
  // The interrupted rsp is the address just past this struct.
};
static_assert(offsetof(TrampolineFrame, rip) == 128, "asm layout");
static_assert(sizeof(TrampolineFrame) == 264, "asm layout");

inline constexpr std::uintptr_t kHijackTableAddr = 0x3c6f72000000;
inline constexpr std::uint64_t kHijackMul = 0x9e3779b97f4a7c15;
inline constexpr int kHijackBits = 12;

inline std::size_t hijack_index(std::uintptr_t slot) {
  return static_cast<std::size_t>(((slot >> 3) * kHijackMul) >>
                                  (64 - kHijackBits));
}

// Maps the hijack table (once per process) and clears it (each runtime
// start). Without the table, refusals in denied code are not hijacked and
// are retried by sysmon as before.
void hijack_init();

// For the handler: true if `f` has a hijacked return pending on its stack
// (a hint kept per fiber; the walk is authoritative, see hijack_pending).
// Async-signal-safe.
bool hijack_pending(runtime_internal::Fiber* f, std::uintptr_t sp);

// Stack the walk needs on the fiber's stack below the trampoline's save
// area. The walk itself (a ucontext, libunwind's cursor and its DWARF
// machinery: 3.2 KiB measured for plain frames, more for frames whose CFI
// uses DWARF expressions) runs on the M's scheduler stack
// (goro_call_on_stack); this is only the frames that get it there. The
// runtime counts it in preempt_stack_need() and min_stack_size().
inline constexpr std::uint64_t kWalkStackNeed =
    runtime_internal::kPreemptWalkEntry;

// Counters for benchmarks and tests (relaxed; summed over all threads).
struct WalkStats {
  std::uint64_t walks = 0;            // walks made in the trampoline
  std::uint64_t walk_cycles = 0;      // TSC cycles spent in them
  std::uint64_t walk_frames = 0;      // frames visited
  std::uint64_t walk_preempt = 0;     // walks that ended in a switch
  std::uint64_t walk_failed = 0;      // unknown code, no CFI, cut short
  std::uint64_t hijacks = 0;          // returns hijacked
  std::uint64_t hijack_pending = 0;   // refused: a hijack already pending
  std::uint64_t hijack_switches = 0;  // switches at a hijacked return
  std::uint64_t hijack_returns = 0;   // hijacked returns taken (any)
  std::uint64_t walk_cpu_ns = 0;      // thread CPU time in walks, if timed
};
WalkStats walk_stats();

// Benchmarks: also measure each walk's thread CPU time (walk_cpu_ns), which
// costs two clock_gettime system calls per walk, so it is off by default.
void set_walk_cpu_timing(bool on);

}  // namespace goro::preempt_internal

extern "C" {
// Called by goro_async_preempt with all state saved (frame = its saves).
void goro_async_preempt_yield(goro::preempt_internal::TrampolineFrame* frame);
// Called by goro_hijack_stub: fills frame->rip with the real return address
// and switches if the fiber may be preempted there.
void goro_hijack_return(goro::preempt_internal::TrampolineFrame* frame);
// The address written over a hijacked return slot.
void goro_hijack_stub();
// Calls fn(arg) with rsp = stack_top (rounded down to 16), then returns.
void goro_call_on_stack(void (*fn)(void*), void* arg, void* stack_top);
}

#endif  // GORO_PREEMPT_INTERNAL_PREEMPT_WALK_H_
