// Copyright goro authors.
//
// The async-safe-point walk and the return-address hijack (see
// preempt_walk.h for what they decide).
//
// Why the walk runs in the trampoline, not in the signal handler.
// libunwind's DWARF step allocates each frame's parsed CIE from a pool that
// a pthread mutex guards (mempool_alloc), and on a miss in its own table
// search falls back to dl_iterate_phdr, which takes glibc's loader lock.
// Neither may happen in a signal handler, and a walk needs both paths
// sooner or later. So the handler makes only lock-free checks and sends the
// fiber into goro_async_preempt, which has saved every register; the walk
// runs there, on the fiber's stack, with the signal over. That is still
// "inside" whatever the fiber was doing, so the walk must not take a lock
// the interrupted code may hold. It takes two kinds:
//   * libunwind's pool lock: libunwind blocks every signal while it holds
//     its locks (lock_acquire masks with sigprocmask first), so SIGURG never
//     interrupts a holder: the interrupted code never holds it, and another
//     thread holds it only for a few instructions. No deadlock, no unbounded
//     wait.
//   * dl_iterate_phdr: never called. Every address the walk lets libunwind
//     look up is in a segment of the code map that has an FDE for it
//     (code_has_unwind_info), and every such segment's table is on
//     libunwind's dynamic list, which libunwind searches first. Anything
//     else ends the walk with a refusal before libunwind sees it.
// libunwind allocates nothing else on this path (no malloc: the pool grows
// with mmap), and its per-thread frame cache (UNW_CACHE_PER_THREAD) is a
// thread-local array with no lock. The runtime's own state is not touched:
// the fiber's no_preempt count is raised for the whole walk, so a second
// SIGURG meanwhile is refused by the handler.
//
// Rejected alternatives: walking in the handler with registered tables
// (still the pool lock on every cache miss); walking with our own DWARF
// interpreter (a second unwinder to keep right); a hardware breakpoint on
// the return address (perf_event_open is often forbidden in containers).
//
// Why the hijack is safe.
//   H1  The slot is written only by the fiber's own thread, in the
//       trampoline, while the fiber is stopped at the interrupted
//       instruction; the denied frame that owns it has not returned yet
//       (it is on the walked stack), and it was checked to hold exactly the
//       return address of the next frame out, with rsp = slot + 8 after the
//       return (a plain call/ret pair, not a signal frame).
//   H2  The table entry (real return address, owner) is written before the
//       slot and cleared only when the stub is done with it, so every
//       unwinder that finds the stub address in the slot -- gdb, libgcc for
//       a C++ exception thrown through the frame, libunwind for a stack dump
//       -- finds the real address through the stub's CFI.
//   H3  At most one hijack per fiber: the walk stops at a frame whose
//       return address is the stub (a pending hijack) and refuses. A hijack
//       that an exception or longjmp skipped is no longer on the stack, so
//       the next walk does not see it and may hijack again; its entry is
//       reclaimed when its slot's index is needed (the owner is this fiber,
//       or a fiber that has since exited).
//   H4  When the stub runs, the frames further out are those the walk found
//       in allowed code (they have not returned: the stub returns into the
//       innermost of them), so the stack has no denied frame; the stub
//       re-checks everything else the handler checks (locks, NoPreempt, a
//       regular P, the request) and otherwise simply returns.
//   H5  The fiber may be anywhere by then (it may have yielded, parked and
//       migrated): the table is global and indexed by the slot, and the stub
//       reads the current thread's M.
//   H6  No hijack while the fiber has an exception in flight
//       (std::uncaught_exceptions() != 0): libgcc identifies the handler's
//       frame by its CFA in phase 1 and looks for it again in phase 2 (also
//       after each cleanup pad, through _Unwind_Resume); a stub frame that
//       appeared in between shifts that identity and libgcc aborts. A hijack
//       made before the throw is seen by both phases and is fine.

