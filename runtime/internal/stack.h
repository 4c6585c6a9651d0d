// Copyright goro authors.
//
// Fiber stacks: fixed-size reservations carved from large MAP_NORESERVE
// chunks, so a million stacks cost a few thousand mappings, committed lazily
// by the kernel page by page.
//
// Each stack has a guard region of kGuardSize (64 KiB) below its lowest
// usable byte. Guards are installed with madvise(MADV_GUARD_INSTALL) (Linux
// >= 6.13), which marks the pages inside the mapping without splitting it.
// Older kernels get a documented fallback: mprotect(PROT_NONE) guards while a
// budget lasts (each one splits a mapping, and vm.max_map_count is ~65530),
// then a canary word at the lowest usable address, checked every time the
// fiber switches out. The guarantee each gives is in docs/runtime.md
// ("Stack overflow"): with a protected guard, every overflow by code built
// with -fstack-clash-protection (which touches every page a frame spans),
// and every frame up to kGuardSize without it, faults in the guard and is
// reported by the SIGSEGV handler (signals.cc), which finds the guard region
// of any fiber's stack with find_guard().
//
// Why 64 KiB: the guard costs page-table entries (MADV_GUARD_INSTALL marks
// each page in the PTE; 16 entries, 128 bytes per stack) and spreads the
// stacks over more address space (more page-table pages: VmPTE for a million
// parked fibers went from 130 MiB to the figure in docs/runtime.md). 64 KiB
// covers the frames that ordinary code without the flag makes (the largest
// measured local buffers are a few KiB; glibc's own are below 64 KiB); 1 MiB
// would cost ~2 KB of page tables per fiber and 16x the address space.
//
// Threading: StackAllocator is shared by all Ps; its lock guards the chunk
// list and the free lists. The per-P StackCache is owner-only.

#ifndef GORO_RUNTIME_INTERNAL_STACK_H_
#define GORO_RUNTIME_INTERNAL_STACK_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace goro::runtime_internal {

inline constexpr std::size_t kPageSize = 4096;
inline constexpr std::size_t kGuardSize = 64 * 1024;
inline constexpr std::uint64_t kStackCanary = 0x676f726f5f636e72ULL;

// The main fiber's stack: what a thread gets by default (ulimit -s), since
// programs put their whole main inside goro::run. Reserved, not committed.
inline constexpr std::size_t kMainStackSize = 8u << 20;

// The smallest stack size accepted (validate_stack_size): large enough for
// an asynchronous preemption's save area (preempt_stack_need()) plus
// kMinFrameRoom of the fiber's own frames, and never below 16 KiB. On a CPU
// with AVX-512 and AMX (11,008-byte XSAVE area) that is 20 KiB in optimized
// builds, 24 KiB at -O0 and 28 KiB under sanitizers (bigger frames).
std::size_t min_stack_size();
inline constexpr std::size_t kMinFrameRoom = 4096;

// The CPU's XSAVE area for the features the OS enabled (XCR0), probed once
// with CPUID leaf 0xD and XGETBV. size == 0 when the OS enables no XSAVE.
struct XsaveLayout {
  std::size_t size = 0;
  std::uint64_t mask = 0;  // XCR0
};
const XsaveLayout& xsave_layout();

// Bytes an asynchronous preemption writes below the interrupted rsp: the
// 128-byte red zone, the pushed return address, 16 saved registers, up to 63
// bytes of alignment, the XSAVE area, kPreemptFrames for the frames the
// trampoline calls (goro_async_preempt_yield down to the context switch, and
// back up through finish_switch on resume), and kPreemptWalkEntry for the
// frames that take the safe-point walk to the scheduler stack. The SIGURG
// handler refuses (refused_stack) when less is free; min_stack_size() leaves
// room for it, so that every fiber can be preempted.
std::size_t preempt_stack_need();

// kPreemptFrames: the most the check below measured (preempt_test,
// preempt_stack_test, signal_chain_test, select_test, timer_test,
// netpoll_test; tens of thousands of preemptions), with margin: 712 bytes at
// -O2 (2026-11-30; the deepest path is the yield's network poll, with
// fibers waiting on sockets; it had grown to 1,224 while netpoll_queue_ready
// and runq_overflow kept 1 KiB arrays on the preempted fiber's stack), 1,672 at
// -O0 (--config=dbg; the yield runs timers on the fiber's stack), 3,944
// under ASan. These are upper bounds (the check's own frame is counted). A
// change that makes those frames deeper fails
// PreemptStack.FramesBelowAPreemptionFitTheirAllowance in the optimized
// build, and the check itself in the debug and sanitizer builds, rather than
// overflowing a small stack in the field.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr std::size_t kPreemptFrames = 8192;
#elif !defined(__OPTIMIZE__)
inline constexpr std::size_t kPreemptFrames = 3072;
#else
inline constexpr std::size_t kPreemptFrames = 1024;
#endif

