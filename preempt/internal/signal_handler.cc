// Copyright goro authors.
//
// The SIGURG handler: decides whether the interrupted fiber is at an
// async-safe point and, if so, edits the signal context so that returning
// from the handler enters goro_async_preempt.
//
// Async-safe point: all of
//   1. the thread is a goro M running a user fiber on a regular P (not a
//      spare lent for a stuck system call), not in blocking(), not on its
//      scheduler context;
//   2. the fiber was asked to yield (sysmon's request is still pending);
//   3. goro_tls_locks == 0 (no runtime-internal lock, not inside the runtime's
//      own bookkeeping) and the fiber is in no goro::NoPreempt scope;
//   4. the fiber holds no pthread mutex (std::mutex etc., counted per fiber
//      by os_locks.cc);
//   5. the interrupted pc is in a known object (code_map.h) and not in
//      goro_text (the runtime's switch code and bookkeeping);
//   6. rsp is inside the fiber's stack with preempt_stack_need() bytes free;
//   7. no hijacked return of this fiber is pending (preempt_walk.h);
//   8. every frame up to the fiber's entry is in code that may be preempted
//      -- decided by a libunwind walk, which runs in the trampoline, not
//      here (see preempt_walk.cc for why), and which, when denied code is on
//      the stack, hijacks the return into preemptible code instead.
// The handler checks 1-7 and, if they hold, sends the fiber into the
// trampoline. Otherwise it counts the reason in Sched::refused and returns;
// sysmon asks again later (a cooperative point may also honour the request).
//
// Rejected alternative: switching inside the handler itself (as some
// user-level thread packages do). The handler runs on the alternate signal
// stack with the signal masked and the kernel's sigreturn frame pending;
// leaving it for a long time means sigreturn state on the wrong stack.
// Returning first, into the trampoline, leaves the kernel out of it (Go's
// choice too).
//
// Everything here is async-signal-safe: no allocation, no locks, no libc
// calls except the lock-free atomic counters and errno handling; the code
// map and the hijack hint are fixed arrays read without a lock.

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "preempt/internal/code_map.h"
#include "preempt/internal/preempt.h"
#include "preempt/internal/preempt_walk.h"
#include "preempt/internal/unwinder.h"
#include "runtime/internal/dcheck.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"
#include "third_party/valgrind/memcheck.h"

extern "C" {
std::uint64_t goro_xsave_size = 4096;
std::uint32_t goro_xsave_mask_lo = 0x7;  // x87 | SSE | AVX until probed
std::uint32_t goro_xsave_mask_hi = 0;
}