#include "preempt/internal/preempt_walk.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ucontext.h>
#include <time.h>
#include <x86intrin.h>

#include <atomic>

#include "preempt/internal/code_map.h"
#include "preempt/internal/preempt.h"
#include "preempt/internal/unwinder.h"
#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"
#include "third_party/valgrind/memcheck.h"

namespace goro::preempt_internal {
namespace {

using runtime_internal::Fiber;
using runtime_internal::kRefusedPc;
using runtime_internal::M;

// The walk gives up (refuses) beyond this many frames.
constexpr int kMaxFrames = 256;

struct HijackEntry {
  std::atomic<std::uintptr_t> key;  // the slot; 0 = free
  std::atomic<std::uintptr_t> ret;  // the real return address (CFI reads it)
  std::atomic<Fiber*> owner;
  std::atomic<std::uint64_t> owner_id;
};
static_assert(sizeof(HijackEntry) == 32, "the stub's CFI assumes 32 bytes");
static_assert(offsetof(HijackEntry, ret) == 8, "the stub's CFI reads +8");

HijackEntry* g_table = nullptr;  // at kHijackTableAddr once mapped

// The owner of an entry whose fiber was abandoned in a raw call at the end
// of its run (offer_raw_abandon): its stub still runs when the call
// returns, perhaps during a later run, so neither hijack() nor
// hijack_init() may take the entry; the stub frees it. Never dereferenced.
char g_abandoned_tag;
Fiber* abandoned_owner() { return reinterpret_cast<Fiber*>(&g_abandoned_tag); }

// Per-fiber hint for the handler: the slot of the fiber's last hijack.
struct Hint {
  std::atomic<Fiber*> fiber{nullptr};
  std::atomic<std::uintptr_t> slot{0};
  std::atomic<int> fast_refusals{0};
};
constexpr std::size_t kHints = 1024;
Hint g_hints[kHints];
// Whether a runtime has run since the program started (hijack_init).
bool g_hints_used = false;

Hint& hint_for(const Fiber* f) {
  return g_hints[(reinterpret_cast<std::uintptr_t>(f) >> 6) % kHints];
}

struct Counters {
  std::atomic<std::uint64_t> walks{0}, walk_cycles{0}, walk_frames{0},
      walk_preempt{0}, walk_failed{0}, hijacks{0}, hijack_pending{0},
      hijack_switches{0}, hijack_returns{0}, walk_cpu_ns{0};
};
Counters g_counters;
std::atomic<bool> g_walk_cpu_timing{false};

std::uint64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}

enum class Walk { kPreempt, kHijack, kPending, kFailed };

struct Found {
  std::uintptr_t slot = 0;  // the return slot to hijack, 0 if none usable
  std::uintptr_t ret = 0;   // what it holds
};

bool is_fiber_entry(std::uintptr_t ip) {
  // The return address of goro_context_trampoline's call of the entry
  // function (its frame has rip undefined: the bottom of every fiber).
  const auto t = reinterpret_cast<std::uintptr_t>(&goro_context_trampoline);
  return ip > t && ip <= t + 16;
}

Walk walk(const TrampolineFrame* fr, const Fiber* f, Found* out, int* frames) {
  // No libunwind, no walk: refuse. sysmon loads it before it sends the
  // first signal, so this is only a program without it (unwinder.h); and
  // the map's tables must be registered, or libunwind's lookups would fall
  // back to dl_iterate_phdr (code_map.cc CM3; code_has_unwind_info refuses
  // frame by frame as well).
  const Unwinder* u = unwinder();
  if (u == nullptr || code_map_registered() == 0) return Walk::kFailed;
  const auto sp0 = reinterpret_cast<std::uintptr_t>(fr + 1);
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  ucontext_t uc;
  memset(&uc.uc_mcontext, 0, sizeof(uc.uc_mcontext));
  greg_t* g = uc.uc_mcontext.gregs;
  g[REG_R8] = static_cast<greg_t>(fr->r8);
  g[REG_R9] = static_cast<greg_t>(fr->r9);
  g[REG_R10] = static_cast<greg_t>(fr->r10);
  g[REG_R11] = static_cast<greg_t>(fr->r11);
  g[REG_R12] = static_cast<greg_t>(fr->r12);
  g[REG_R13] = static_cast<greg_t>(fr->r13);
  g[REG_R14] = static_cast<greg_t>(fr->r14);
  g[REG_R15] = static_cast<greg_t>(fr->r15);
  g[REG_RDI] = static_cast<greg_t>(fr->rdi);
  g[REG_RSI] = static_cast<greg_t>(fr->rsi);
  g[REG_RBP] = static_cast<greg_t>(fr->rbp);
  g[REG_RBX] = static_cast<greg_t>(fr->rbx);
  g[REG_RDX] = static_cast<greg_t>(fr->rdx);
  g[REG_RAX] = static_cast<greg_t>(fr->rax);
  g[REG_RCX] = static_cast<greg_t>(fr->rcx);
  g[REG_RSP] = static_cast<greg_t>(sp0);
  g[REG_RIP] = static_cast<greg_t>(fr->rip);
  g[REG_EFL] = static_cast<greg_t>(fr->rflags);
  unw_cursor_t c;
  // The interrupted pc is an instruction to resume, not a return address.
  if (u->init_local2(&c, &uc, UNW_INIT_SIGNAL_FRAME) < 0) return Walk::kFailed;
  bool prev_denied = false, any_denied = false, use_prev_instr = false;
  for (int depth = 0; depth < kMaxFrames; ++depth) {
    *frames = depth + 1;
    unw_word_t ip = 0, sp = 0;
    if (u->get_reg(&c, UNW_REG_IP, &ip) < 0 ||
        u->get_reg(&c, UNW_REG_SP, &sp) < 0 || sp < lo || sp > hi) {
      return Walk::kFailed;
    }
    if (ip == reinterpret_cast<std::uintptr_t>(&goro_hijack_stub)) {
      return Walk::kPending;  // H3
    }
    if (depth > 0 && is_fiber_entry(ip)) {
      if (!any_denied) return Walk::kPreempt;
      return out->slot != 0 ? Walk::kHijack : Walk::kFailed;
    }
    // A return address points after the call: look up the call itself.
    const std::uintptr_t at = use_prev_instr ? ip - 1 : ip;
    const CodeSegment* seg = nullptr;
    const CodeKind kind = code_kind(at, &seg);
    if (kind == CodeKind::kUnknown || seg == nullptr) return Walk::kFailed;
    const bool denied = kind != CodeKind::kAllowed;
    if (denied) {
      any_denied = true;
    } else if (prev_denied) {
      // The frame below is denied code about to return into this one: the
      // outermost such return seen so far (H1). Its slot is where libunwind
      // read this frame's ip.
      unw_save_loc_t loc;
      out->slot = 0;
      if (u->get_save_loc(&c, UNW_X86_64_RIP, &loc) == 0 &&
          loc.type == UNW_SLT_MEMORY && loc.u.addr + 8 == sp &&
          loc.u.addr >= lo && use_prev_instr &&
          *reinterpret_cast<const std::uintptr_t*>(loc.u.addr) == ip) {
        out->slot = loc.u.addr;
        out->ret = ip;
      }
    }
    prev_denied = denied;
    // Only addresses with an FDE in a registered table reach libunwind's
    // lookup, so it never falls back to dl_iterate_phdr.
    if (!code_has_unwind_info(seg, at)) return Walk::kFailed;
    // A signal frame's caller resumes at its pc, not after a call.
    use_prev_instr = u->is_signal_frame(&c) <= 0;
    if (u->step(&c) <= 0) return Walk::kFailed;
  }
  return Walk::kFailed;
}

struct WalkCall {
  const TrampolineFrame* frame;
  const Fiber* fiber;
  Found* found;
  int* frames;
  Walk result;
};

void walk_thunk(void* arg) {
  auto* c = static_cast<WalkCall*>(arg);
  c->result = walk(c->frame, c->fiber, c->found, c->frames);
}

// Walks on the M's scheduler (g0) stack: the walk needs a few KiB
// (3.2 KiB measured for plain frames; libunwind's DWARF machinery needs more
// for frames whose CFI uses expressions) on top of the XSAVE area, which a
// small fiber stack may not have to spare. g0 is suspended in a context
// switch, at g0_sp, while one of its fibers runs; the space below g0_sp is
// unused, and only this thread could resume g0, which it cannot do during
// the walk.
Walk walk_on_g0(M* m, const TrampolineFrame* fr, const Fiber* f, Found* out,
                int* frames) {
  WalkCall c{fr, f, out, frames, Walk::kFailed};
  if (m->g0_sp == nullptr) return Walk::kFailed;
  char* top = static_cast<char*>(m->g0_sp) - 256;
  // Memcheck takes g0's stack below its saved pointer for unaddressable:
  // the walk's frames are made valid (a no-op outside Valgrind).
  constexpr std::size_t kValgrindWalkStack = 64 * 1024;
  (void)VALGRIND_MAKE_MEM_UNDEFINED(top - kValgrindWalkStack,
                                    kValgrindWalkStack);
  goro_call_on_stack(walk_thunk, &c, top);
  return c.result;
}

// Writes the hijack (H1, H2). False if the slot's table entry belongs to
// another live fiber.
__attribute__((no_sanitize_address)) bool hijack(Fiber* f, const Found& h) {
  if (g_table == nullptr) return false;
  HijackEntry& e = g_table[hijack_index(h.slot)];
  const std::uintptr_t key = e.key.load(std::memory_order_acquire);
  if (key != 0 && key != h.slot) {
    Fiber* owner = e.owner.load(std::memory_order_relaxed);
    if (owner == abandoned_owner()) return false;
    // Fiber objects live until the runtime ends, and the table is cleared
    // when one starts: reading owner->id is safe. A different id means the
    // owner exited (its hijack died with its stack); our own stale entry
    // (H3) is reusable too.
    if (owner != f && owner != nullptr &&
        owner->id == e.owner_id.load(std::memory_order_relaxed)) {
      return false;
    }
  }
  e.ret.store(h.ret, std::memory_order_relaxed);
  e.owner.store(f, std::memory_order_relaxed);
  e.owner_id.store(f->id, std::memory_order_relaxed);
  e.key.store(h.slot, std::memory_order_release);
  *reinterpret_cast<std::uintptr_t*>(h.slot) =
      reinterpret_cast<std::uintptr_t>(&goro_hijack_stub);
  Hint& hint = hint_for(f);
  hint.slot.store(h.slot, std::memory_order_relaxed);
  hint.fast_refusals.store(0, std::memory_order_relaxed);
  hint.fiber.store(f, std::memory_order_release);
  return true;
}

}  // namespace