// The frames that take preempt/'s libunwind walk from the trampoline to the
// M's scheduler stack (the walk itself runs there: preempt_walk.h).
// Unwind.WalkFitsInItsStackAllowance measures the whole use below the
// interrupted sp (an XSAVE area of 11,008 bytes included): 11,679 bytes at
// -O2, 16,615 at -O0 (--config=dbg), where every frame is bigger.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    !defined(__OPTIMIZE__)
inline constexpr std::size_t kPreemptWalkEntry = 4096;
#else
inline constexpr std::size_t kPreemptWalkEntry = 512;
#endif

// High-water check of kPreemptFrames, on in debug builds (GORO_DCHECK_IS_ON)
// and, in any build, while preempt_frames_measure(true) is set (a test turns
// it on, so that the optimized build's budget is checked too). Called by the
// asynchronous preemption with the address of the XSAVE area (its caller's
// stack pointer): paint fills the stack below the caller with a pattern,
// down to kPreemptFrames (plus a margin) below `save_area`; check, after the
// fiber resumed, records the depth the frames reached
// (preempt_frames_max_used), reports one deeper than kPreemptFrames on
// stderr, and aborts in debug builds. Both are async-signal-safe.
void preempt_frames_paint(const char* stack_lo, char* save_area);
void preempt_frames_check(const char* stack_lo, char* save_area);
void preempt_frames_measure(bool on);
bool preempt_frames_measuring();        // one relaxed load
std::size_t preempt_frames_max_used();  // since the process started

enum class GuardKind : std::uint8_t { kNone, kMadvise, kMprotect, kCanary };

struct Stack {
  char* lo = nullptr;  // lowest usable byte; the guard is [lo - kGuardSize, lo)
  std::size_t size = 0;  // usable bytes
  GuardKind guard = GuardKind::kNone;

  char* hi() const { return lo + size; }
  bool empty() const { return lo == nullptr; }
  // True when a fault at `addr` is an overflow of this stack.
  bool guard_contains(const void* addr) const {
    const char* a = static_cast<const char*>(addr);
    return lo != nullptr && a >= lo - kGuardSize && a < lo;
  }
  // True when `addr` is in this stack's usable range.
  bool contains(const void* addr) const {
    const char* a = static_cast<const char*>(addr);
    return lo != nullptr && a >= lo && a < hi();
  }
  bool canary_intact() const {
    return guard != GuardKind::kCanary ||
           *reinterpret_cast<const std::uint64_t*>(lo) == kStackCanary;
  }
};

// find_guard reports whether `addr` lies in the guard region of any stack
// of any live StackAllocator and, if so, which stack the region guards (its
// usable range; guard is that allocator's guard kind). Async-signal-safe: a
// lock-free scan of the chunk registry (one entry per 16 MiB chunk, so a
// million default stacks are ~20,000 entries). Used only when reporting a
// fault.
bool find_guard(const void* addr, Stack* guarded);

// How guards are made; kAuto probes the kernel. The others exist so tests can
// exercise the fallbacks on a kernel that has MADV_GUARD_INSTALL.
enum class GuardMode { kAuto, kMprotect, kCanary };

class StackAllocator {
 public:
  explicit StackAllocator(GuardMode mode = GuardMode::kAuto,
                          std::size_t mprotect_budget = 16384);
  ~StackAllocator();  // unmaps every chunk: all stacks die with it
  StackAllocator(const StackAllocator&) = delete;
  StackAllocator& operator=(const StackAllocator&) = delete;

  // allocate returns a stack of `size` usable bytes (a multiple of kPageSize).
  // Throws std::bad_alloc when the address space is exhausted.
  Stack allocate(std::size_t size);

  // release returns a stack for reuse. Its memory is given back to the kernel
  // (MADV_DONTNEED) first; the reservation and the guard stay.
  void release(Stack s);

  // Batch forms, one lock round trip for many stacks (the per-P caches
  // exchange stacks with the allocator half a cache at a time).
  // release_batch keeps the stacks as they are ("warm": their touched pages
  // stay committed, so the next fiber does not fault them in again, and no
  // TLB shootdown interrupts the other threads); scavenge() returns the
  // memory later, like Go's background scavenger. allocate_batch hands out
  // warm stacks first, or with Prefer::kCold stacks whose memory is already
  // back with the kernel (for reservations that may wait long before they
  // run: see StackCache).
  enum class Prefer { kWarm, kCold };
  void allocate_batch(std::size_t size, std::size_t n, std::vector<Stack>* out,
                      Prefer prefer = Prefer::kWarm);
  void release_batch(const Stack* s, std::size_t n);

