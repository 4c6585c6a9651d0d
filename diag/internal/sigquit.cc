// Copyright goro authors.
//
// SIGQUIT: dump every fiber to stderr and exit with status 2, as Go does.
//
// The handler only hands off: it stores to a word and wakes sysmon (both
// async-signal-safe), which takes the dump (demangling and DWARF lookups
// allocate) at the top of its next round and exits. sysmon runs as long as
// the runtime does, so no thread of its own waits for a SIGQUIT that rarely
// comes: a dedicated thread cost every start of an empty goro::run about
// 0.13 ms of CPU (bench/README.md, "Start-up"). The handler is
// installed when a runtime starts only if SIGQUIT still has its default
// disposition: a handler (or SIG_IGN) the program installed before run is
// kept, and GORO_SIGQUIT=0 leaves SIGQUIT alone. It is removed when run
// ends; a SIGQUIT caught after that (a race with the end of run) gets the
// default action.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "diag/internal/diag.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::diag_internal {
namespace {

constexpr std::uint32_t kIdle = 0, kQuit = 1, kStop = 2;

// The hand-off word: kQuit from the handler, kStop from sigquit_stop.
// Release/acquire: nothing is published through it; sysmon and
// sigquit_stop only act on its value.
std::atomic<std::uint32_t> g_word{kIdle};
// The handler is ours and sysmon is polling. Written by the thread calling
// run (start/stop), read by the handler.
std::atomic<bool> g_armed{false};
bool g_installed = false;  // only run's thread (start/stop) touches these
struct sigaction g_old;

void write_all(const std::string& s) {
  const char* p = s.data();
  std::size_t n = s.size();
  while (n > 0) {
    const ssize_t w = write(STDERR_FILENO, p, n);
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void handler(int sig) {
  if (!g_armed.load(std::memory_order_acquire)) {
    // Not ours any more: the default action (terminate with a core).
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, nullptr);
    raise(sig);
    return;
  }
  const int saved = errno;
  g_word.store(kQuit, std::memory_order_release);
  // Wakes sysmon from whichever sleep it is in (an atomic exchange and a
  // futex wake). A spurious wake-up only makes it run a round early.
  if (runtime_internal::Sched* s =
          runtime_internal::g_sched.load(std::memory_order_acquire)) {
    s->sysmon_note.wake();
  }
  errno = saved;
}

[[noreturn]] void quit() {
  std::fflush(stdout);
  write_all("SIGQUIT: quit\n\n" + dump_string(nullptr, nullptr));
  _exit(2);
}

}  // namespace

void sigquit_poll(runtime_internal::Sched*) {
  if (g_word.load(std::memory_order_acquire) == kQuit) quit();
}

void sigquit_start(runtime_internal::Sched* s) {
  if (!s->debug.sigquit) return;
  struct sigaction old;
  if (sigaction(SIGQUIT, nullptr, &old) != 0) return;
  if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) return;
  g_word.store(kIdle, std::memory_order_relaxed);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = handler;
  sa.sa_flags = SA_RESTART | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  g_armed.store(true, std::memory_order_release);
  sigaction(SIGQUIT, &sa, &g_old);
  g_installed = true;
}

void sigquit_stop(runtime_internal::Sched*) {
  if (!g_installed) return;
  g_installed = false;
  sigaction(SIGQUIT, &g_old, nullptr);
  g_armed.store(false, std::memory_order_release);
  // A SIGQUIT already handed off wins: dump here (sysmon may not have
  // polled yet; the Ms still run) and exit.
  std::uint32_t idle = kIdle;
  if (!g_word.compare_exchange_strong(idle, kStop, std::memory_order_acq_rel)) {
    quit();
  }
}

}  // namespace goro::diag_internal
