// Copyright goro authors.
//
// A program that uses goro as a library, the way a project built with CMake
// (find_package(goro)), pkg-config or Bazel (//:goro) does. It checks the two
// things a plain static link silently loses (README, "Use goro in your
// project"):
//   1. Preemption really happens: on one proc, a fiber spinning in a
//      call-free loop is switched out by SIGURG (stats().preemptions_async
//      grows), so a second fiber runs while it spins. Lost if the preemption
//      hooks (preempt/internal/hooks.cc, registered by a static initializer
//      that nothing references) are dropped by the linker.
//   2. A fiber holding a std::mutex is not preempted while it holds it, so
//      no other fiber runs meanwhile. Lost if the pthread_mutex_* overrides
//      (preempt/internal/os_locks.cc) are dropped.
//   3. throw/catch use GCC's unwinder (libgcc_eh linked into the program,
//      or libgcc_s), not libunwind's copy of the _Unwind_* ABI, and an
//      exception crosses a fiber's frames.
// Prints "consumer: ok" and exits 0, or says which check failed and exits 1.

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "goro.h"

namespace {

using Clock = std::chrono::steady_clock;

// Spins without calls for `d` (a loop the compiler cannot remove).
void spin_for(std::chrono::milliseconds d) {
  const auto end = Clock::now() + d;
  volatile unsigned long n = 0;
  while (Clock::now() < end) {
    for (int i = 0; i < 1000; ++i) n = n + 1;
  }
}

}  // namespace

int main() {
  goro::Options o;
  o.procs = 1;  // one proc: the other fiber runs only if the spinner yields
  o.time_slice = std::chrono::milliseconds(1);
  int failures = 0;
  goro::run(o, [&] {
    // 1. An unguarded spinner is preempted.
    const std::uint64_t before = goro::stats().preemptions_async;
    std::atomic<bool> main_ran{false}, saw_main_run{false};
    goro::Chan<int> done(1);
    goro::go([&, done] {
      const auto give_up = Clock::now() + std::chrono::seconds(5);
      while (!main_ran && Clock::now() < give_up) {
        spin_for(std::chrono::milliseconds(1));
      }
      saw_main_run = main_ran.load();  // false: gave up after 5 s
      done.send(1);
    });
    goro::yield();  // the spinner runs; main gets back only if it is preempted
    main_ran = true;
    done.recv();
    const std::uint64_t preempted = goro::stats().preemptions_async - before;
    if (!saw_main_run || preempted == 0) {
      std::printf(
          "consumer: FAILED: a spinning fiber was not preempted "
          "(preemptions_async +%llu); are the preemption hooks linked?\n",
          static_cast<unsigned long long>(preempted));
      ++failures;
    }

    // 2. A fiber holding a std::mutex is not preempted while it holds it.
    std::mutex mu;
    std::atomic<bool> holding{false}, ran_while_held{false};
    goro::Chan<int> held_done(1);
    goro::go([&, held_done] {
      {
        std::lock_guard<std::mutex> l(mu);
        holding = true;
        spin_for(std::chrono::milliseconds(50));  // 50 time slices
        holding = false;
      }
      held_done.send(1);
    });
    goro::yield();  // the holder runs and takes the lock
    ran_while_held = holding.load();
    held_done.recv();
    if (ran_while_held) {
      std::printf(
          "consumer: FAILED: a fiber holding a std::mutex was "
          "preempted; are the pthread_mutex_* overrides linked?\n");
      ++failures;
    }
  });
  // 3. The C++ exception ABI is GCC's, never libunwind's. goro loads
  // libunwind privately (RTLD_LOCAL; by now check 1's run has loaded it),
  // and links libgcc statically: the program's throw binds to its own hidden
  // copy, and nothing in the global scope defines _Unwind_RaiseException.
  // Where libgcc is shared (the sanitizer builds, a program linked with
  // -shared-libgcc) libgcc_s does, or a sanitizer runtime that forwards to
  // it. A libunwind.so linked into the program would come first.
  Dl_info info{};
  void* raise = dlsym(RTLD_DEFAULT, "_Unwind_RaiseException");
  if (raise != nullptr && dladdr(raise, &info) != 0 &&
      info.dli_fname != nullptr &&
      strstr(info.dli_fname, "libunwind") != nullptr) {
    std::printf(
        "consumer: FAILED: _Unwind_RaiseException comes from %s, not GCC's "
        "libgcc (do not link libunwind ahead of it)\n",
        info.dli_fname);
    ++failures;
  }
  goro::run([&] {
    bool caught = false;
    goro::Chan<int> done(1);
    goro::go([&, done] {
      try {
        throw std::runtime_error("across a fiber");
      } catch (const std::runtime_error&) {
        caught = true;
      }
      done.send(1);
    });
    done.recv();
    if (!caught) {
      std::printf("consumer: FAILED: an exception was not caught in a fiber\n");
      ++failures;
    }
  });
  if (failures == 0) std::printf("consumer: ok\n");
  return failures == 0 ? 0 : 1;
}