void hijack_init() {
  // A table left by an earlier runtime is cleared; a new mapping is zero
  // already, and clearing it would fault in every page of it (128 KiB) at
  // each program's start.
  if (g_table != nullptr) {
    for (std::size_t i = 0; i < (std::size_t{1} << kHijackBits); ++i) {
      HijackEntry& e = g_table[i];
      if (e.key.load(std::memory_order_acquire) == 0 ||
          e.owner.load(std::memory_order_relaxed) == abandoned_owner()) {
        continue;  // free, or still to be used by an abandoned thread
      }
      e.key.store(0, std::memory_order_relaxed);
      e.owner.store(nullptr, std::memory_order_relaxed);
    }
  }
#if !defined(__SANITIZE_THREAD__)  // TSan: no async preemption, and its
                                   // memory layout owns that address.
  if (g_table == nullptr) {
    void* p = mmap(reinterpret_cast<void*>(kHijackTableAddr),
                   sizeof(HijackEntry) << kHijackBits, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == reinterpret_cast<void*>(kHijackTableAddr)) {
      g_table = static_cast<HijackEntry*>(p);
    } else if (p != MAP_FAILED) {
      munmap(p, sizeof(HijackEntry) << kHijackBits);  // old kernel: hint only
    }
  }
#endif
  // Likewise the hints (24 KiB of zeroed .bss at the first run).
  if (g_hints_used) {
    for (Hint& h : g_hints) {
      h.fiber.store(nullptr, std::memory_order_relaxed);
      h.slot.store(0, std::memory_order_relaxed);
    }
  }
  g_hints_used = true;
}

