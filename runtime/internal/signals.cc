// Copyright goro authors.
//
// Stack overflow detection. A fiber that runs into its guard page faults; the
// SIGSEGV handler, running on the M's alternate signal stack (the fiber's own
// stack is exhausted), recognises the guard and prints
//   goro: fiber N overflowed its S-byte stack
// then aborts. Faults that are not a fiber's guard go to the handler that was
// installed before goro's (or the default action). Everything here is
// async-signal-safe: write(2), no allocation, no locks.

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "runtime/internal/scheduler_internal.h"

namespace goro::runtime_internal {
namespace {

constexpr std::size_t kAltStackSize = 64 * 1024;

struct sigaction g_old_segv;
struct sigaction g_old_bus;
std::atomic<bool> g_installed{false};

// Appends the decimal form of v to buf at *pos.
void append_u64(char* buf, std::size_t* pos, std::uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) buf[(*pos)++] = tmp[--n];
}

void append_str(char* buf, std::size_t* pos, std::size_t cap, const char* s) {
  while (*s != '\0' && *pos < cap) buf[(*pos)++] = *s++;
}

[[noreturn]] void overflow_abort(const Fiber* f) {
  char buf[256];
  std::size_t pos = 0;
  append_str(buf, &pos, sizeof(buf), "goro: fiber ");
  append_u64(buf, &pos, f->id);
  append_str(buf, &pos, sizeof(buf), " overflowed its ");
  append_u64(buf, &pos, f->stack.size);
  append_str(buf, &pos, sizeof(buf), "-byte stack");
  if (!f->name.empty()) {
    // name's buffer is stable while the fiber lives; read it without calling
    // into the allocator.
    append_str(buf, &pos, sizeof(buf) - 4, " (");
    const char* n = f->name.data();
    for (std::size_t i = 0; i < f->name.size() && pos < sizeof(buf) - 3; ++i) {
      buf[pos++] = n[i];
    }
    buf[pos++] = ')';
  }
  buf[pos++] = '\n';
  ssize_t unused = write(STDERR_FILENO, buf, pos);
  (void)unused;
  // abort() is async-signal-safe; restore the default action first so a
  // SIGABRT handler cannot bring us back here.
  signal(SIGABRT, SIG_DFL);
  std::abort();
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

void fault_handler(int sig, siginfo_t* info, void* uc) {
  M* m = current_m_signal_safe();
  Fiber* f = m != nullptr ? m->curg() : nullptr;
  if (f != nullptr && f->stack.guard_contains(info->si_addr)) {
    overflow_abort(f);
  }
  chain(sig, info, uc, sig == SIGBUS ? g_old_bus : g_old_segv);
}

}  // namespace

void report_stack_overflow(const Fiber* f) { overflow_abort(f); }

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

void install_thread_signal_stack(M* m) {
  void* p = mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;  // no overflow message on this M, still safe
  stack_t ss;
  ss.ss_sp = p;
  ss.ss_size = kAltStackSize;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, nullptr) != 0) {
    munmap(p, kAltStackSize);
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
  munmap(m->sigaltstack, kAltStackSize);
  m->sigaltstack = nullptr;
}

}  // namespace goro::runtime_internal
