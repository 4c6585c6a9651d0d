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
//   5. the interrupted pc is in the program's own text and not in goro_text
//      (so not in libc, libstdc++, the dynamic loader, libunwind, sanitizer
//      runtimes -- any shared object -- nor in the runtime's switch code);
//   6. walking the frame-pointer chain, no caller up the stack is in a
//      shared object (libc calling back into the program, e.g. qsort, or
//      dl_iterate_phdr holding the loader lock). Where the chain is broken
//      (code built without frame pointers) the walk stops and the check
//      passes: only frames it can see are checked;
//   7. rsp is inside the fiber's stack with preempt_stack_need() bytes free.
// Otherwise the handler counts the reason in Sched::refused and returns;
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
// calls except the lock-free atomic counters and errno handling.

#include <errno.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <atomic>

#include "preempt/internal/preempt.h"
#include "runtime/internal/dcheck.h"
#include "runtime/internal/locks.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"

extern "C" {
std::uint64_t goro_xsave_size = 4096;
std::uint32_t goro_xsave_mask_lo = 0x7;  // x87 | SSE | AVX until probed
std::uint32_t goro_xsave_mask_hi = 0;
}

namespace goro::preempt_internal {
namespace {

using runtime_internal::Fiber;
using runtime_internal::M;
using runtime_internal::Sched;

struct sigaction g_old_urg;
std::atomic<bool> g_installed{false};
pid_t g_pid = 0;

// The program's executable segments (at most a few).
constexpr int kMaxRanges = 8;
std::uintptr_t g_text_lo[kMaxRanges];
std::uintptr_t g_text_hi[kMaxRanges];
int g_text_n = 0;

int find_program_text(dl_phdr_info* info, std::size_t, void* first) {
  // The first object dl_iterate_phdr reports is the main program.
  if (!*static_cast<bool*>(first)) return 1;
  *static_cast<bool*>(first) = false;
  for (int i = 0; i < info->dlpi_phnum && g_text_n < kMaxRanges; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X)) {
      g_text_lo[g_text_n] = info->dlpi_addr + ph.p_vaddr;
      g_text_hi[g_text_n] = info->dlpi_addr + ph.p_vaddr + ph.p_memsz;
      ++g_text_n;
    }
  }
  return 1;
}

void probe_xsave() {
  // Probed once by the runtime, which also sizes stacks from it.
  const runtime_internal::XsaveLayout& x = runtime_internal::xsave_layout();
  goro_xsave_size = x.size;  // 0: no XSAVE enabled; every preemption refused
  goro_xsave_mask_lo = static_cast<std::uint32_t>(x.mask);
  goro_xsave_mask_hi = static_cast<std::uint32_t>(x.mask >> 32);
}

void count(Refusal r) {
  if (Sched* s = runtime_internal::g_sched.load(std::memory_order_acquire)) {
    s->refused[r].fetch_add(1, std::memory_order_relaxed);
  }
}

__attribute__((no_sanitize_address)) bool frames_ok(std::uintptr_t rbp,
                                                    std::uintptr_t rsp,
                                                    std::uintptr_t hi) {
  // Walk at most this many frames; deeper stacks are checked as far as that.
  for (int depth = 0; depth < 256; ++depth) {
    if (rbp < rsp || rbp + 16 > hi || (rbp & 7) != 0) return true;  // unknown
    const std::uintptr_t ret = reinterpret_cast<std::uintptr_t*>(rbp)[1];
    if (ret == 0) return true;  // bottom of the fiber
    if (!pc_in_program_text(ret)) return false;
    const std::uintptr_t next = reinterpret_cast<std::uintptr_t*>(rbp)[0];
    if (next <= rbp) return true;
    rbp = next;
  }
  return true;
}

// Returns true and edits uc when the fiber may be switched. Not instrumented
// by ASan: it reads the fiber's frame chain and writes below its rsp, which
// ASan may still consider part of dead frames.
__attribute__((no_sanitize_address)) bool frames_ok(std::uintptr_t rbp,
                                                    std::uintptr_t rsp,
                                                    std::uintptr_t hi);