__attribute__((no_sanitize_address)) bool hijack_pending(Fiber* f,
                                                         std::uintptr_t sp) {
  Hint& h = hint_for(f);
  if (h.fiber.load(std::memory_order_acquire) != f) return false;
  const std::uintptr_t slot = h.slot.load(std::memory_order_relaxed);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  if (slot < sp || slot + 8 > hi ||
      *reinterpret_cast<const std::uintptr_t*>(slot) !=
          reinterpret_cast<std::uintptr_t>(&goro_hijack_stub)) {
    return false;
  }
  // The slot may be a dead copy (an exception or longjmp went past the
  // frame). Now and then let the walk, which is exact, decide (H3).
  const int n = h.fast_refusals.load(std::memory_order_relaxed);
  h.fast_refusals.store(n + 1, std::memory_order_relaxed);
  if ((n & 15) == 15) return false;
  bump(g_counters.hijack_pending);
  return true;
}

WalkStats walk_stats() {
  WalkStats s;
  s.walks = g_counters.walks.load(std::memory_order_relaxed);
  s.walk_cycles = g_counters.walk_cycles.load(std::memory_order_relaxed);
  s.walk_frames = g_counters.walk_frames.load(std::memory_order_relaxed);
  s.walk_preempt = g_counters.walk_preempt.load(std::memory_order_relaxed);
  s.walk_failed = g_counters.walk_failed.load(std::memory_order_relaxed);
  s.hijacks = g_counters.hijacks.load(std::memory_order_relaxed);
  s.hijack_pending = g_counters.hijack_pending.load(std::memory_order_relaxed);
  s.hijack_switches =
      g_counters.hijack_switches.load(std::memory_order_relaxed);
  s.hijack_returns = g_counters.hijack_returns.load(std::memory_order_relaxed);
  s.walk_cpu_ns = g_counters.walk_cpu_ns.load(std::memory_order_relaxed);
  return s;
}

