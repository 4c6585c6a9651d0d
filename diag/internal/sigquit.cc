// Copyright goro authors.
//
// SIGQUIT: dump every fiber to stderr and exit with status 2, as Go does.
//
// The handler only hands off: it stores to a word and futex-wakes the
// "goro-sigquit" thread (both async-signal-safe), which takes the dump
// (demangling and DWARF lookups allocate) and exits. The handler is
// installed when a runtime starts only if SIGQUIT still has its default
// disposition: a handler (or SIG_IGN) the program installed before run is
// kept, and GORO_SIGQUIT=0 leaves SIGQUIT alone. It is removed when run
// ends; a SIGQUIT caught after that (a race with the end of run) gets the
// default action.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "diag/internal/diag.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/scheduler_internal.h"

namespace goro::diag_internal {
namespace {

constexpr std::uint32_t kIdle = 0, kQuit = 1, kStop = 2;

// The hand-off word: kQuit from the handler, kStop from sigquit_stop.
std::atomic<std::uint32_t> g_word{kIdle};
// The handler is ours and the thread is listening. Written by the thread
// calling run (start/stop), read by the handler.
std::atomic<bool> g_armed{false};
bool g_installed = false;  // only run's thread (start/stop) touches these
struct sigaction g_old;
std::thread* g_thread = nullptr;

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
  runtime_internal::futex_wake(&g_word, 1);
  errno = saved;
}

void thread_main() {
  runtime_internal::own_thread_register_for_life();
  pthread_setname_np(pthread_self(), "goro-sigquit");
  for (;;) {
    const std::uint32_t w = g_word.load(std::memory_order_acquire);
    if (w == kStop) return;
    if (w == kQuit) {
      std::fflush(stdout);
      write_all("SIGQUIT: quit\n\n" + dump_string(nullptr, nullptr));
      _exit(2);
    }
    runtime_internal::futex_wait(&g_word, kIdle, 0);
  }
}

}  // namespace

void sigquit_start(runtime_internal::Sched* s) {
  if (!s->debug.sigquit) return;
  struct sigaction old;
  if (sigaction(SIGQUIT, nullptr, &old) != 0) return;
  if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) return;
  g_word.store(kIdle, std::memory_order_relaxed);
  g_thread = new std::thread(thread_main);
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
  // A SIGQUIT already handed off wins: the thread dumps and exits.
  std::uint32_t idle = kIdle;
  if (g_word.compare_exchange_strong(idle, kStop, std::memory_order_acq_rel)) {
    runtime_internal::futex_wake(&g_word, 1);
  }
  g_thread->join();
  delete g_thread;
  g_thread = nullptr;
}

}  // namespace goro::diag_internal