  // scavenge gives the memory of warm stacks beyond kWarmKeep per size (at
  // most `max` of them per call) back to the kernel. Called periodically by
  // sysmon; returns how many stacks it released.
  std::size_t scavenge(std::size_t max);

  // Warm stacks a size keeps through scavenging. A stack's warm pages are
  // usually one or two (what its fiber touched).
  static constexpr std::size_t kWarmKeep = 1024;

  // The kind of guard new stacks get (after probing).
  GuardKind guard_kind() const;

  // keep_mapped leaves `s` (and its guard) mapped when the allocator is
  // destroyed: a runtime that ends while something may still use a fiber's
  // stack (a thread inside goro::blocking(), a sync object pointing at a
  // parked fiber's waiter) hands that stack's ownership to someone else.
  void keep_mapped(const Stack& s);

 private:
  struct FreeList {
    std::vector<Stack> warm;    // memory possibly committed
    std::vector<Stack> stacks;  // memory returned to the kernel
  };
  void grow_locked(std::size_t size, FreeList& list);
  GuardKind guard_locked(char* guard_page);

  mutable std::mutex mu_;
  // Guarded by mu_:
  GuardMode mode_;
  GuardKind kind_ = GuardKind::kNone;  // kNone until probed
  std::size_t mprotect_budget_;
  std::map<std::size_t, FreeList> free_;  // by usable size
  struct Chunk {
    char* base;
    std::size_t bytes;
    // Valgrind's id of each stack in the chunk (VALGRIND_STACK_REGISTER),
    // by slot; empty outside Valgrind.
    std::vector<unsigned> valgrind_ids;
  };
  std::vector<Chunk> chunks_;
  std::vector<Stack> kept_;  // see keep_mapped
};

// A P's private cache of default-size stacks, in two lists.
//
// go() reserves its fiber's stack at once (so that running out of address
// space is a std::bad_alloc from go(), with nothing queued), but a fiber may
// wait in a queue long before it runs, and a program that queues many (a
// million go() calls in a loop; skynet's tree, run breadth first) would hold
// as many distinct stacks. If each one ran on the stack it reserved, every
// one of them would fault in fresh pages: 4 GiB of RSS for a million
// fibers that each touch one page. So a reservation takes a *cold* stack
// (one that has not been run on, or whose memory went back to the kernel),
// and when the fiber first runs, swap_for_warm exchanges it for the stack
// the P's last finished fiber left (its pages are committed and in cache).
// The fibers that are running or parked touch stacks; the queued ones only
// hold address space, as in Go, where a new goroutine takes a free stack
// from its P's gFree list.
//
//   warm_: stacks a fiber ran on (put by fiber_free); LIFO, so the next
//          fiber runs on the hottest one.
//   cold_: stacks reserved by go() and given back unused by swap_for_warm,
//          or refilled from the allocator with Prefer::kCold.
// Each list holds at most kCap; the excess (half) goes back to the
// allocator (warm-listed there: scavenge returns it to the kernel later).
// Owner-only (the P's M): no lock.
class StackCache {
 public:
  static constexpr std::size_t kCap = 128;

  // reserve returns a stack of `size` for a fiber that has not run yet:
  // default-size stacks come from cold_, refilled kCap/2 at a time. Throws
  // std::bad_alloc when the address space is exhausted.
  Stack reserve(StackAllocator& a, std::size_t size, std::size_t default_size);

  // swap_for_warm is called when a fiber first runs on this P: if `*s` (its
  // reserved stack) is of the default size and a warm stack is cached, the
  // two are exchanged (the reserved one is kept cold for the next go()).
  // Never allocates, never throws.
  void swap_for_warm(StackAllocator& a, Stack* s, std::size_t default_size);

  // put caches a default-size stack its fiber ran on (warm); a full list
  // gives half back. Stacks of other sizes go back to the allocator.
  void put(StackAllocator& a, Stack s, std::size_t default_size);

  void drain() {  // the allocator is about to unmap them
    warm_.clear();
    cold_.clear();
  }

 private:
  void push_bounded(StackAllocator& a, std::vector<Stack>* list, Stack s);

  std::vector<Stack> warm_;  // all of the default size
  std::vector<Stack> cold_;  // all of the default size
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_STACK_H_
