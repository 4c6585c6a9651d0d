// Copyright goro authors.
//
// Stack overflow detection. A fiber that runs into a guard region faults; the
// SIGSEGV handler, running on the M's alternate signal stack (the fiber's own
// stack is exhausted), decides what the fault is:
//   1. in the running fiber's own guard region (Stack::guard_contains), or
//      near a stack pointer that is below the running fiber's stack (a frame
//      jumped past the guard region and then faulted): an overflow of that
//      fiber. It prints
//        goro: fiber N (name) overflowed its S-byte stack (...)
//      and how to raise the size, and the fiber's frames as raw addresses
//      (Hooks::fault_backtrace, from preempt/), then aborts;
//   2. in the guard region of any other stack of any live StackAllocator
//      (find_guard): a stray access into a guard; reported with the stack it
//      guards, then aborts;
//   3. anything else goes to the handler installed before goro's (or the
//      default action).
// Everything here is async-signal-safe: write(2), no allocation, no locks
// (the backtrace's libunwind walk takes libunwind's own locks, which the
// faulting thread cannot hold: see preempt/internal/fault_backtrace.cc).

#include <signal.h>
#include <sys/mman.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "runtime/internal/dcheck.h"
#include "runtime/internal/raw_msg.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"
#include "third_party/valgrind/valgrind.h"

namespace goro::runtime_internal {
namespace {

constexpr std::size_t kAltStackSize = 64 * 1024;

struct sigaction g_old_segv;
struct sigaction g_old_bus;
std::atomic<bool> g_installed{false};

// "fiber N" or "fiber N (name)". The name's buffer is stable while the
// fiber lives; read it without calling into the allocator.
RawMsg& append_fiber(RawMsg& m, const Fiber* f) {
  m.str("fiber ").u64(f->id);
  if (!f->name.empty()) {
    m.str(" (").bytes(f->name.data(), f->name.size()).str(")");
  }
  return m;
}

[[noreturn]] void die() {
  // abort() is async-signal-safe; restore the default action first so a
  // SIGABRT handler cannot bring us back here.
  signal(SIGABRT, SIG_DFL);
  std::abort();
}

// How to fix it, after every overflow report: the sizes are chosen from
// measurements (docs/runtime.md, "Stack size").
void append_remedy(RawMsg& m, const Fiber* f) {
  m.str(
      "goro: give it a bigger stack: goro::SpawnOptions::stack_size for "
      "this fiber, or goro::Options::stack_size / GORO_STACK_SIZE (e.g. "
      "GORO_STACK_SIZE=1M) for every fiber");
  if (f->name == "main") {
    m.str(" (the main fiber gets at least 8 MiB)");
  }
  m.str(
      "; deep recursion and big local arrays (std::regex needs ~370 bytes "
      "per character matched) are the usual causes\n");
}

enum class How { kGuard, kJumped, kCanary };

// ctx: the fault's signal context (null for the canary, found at a
// switch): the report then ends with the fiber's frames, as raw addresses
// (Hooks::fault_backtrace; why raw: preempt/internal/fault_backtrace.cc).
[[noreturn]] void overflow_abort(const Fiber* f, How how, std::uintptr_t addr,
                                 const void* ctx) {
  RawMsg m;
  append_fiber(m.str("goro: "), f).str(" overflowed its ").u64(f->stack.size);
  m.str("-byte stack");
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  switch (how) {
    case How::kGuard:
      m.str(" (fault at ").hex(addr).str(", ").u64(lo - addr);
      m.str(" bytes below it)\n");
      break;
    case How::kJumped:
      m.str(" (fault at ").hex(addr).str(", ").u64(lo - addr);
      m.str(" bytes below it: a frame jumped past its ");
      m.u64(kGuardSize / 1024);
      m.str(
          " KiB guard region; build with -fstack-clash-protection so that "
          "every such frame is caught in the guard)\n");
      break;
    case How::kCanary:
      m.str(
          " (its canary was overwritten; found at a switch: this kernel "
          "lacks MADV_GUARD_INSTALL and the mprotect guard budget is "
          "spent)\n");
      break;
  }
  append_remedy(m, f);
  m.write_to(STDERR_FILENO);
  if (ctx != nullptr && g_hooks.fault_backtrace != nullptr) {
    g_hooks.fault_backtrace(f, ctx, STDERR_FILENO);
  }
  die();
}

[[noreturn]] void stray_abort(const Fiber* f, std::uintptr_t addr,
                              const Stack& guarded) {
  RawMsg m;
  m.str("goro: ");
  if (f != nullptr) {
    append_fiber(m, f);
  } else {
    m.str("a thread that runs no fiber");
  }
  m.str(" faulted at ").hex(addr);
  m.str(" in the guard region of another fiber's stack [");
  m.hex(reinterpret_cast<std::uintptr_t>(guarded.lo)).str(", ");
  m.hex(reinterpret_cast<std::uintptr_t>(guarded.hi()));
  m.str(
      "): a stray pointer, or an overflow by code that moved its stack "
      "pointer elsewhere\n");
  m.write_to(STDERR_FILENO);
  die();
}

void chain(int sig, siginfo_t* info, void* uc, const struct sigaction& old) {
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction != nullptr) {
      old.sa_sigaction(sig, info, uc);
      return;
    }
  } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    old.sa_handler(sig);
    return;
  }
  // Default action: uninstall ourselves and return; the faulting instruction
  // runs again and the kernel applies the default (core dump).
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, nullptr);
}