void set_walk_cpu_timing(bool on) {
  g_walk_cpu_timing.store(on, std::memory_order_relaxed);
}

}  // namespace goro::preempt_internal

using goro::preempt_internal::TrampolineFrame;

namespace {

// errno belongs to the thread, and other fibers run on it while this one is
// switched out: keep the interrupted code's value. (__errno_location is
// declared const; call it through a volatile pointer afterwards so that,
// with migration allowed, the new thread's errno is the one written.)
void restore_errno(int saved) {
  int* (*volatile errno_location)() = &__errno_location;
  *errno_location() = saved;
}

// Switches the current fiber out as an asynchronous preemption. While it
// resumes, the fiber is still inside the preemption: a request sysmon made
// meanwhile must not turn into a cooperative yield on the way out (that one
// may migrate, and the interrupted code may hold thread-local addresses).
// The raised no_preempt makes releasem skip it; the fiber starts a fresh
// slice anyway. std::call_once's thread-locals belong to the thread like
// errno, and are kept across the switch too (see os_locks.cc).
void async_switch() {
  const goro::preempt_internal::OnceThreadLocals saved_once =
      goro::preempt_internal::save_once_thread_locals();
  // The frames the yield runs below here must fit kPreemptFrames (stack.h,
  // preempt_frames_check); the trampoline's save area is above our frame.
  const bool measure =
      GORO_DCHECK_IS_ON || goro::runtime_internal::preempt_frames_measuring();
  goro::runtime_internal::Fiber* self = nullptr;
  char* save_area = nullptr;
  if (measure) {
    self = goro::runtime_internal::current_m_signal_safe()->curg();
    save_area = static_cast<char*>(__builtin_frame_address(0)) + 16;
    goro::runtime_internal::preempt_frames_paint(self->stack.lo, save_area);
  }
  goro::runtime_internal::preempt_yield(/*async=*/true);
  if (measure) {
    goro::runtime_internal::preempt_frames_check(self->stack.lo, save_area);
  }
  goro::preempt_internal::restore_once_thread_locals(saved_once);
}

// The end of run (stop_all_ms) signalled this M, whose fiber is in denied
// code -- most likely blocked in a raw system call -- and a hijacked return
// now stands between the call and the fiber's own code: offer the M for
// abandonment (M::kInRawCall). Last thing before the trampoline returns:
// once offered, the Sched may be freed at any moment, and nothing here
// touches it after the store. Not while the runtime runs: then the hijack
// is an ordinary preemption.
void offer_raw_abandon(goro::runtime_internal::M* m,
                       goro::runtime_internal::Fiber* self,
                       std::uintptr_t slot) {
  using namespace goro::preempt_internal;
  using goro::runtime_internal::M;
  goro::runtime_internal::Sched* s = goro::runtime_internal::sched();
  if (s == nullptr || !s->stopping.load(std::memory_order_acquire) ||
      m->blocking_state.load(std::memory_order_relaxed) != M::kNone ||
      slot == 0 || g_table == nullptr) {
    return;
  }
  HijackEntry& e = g_table[hijack_index(slot)];
  if (e.key.load(std::memory_order_acquire) != slot) return;
  // The entry outlives this runtime (see abandoned_owner).
  e.owner.store(abandoned_owner(), std::memory_order_relaxed);
  m->blocking_fiber = self;
  // release: stop_all_ms reads blocking_fiber after its CAS (acquire).
  m->blocking_state.store(M::kInRawCall, std::memory_order_release);
}

// The other half, in the hijack stub: an offered M never returns into the
// fiber. It waits until stop_all_ms has taken the offer (it takes every
// one), then leaves for its scheduler context, which frees the M and the
// fiber's stack (end_abandoned) -- the path of blocking_exit. Touches only
// M-owned state: the Sched may be gone.
[[noreturn]] void leave_abandoned(goro::runtime_internal::M* m) {
  using goro::runtime_internal::M;
  while (m->blocking_state.load(std::memory_order_acquire) == M::kInRawCall) {
    sched_yield();
  }
  // The count a fiber holds as it switches to its scheduler context, which
  // execute() drops.
  goro::runtime_internal::tls_locks_inc();
  goro::runtime_internal::abandon_to_g0(m);
}

}  // namespace