__attribute__((no_sanitize_address)) bool try_preempt(M* m, ucontext_t* uc) {
  Fiber* f = m->curg;
  // Not on a spare P either: a fiber preempted there would be pinned to an M
  // that must give the spare back (and could not keep the fiber) as soon as
  // the stuck thread returns. Fibers on a spare are preempted cooperatively.
  if (f == nullptr || m->p == nullptr || m->blocking_p != nullptr ||
      m->p->is_spare) {
    count(kRefusedNotFiber);
    return false;
  }
  if (!f->preempt_requested.load(std::memory_order_relaxed)) {
    return false;  // already yielded since sysmon asked
  }
  if (goro_tls_locks != 0 || f->no_preempt != 0) {
    count(kRefusedNoPreempt);
    return false;
  }
  if (f->os_locks != 0) {
    count(kRefusedOsLock);
    return false;
  }
  greg_t* g = uc->uc_mcontext.gregs;
  const auto pc = static_cast<std::uintptr_t>(g[REG_RIP]);
  if (!pc_in_program_text(pc) || runtime_internal::pc_in_goro_text(pc)) {
    count(kRefusedPc);
    return false;
  }
  const auto sp = static_cast<std::uintptr_t>(g[REG_RSP]);
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  if (goro_xsave_size == 0 || sp > hi || sp < lo + preempt_stack_need()) {
    count(kRefusedStack);
    return false;
  }
  if (!frames_ok(static_cast<std::uintptr_t>(g[REG_RBP]), sp, hi)) {
    count(kRefusedPc);
    return false;
  }
  // "Call" the trampoline: below the red zone, push the interrupted pc.
  std::uintptr_t nsp = sp - 128 - 8;
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

std::uint64_t preempt_stack_need() {
  return runtime_internal::preempt_stack_need();  // stack.h: what it counts
}

bool pc_in_program_text(std::uintptr_t pc) {
  for (int i = 0; i < g_text_n; ++i) {
    if (pc >= g_text_lo[i] && pc < g_text_hi[i]) return true;
  }
  return false;
}

void install_signal_handler() {
  bool expected = false;
  if (!g_installed.compare_exchange_strong(expected, true)) return;
  g_pid = getpid();
  bool first = true;
  dl_iterate_phdr(find_program_text, &first);
  probe_xsave();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = sigurg_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGURG, &sa, &g_old_urg);
}

}  // namespace goro::preempt_internal

extern "C" void goro_async_preempt_yield() {
  // errno belongs to the thread, and other fibers run on it while this one
  // is switched out: keep the interrupted code's value. (__errno_location is
  // declared const; call it through a volatile pointer afterwards so that,
  // with migration allowed, the new thread's errno is the one written.)
  const int saved_errno = errno;
  // While it resumes, the fiber is still inside an asynchronous preemption:
  // a request sysmon made meanwhile must not turn into a cooperative yield
  // on the way out (that one may migrate, and the interrupted code may hold
  // thread-local addresses). Raising no_preempt makes releasem skip it; the
  // fiber starts a fresh slice anyway.
  goro::runtime_internal::Fiber* self =
      goro::runtime_internal::current_m_signal_safe()->curg;
  ++self->no_preempt;
#if GORO_DCHECK_IS_ON
  // The trampoline's XSAVE area starts at our caller's rsp (stack.h,
  // preempt_frames_check: the frames below it must fit kPreemptFrames).
  char* save_area = static_cast<char*>(__builtin_frame_address(0)) + 16;
  goro::runtime_internal::preempt_frames_paint(self->stack.lo, save_area);
#endif
  goro::runtime_internal::preempt_yield(/*async=*/true);
#if GORO_DCHECK_IS_ON
  goro::runtime_internal::preempt_frames_check(self->stack.lo, save_area);
#endif
  --self->no_preempt;
  int* (*volatile errno_location)() = &__errno_location;
  *errno_location() = saved_errno;
}