// A fault within this distance below a stack pointer that is itself below
// the running fiber's stack is that fiber's overflow (the frame that moved
// rsp there is writing its locals or pushing a return address).
constexpr std::uintptr_t kNearSp = 64 * 1024;

void fault_handler(int sig, siginfo_t* info, void* ctx) {
  M* m = current_m_signal_safe();
  const Fiber* f = m != nullptr ? m->curg() : nullptr;
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  if (f != nullptr && !f->stack.empty()) {
    if (f->stack.guard_contains(info->si_addr)) {
      overflow_abort(f, How::kGuard, addr, ctx);
    }
    const auto sp = static_cast<std::uintptr_t>(
        static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RSP]);
    const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
    // (Within 1 GiB, the largest stack: code running on a stack it made
    // itself elsewhere is not this fiber's overflow.)
    // Nor is a fault in a signal handler running on this M's alternate
    // stack.
    const auto alt = reinterpret_cast<std::uintptr_t>(m->sigaltstack);
    const bool on_alt = alt != 0 && sp >= alt && sp < alt + kAltStackSize;
    if (!on_alt && sp < lo && sp + (std::uintptr_t{1} << 30) > lo &&
        addr < lo && addr + kNearSp >= sp && addr < sp + kNearSp) {
      overflow_abort(f, How::kJumped, addr, ctx);
    }
  }
  Stack guarded;
  if (find_guard(info->si_addr, &guarded)) stray_abort(f, addr, guarded);
  chain(sig, info, ctx, sig == SIGBUS ? g_old_bus : g_old_segv);
}

}  // namespace

void report_stack_overflow(const Fiber* f) {
  overflow_abort(f, How::kCanary, 0, nullptr);
}

void dcheck_failed(const char* cond, const char* file, int line) {
  RawMsg m;
  m.str("goro: DCHECK failed: ").str(cond).str(" at ").str(file).str(":");
  m.u64(static_cast<std::uint64_t>(line)).str("\n");
  m.write_to(STDERR_FILENO);
  die();
}

void install_overflow_handler() {
  bool expected = false;
  if (!g_installed.compare_exchange_strong(expected, true)) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = fault_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

namespace {

// Under Valgrind the Ms' signal stacks come from one region reserved while
// the program loads, before any fiber stack exists. callgrind takes a signal
// handler that runs at a higher address than the frames it interrupted for
// a longjmp out of the handler, and aborts at the rt_sigreturn that follows
// (threads.c: "sigNum == vgCallgrind_current_state.sig"); Valgrind places
// mappings from low addresses up, so a region mapped first lies below every
// fiber stack chunk mapped later. Slots are reused as Ms come and go; past
// kValgrindAltStacks Ms, an M maps its own (callgrind may then abort, as
// before; memcheck and massif do not mind). Outside Valgrind nothing is
// reserved and every M maps its own.
constexpr std::size_t kValgrindAltStacks = 256;

class ValgrindAltStacks {
 public:
  ValgrindAltStacks() {
    if (!RUNNING_ON_VALGRIND) return;
    void* p = mmap(nullptr, kValgrindAltStacks * kAltStackSize,
                   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<char*>(p);
    for (std::size_t i = kValgrindAltStacks; i > 0; --i) {
      free_.push_back(base_ + (i - 1) * kAltStackSize);
    }
  }
  void* take() {
    if (base_ == nullptr) return nullptr;
    std::lock_guard<std::mutex> l(mu_);
    if (free_.empty()) return nullptr;
    void* p = free_.back();
    free_.pop_back();
    return p;
  }
  bool give_back(void* p) {
    char* c = static_cast<char*>(p);
    if (base_ == nullptr || c < base_ ||
        c >= base_ + kValgrindAltStacks * kAltStackSize) {
      return false;
    }
    std::lock_guard<std::mutex> l(mu_);
    free_.push_back(p);
    return true;
  }

 private:
  char* base_ = nullptr;  // set once, at load time
  std::mutex mu_;         // guards free_
  std::vector<void*> free_;
};

// Made while the program loads (before any fiber stack) and never destroyed:
// an M abandoned at the end of run may still give its slot back at exit.
ValgrindAltStacks& g_valgrind_alt_stacks = *new ValgrindAltStacks;

}  // namespace

void install_thread_signal_stack(M* m) {
  void* p = g_valgrind_alt_stacks.take();
  if (p == nullptr) {
    p = mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;  // no overflow message on this M, still safe
  }
  stack_t ss;
  ss.ss_sp = p;
  ss.ss_size = kAltStackSize;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, nullptr) != 0) {
    if (!g_valgrind_alt_stacks.give_back(p)) munmap(p, kAltStackSize);
    return;
  }
  m->sigaltstack = p;
}

void remove_thread_signal_stack(M* m) {
  if (m->sigaltstack == nullptr) return;
  stack_t ss;
  std::memset(&ss, 0, sizeof(ss));
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  if (!g_valgrind_alt_stacks.give_back(m->sigaltstack)) {
    munmap(m->sigaltstack, kAltStackSize);
  }
  m->sigaltstack = nullptr;
}

}  // namespace goro::runtime_internal