namespace goro::preempt_internal {
namespace {

using runtime_internal::Fiber;
using runtime_internal::kRefusedNoPreempt;
using runtime_internal::kRefusedNotFiber;
using runtime_internal::kRefusedOsLock;
using runtime_internal::kRefusedPc;
using runtime_internal::kRefusedStack;
using runtime_internal::M;
using runtime_internal::Refusal;
using runtime_internal::Sched;

struct sigaction g_old_urg;
std::atomic<bool> g_installed{false};
pid_t g_pid = 0;

void probe_xsave() {
  // Probed once by the runtime, which also sizes stacks from it.
  const runtime_internal::XsaveLayout& x = runtime_internal::xsave_layout();
  goro_xsave_size = x.size;  // 0: no XSAVE enabled; every preemption refused
  goro_xsave_mask_lo = static_cast<std::uint32_t>(x.mask);
  goro_xsave_mask_hi = static_cast<std::uint32_t>(x.mask >> 32);
}

// Whether main has returned and stop_all_ms is stopping the Ms (the Sched
// lives until they are stopped or abandoned). Async-signal-safe.
bool runtime_stopping() {
  runtime_internal::Sched* s =
      runtime_internal::g_sched.load(std::memory_order_acquire);
  return s != nullptr && s->stopping.load(std::memory_order_acquire);
}

// Whether the signal interrupted a system call: the kernel rewound rip to
// the `syscall` instruction to restart it (SA_RESTART), or the call failed
// with EINTR and rip is just after it.
// Reads stay inside rip's page (an instruction at the end of the last page
// of a mapping is not followed by readable bytes): such a pc answers no.
bool at_system_call(const greg_t* g) {
  const auto ip = static_cast<std::uintptr_t>(g[REG_RIP]);
  const auto* pc = reinterpret_cast<const unsigned char*>(ip);
  const std::uintptr_t in_page = ip & 4095;
  if (in_page <= 4094 && pc[0] == 0x0f && pc[1] == 0x05) return true;
  return g[REG_RAX] == -EINTR && in_page >= 2 && pc[-2] == 0x0f &&
         pc[-1] == 0x05;
}

// Returns true and edits uc when the fiber may be switched. Not instrumented
// by ASan: it writes below the fiber's rsp, which ASan may still consider
// part of dead frames.
__attribute__((no_sanitize_address)) bool try_preempt(M* m, ucontext_t* uc) {
  // Abandoned at the end of run (or on its way to be: M::kInRawCall, an M
  // inside blocking()): its P may be freed already, and it never switches.
  // A signal sysmon sent before it stopped may arrive this late.
  if (m->blocking_state.load(std::memory_order_acquire) != M::kNone) {
    return false;
  }
  Fiber* f = m->curg();
  // Not on a spare P either: a fiber preempted there would be pinned to an M
  // that must give the spare back (and could not keep the fiber) as soon as
  // the stuck thread returns. Fibers on a spare are preempted cooperatively.
  if (f == nullptr || m->p == nullptr || m->blocking_p != nullptr ||
      m->p->is_spare) {
    count_refusal(kRefusedNotFiber);
    return false;
  }
  if (!f->preempt_requested.load(std::memory_order_relaxed)) {
    return false;  // already yielded since sysmon asked
  }
  if (goro_tls_locks != 0 || f->no_preempt != 0) {
    count_refusal(kRefusedNoPreempt);
    return false;
  }
  if (f->os_locks != 0 &&
      !(runtime_stopping() && at_system_call(uc->uc_mcontext.gregs))) {
    // At the end of run the walk may still hijack a return, so that a
    // fiber blocked in a raw call while holding OS state (a condition
    // variable's wait holds its mutex as goro counts it) is abandoned, not
    // waited for; it never switches to another fiber (offer_raw_abandon).
    // Not a fiber that merely runs: it will release the lock soon, and
    // abandoned at its next return from libc it would keep it for ever.
    count_refusal(kRefusedOsLock);
    return false;
  }
  greg_t* g = uc->uc_mcontext.gregs;
  const auto pc = static_cast<std::uintptr_t>(g[REG_RIP]);
  // Denied code (libc, ...) is fine here: the walk will hijack the return
  // into preemptible code. Unknown code and goro_text are not.
  const CodeKind kind = code_kind(pc);
  if (kind == CodeKind::kGoro || kind == CodeKind::kUnknown) {
    count_refusal(kRefusedPc);
    return false;
  }
  const auto sp = static_cast<std::uintptr_t>(g[REG_RSP]);
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  if (goro_xsave_size == 0 || sp > hi || sp < lo + preempt_stack_need()) {
    count_refusal(kRefusedStack);
    return false;
  }
  if (hijack_pending(f, sp)) {
    count_refusal(kRefusedPc);  // it switches when that frame returns
    return false;
  }
  // "Call" the trampoline: below the red zone, push the interrupted pc.
  std::uintptr_t nsp = sp - 128 - 8;
  // Memcheck takes memory below the interrupted stack pointer for
  // unaddressable, and does not see the trampoline's frame appear at the
  // signal's return: make room for all of it (a no-op outside Valgrind).
  // DEFINED, not UNDEFINED: memcheck takes a stack trace for an UNDEFINED
  // request (the origin of the bytes), and a walk from this handler's stack
  // (the M's signal stack, which Valgrind does not know as a stack) is
  // bounded by the thread's pthread stack top: when a fiber stack chunk lies
  // between the two, the walk runs up the interrupted fiber's frames and
  // past its stack's top into the next slot's MADV_GUARD_INSTALL guard,
  // which Valgrind shows as plain memory, and Valgrind dies of the fault
  // (the demo's part 2 did, every run). The trampoline writes every byte it
  // later reads there, so "defined" hides nothing. (Registering the signal
  // stack with VALGRIND_STACK_REGISTER instead bounds the walk too, but
  // then memcheck marked live fiber frames unaddressable in chan_stress.)
  const std::uintptr_t need = preempt_stack_need();
  (void)VALGRIND_MAKE_MEM_DEFINED(reinterpret_cast<void*>(sp - need),
                                  need - 128);
  *reinterpret_cast<std::uintptr_t*>(nsp) = pc;
  g[REG_RSP] = static_cast<greg_t>(nsp);
  g[REG_RIP] = reinterpret_cast<greg_t>(&goro_async_preempt);
  return true;
}

void chain(int sig, siginfo_t* info, void* uc) {
  if (g_old_urg.sa_flags & SA_SIGINFO) {
    if (g_old_urg.sa_sigaction != nullptr)
      g_old_urg.sa_sigaction(sig, info, uc);
  } else if (g_old_urg.sa_handler != SIG_DFL &&
             g_old_urg.sa_handler != SIG_IGN) {
    g_old_urg.sa_handler(sig);
  }
}

void sigurg_handler(int sig, siginfo_t* info, void* ctx) {
  const int saved_errno = errno;
  M* m = runtime_internal::current_m_signal_safe();
  // Ours: sent by sysmon with tgkill (SI_TKILL from this process) to an M
  // whose pending flag sysmon set. Anything else belongs to the program.
  bool ours = m != nullptr && info->si_code == SI_TKILL &&
              info->si_pid == g_pid &&
              m->signal_pending.load(std::memory_order_acquire);
  if (!ours) {
    chain(sig, info, ctx);
    errno = saved_errno;
    return;
  }
  m->signal_pending.store(false, std::memory_order_release);
  try_preempt(m, static_cast<ucontext_t*>(ctx));
  errno = saved_errno;
}

}  // namespace

bool preempt_m(M* m) {
  // Without libunwind every walk refuses: no signal for nothing. sysmon
  // loads it before its first round (on_sysmon_start), so this is only a
  // program where it could not be loaded; it is preempted cooperatively.
  if (unwinder() == nullptr) return false;
  if (m->signal_pending.exchange(true, std::memory_order_acq_rel)) {
    return false;  // one in flight already
  }
  const pid_t tid = m->tid.load(std::memory_order_acquire);
  if (tid != 0 && syscall(SYS_tgkill, g_pid, tid, SIGURG) == 0) {
    if (Sched* s = runtime_internal::g_sched.load(std::memory_order_acquire)) {
      s->signals_sent.fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    m->signal_pending.store(false, std::memory_order_release);
  }
  return true;
}

void count_refusal(Refusal r) {
  if (Sched* s = runtime_internal::g_sched.load(std::memory_order_acquire)) {
    s->refused[r].fetch_add(1, std::memory_order_relaxed);
  }
}

std::uint64_t preempt_stack_need() {
  // stack.h counts the save area, the yield's frames (kPreemptFrames,
  // measured below async_switch) and the walk's entry (kPreemptWalkEntry).
  return runtime_internal::preempt_stack_need();
}

void install_signal_handler() {
  // Each runtime start: no walk or hijack can run now (sysmon starts after
  // this), so the map and the table may be replaced (code_map.cc CM1).
  // Without libunwind loaded yet the map registers nothing; sysmon's start
  // does (load_unwinder, code_map.cc CM3).
  code_map_refresh();
  hijack_init();
  bool expected = false;
  if (!g_installed.compare_exchange_strong(expected, true)) return;
  g_pid = getpid();
  probe_xsave();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = sigurg_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGURG, &sa, &g_old_urg);
}

void load_unwinder() {
  // On sysmon's thread, before its first round: no signal has been sent
  // (sysmon sends them all), so no walk runs, and the map may be replaced
  // (CM1). If libunwind was loaded meanwhile for a dump, this registers the
  // map all the same (code_map.cc CM3).
  unwinder_load();
#if !defined(__SANITIZE_THREAD__)
  // Not under ThreadSanitizer: there no walk runs (no SIGURG preemption),
  // and TSan cannot see the loader's lock that orders dl_iterate_phdr's
  // reads of object names against another thread's dlopen (a dump loading
  // libdw), so it would report a race. The overflow backtrace follows frame
  // pointers there (the map registers nothing).
  code_map_refresh();
#endif
}

}  // namespace goro::preempt_internal