GORO_TEXT void goro_async_preempt_yield(TrampolineFrame* frame) {
  using namespace goro::preempt_internal;
  goro::runtime_internal::M* m =
      goro::runtime_internal::current_m_signal_safe();
  goro::runtime_internal::Fiber* self = m->curg();
  // First: from here on the handler refuses (a second SIGURG must not start
  // a nested walk), and releasem never yields cooperatively.
  ++self->no_preempt;
  const int saved_errno = errno;
  const bool timed = g_walk_cpu_timing.load(std::memory_order_relaxed);
  const std::uint64_t cpu0 = timed ? thread_cpu_ns() : 0;
  const std::uint64_t t0 = __rdtsc();
  Found found;
  int frames = 0;
  std::uintptr_t offer = 0;  // the hijacked return guarding the fiber's code
  const Walk w = walk_on_g0(m, frame, self, &found, &frames);
  if (timed) bump(g_counters.walk_cpu_ns, thread_cpu_ns() - cpu0);
  bump(g_counters.walks);
  bump(g_counters.walk_frames, static_cast<std::uint64_t>(frames));
  bump(g_counters.walk_cycles, __rdtsc() - t0);
  switch (w) {
    case Walk::kPreempt:
      if (self->os_locks != 0) {
        // Let in only at the end of run, for a hijack (the handler): a
        // switch holding OS state is never made.
        count_refusal(goro::runtime_internal::kRefusedOsLock);
        break;
      }
      bump(g_counters.walk_preempt);
      async_switch();
      break;
    case Walk::kHijack:
      count_refusal(kRefusedPc);
      // H6: not while an exception propagates (between libgcc's two phases,
      // or in a cleanup pad before _Unwind_Resume): phase 2 would meet a
      // frame phase 1 did not, and abort.
      if (m->eh_globals != nullptr && m->eh_globals->uncaught_exceptions != 0) {
        bump(g_counters.walk_failed);
      } else if (hijack(self, found)) {
        bump(g_counters.hijacks);
        offer = found.slot;
      }
      break;
    case Walk::kPending: {
      count_refusal(kRefusedPc);
      bump(g_counters.hijack_pending);
      const Hint& h = hint_for(self);
      if (h.fiber.load(std::memory_order_relaxed) == self) {
        offer = h.slot.load(std::memory_order_relaxed);
      }
      break;
    }
    case Walk::kFailed:
      count_refusal(kRefusedPc);
      bump(g_counters.walk_failed);
      break;
  }
  --self->no_preempt;
  restore_errno(saved_errno);
  if (offer != 0) offer_raw_abandon(m, self, offer);  // last: see there
}

