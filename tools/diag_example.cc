// Copyright goro authors.
//
// diag_example: a small program for goro's diagnostics (docs/diagnostics.md
// shows its output; tests/diag runs it).
//
//   diag_example deadlock   every fiber ends up parked: the deadlock report,
//                           exit status 2
//   diag_example hang       fibers park and the program waits forever (until
//                           SIGQUIT, or gdb); prints "ready" when they are
//   diag_example dump       prints goro::dump_fibers from main and exits
//   diag_example busy       3 s of work and sleeps, for GORO_DEBUG=schedtrace
//   diag_example throw      a fiber's exception nobody catches: the message
//                           with its backtrace, then abort
//   diag_example overflow   a fiber's runaway recursion: the stack overflow
//                           report with its raw backtrace, then abort
//   diag_example trace      ~20 ms of a small pipeline (channels, a Mutex,
//                           sleep, blocking(), spinners that are preempted),
//                           for GORO_TRACE=file

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>

#include "goro.h"

namespace {

using namespace std::chrono_literals;

// noinline: each shows as its own frame in the dumps.
__attribute__((noinline)) void consume(goro::Chan<int> jobs) {
  while (auto j = jobs.recv()) std::printf("job %d\n", *j);
}

__attribute__((noinline)) void guarded_update(goro::Mutex* mu, int* v) {
  std::lock_guard<goro::Mutex> l(*mu);
  ++*v;
}

__attribute__((noinline)) void nap() {
  goro::sleep_for(1h);
  std::printf("napped\n");  // not a tail call: nap stays on the stack
}

__attribute__((noinline)) void parse_config(const std::string& text) {
  if (text.empty()) throw std::invalid_argument("empty configuration");
  std::printf("parsed %zu bytes\n", text.size());
}

__attribute__((noinline)) void load_config() {
  parse_config("");
  std::printf("loaded\n");  // not a tail call: load_config stays a frame
}

volatile int g_sink;

__attribute__((noinline)) int walk_tree(int depth) {
  volatile char node[256];
  node[0] = static_cast<char>(depth);
  return walk_tree(depth + 1) + node[0];  // no base case
}

void start_fibers(goro::Chan<int> jobs, goro::Mutex* mu, int* v) {
  goro::go({.name = "consumer"}, [jobs] { consume(jobs); });
  goro::go({.name = "updater"}, [mu, v] { guarded_update(mu, v); });
}

// A pipeline worth looking at in a trace viewer: a producer feeds two
// workers through a channel, they count results under a Mutex and send them
// on; a logger sleeps, one call blocks the thread, and spinners (one more
// than there are Ps, so that one always waits) keep the Ps busy until they
// are preempted.
void trace_mode() {
  goro::Chan<int> jobs(0), results(4);
  goro::Mutex mu;
  int done = 0;
  goro::WaitGroup wg;
  std::atomic<bool> stop{false};
  const int spinners = goro::stats().procs + 1;
  wg.add(5 + spinners);
  goro::go({.name = "producer"}, [&] {
    for (int i = 0; i < 40; ++i) jobs.send(i);
    jobs.close();
    wg.done();
  });
  for (int w = 0; w < 2; ++w) {
    goro::go({.name = "worker-" + std::to_string(w)}, [&] {
      while (auto j = jobs.recv()) {
        {
          std::lock_guard<goro::Mutex> l(mu);
          ++done;
        }
        results.send(*j * 2);
      }
      wg.done();
    });
  }
  goro::go({.name = "collector"}, [&] {
    for (int i = 0; i < 40; ++i) results.recv();
    wg.done();
  });
  goro::go({.name = "logger"}, [&] {
    for (int i = 0; i < 3; ++i) goro::sleep_for(2ms);
    goro::blocking([] { ::usleep(3000); });  // a call that blocks the thread
    wg.done();
  });
  for (int i = 0; i < spinners; ++i) {
    goro::go({.name = "spinner"}, [&] {
      volatile std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) n = n + 1;
      wg.done();
    });
  }
  // 20 ms, and on (up to 500 ms) until a spinner was preempted: on a loaded
  // machine sysmon may not get a CPU in time. (With asynchronous preemption
  // off, as under TSan, none comes.)
  const std::uint64_t async0 = goro::stats().preemptions_async;
  goro::sleep_for(20ms);
  for (int i = 0; i < 96 && goro::stats().preemptions_async == async0; ++i) {
    goro::sleep_for(5ms);
  }
  stop.store(true);
  wg.wait();
}

int run_mode(const std::string& mode) {
  if (mode == "throw" || mode == "overflow") {
    goro::WaitGroup wg;
    wg.add(1);
    goro::go({.name = mode == "throw" ? "loader" : "walker"}, [&] {
      if (mode == "throw") {
        load_config();
      } else {
        g_sink = walk_tree(0);
      }
      wg.done();
    });
    wg.wait();
    return 0;
  }
  if (mode == "trace") {
    trace_mode();
    return 0;
  }
  if (mode == "busy") {
    goro::WaitGroup wg;
    for (int i = 0; i < 4; ++i) {
      wg.add(1);
      goro::go([&wg] {
        const auto end = std::chrono::steady_clock::now() + 3s;
        volatile std::uint64_t n = 0;
        for (int round = 1; std::chrono::steady_clock::now() < end; ++round) {
          for (int k = 0; k < 100000; ++k) n = n + 1;
          if (round % 50 == 0) goro::sleep_for(1ms);
        }
        wg.done();
      });
    }
    wg.wait();
    return 0;
  }
  goro::Chan<int> jobs(0);
  goro::Mutex mu;
  int v = 0;
  mu.lock();
  start_fibers(jobs, &mu, &v);
  if (mode != "deadlock") goro::go({.name = "napper"}, [] { nap(); });
  goro::sleep_for(50ms);  // they all park
  if (mode == "dump") {
    goro::dump_fibers(std::cout);
    return 0;
  }
  if (mode == "hang") {
    std::printf("ready\n");
    std::fflush(stdout);
    goro::Chan<int> never(0);
    (void)never.recv();  // the napper's timer keeps this from being a deadlock
    return 0;
  }
  // deadlock: with no timer left, nothing can ever run again.
  goro::Chan<int> never(0);
  (void)never.recv();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "deadlock" && mode != "hang" && mode != "dump" &&
      mode != "busy" && mode != "throw" && mode != "overflow" &&
      mode != "trace") {
    std::fprintf(stderr,
                 "usage: diag_example "
                 "deadlock|hang|dump|busy|throw|overflow|trace\n");
    return 1;
  }
  return goro::run([&] { return run_mode(mode); });
}