GORO_TEXT void goro_hijack_return(TrampolineFrame* frame) {
  using namespace goro::preempt_internal;
  using goro::runtime_internal::Fiber;
  using goro::runtime_internal::M;
  const int saved_errno = errno;
  const auto slot = reinterpret_cast<std::uintptr_t>(frame + 1) - 8;
  HijackEntry& e = g_table[hijack_index(slot)];
  if (e.key.load(std::memory_order_acquire) != slot) {
    goro::runtime_internal::fatal(
        "hijacked return at slot %p has no table entry",
        reinterpret_cast<void*>(slot));
  }
  M* m = goro::runtime_internal::current_m_signal_safe();
  if (m != nullptr) {
    const int st = m->blocking_state.load(std::memory_order_acquire);
    if (st == M::kInRawCall || st == M::kAbandoning || st == M::kAbandoned) {
      // Offered at the end of run (offer_raw_abandon): the fiber's code
      // never runs again. The slot's stack goes away with the fiber.
      e.owner.store(nullptr, std::memory_order_relaxed);
      e.key.store(0, std::memory_order_release);
      leave_abandoned(m);
    }
  }
  frame->rip = e.ret.load(std::memory_order_relaxed);
  bump(g_counters.hijack_returns);
  Fiber* f = m != nullptr ? m->curg() : nullptr;
  if (f != nullptr) {
    Hint& h = hint_for(f);
    if (h.fiber.load(std::memory_order_relaxed) == f) {
      h.fiber.store(nullptr, std::memory_order_relaxed);
    }
  }
  // H4: the same rules as the handler's, except the pc and the walk.
  const auto here =
      reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  if (f != nullptr && m->p != nullptr && m->blocking_p == nullptr &&
      !m->p->is_spare && goro::runtime_internal::tls_locks_get() == 0 &&
      f->no_preempt == 0 && f->os_locks == 0 &&
      here > reinterpret_cast<std::uintptr_t>(f->stack.lo) + 4096 &&
      f->preempt_requested.load(std::memory_order_relaxed)) {
    bump(g_counters.hijack_switches);
    ++f->no_preempt;
    async_switch();
    --f->no_preempt;
  }
  // Last: until here, an unwinder of this (possibly parked) frame reads the
  // real return address through the stub's CFI (H2).
  e.key.store(0, std::memory_order_release);
  restore_errno(saved_errno);
}
