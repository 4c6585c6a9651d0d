// Copyright goro authors.
//
// Deadlock detection (Go's checkdead) and the little the diagnostics need
// from the runtime itself: the registry of goro's own threads, the coarse
// clock that dates parks, and the dump-pin count.
//
// When is a program dead? When no fiber can ever run again. The runtime
// decides it from its own counts, never from a timeout, at the moment the
// last M goes idle with no timer to wait for (stopm):
//   1. every M is on the idle list (nmidle == ms.size()): none is running a
//      fiber, spinning, inside goro::blocking(), stuck in a system call, or
//      just handed a P;
//   2. nothing is runnable: the global queue, every P's ring and runnext,
//      and every M's pinned list are empty; main has not returned;
//   3. no P (spares included) has a timer;
//   4. no fiber waits on the netpoller (netpoll_waiting());
//   5. no thread of the process is foreign: every thread is an M, sysmon,
//      the thread inside run, a diagnostics thread, or one that declared
//      this_thread_never_wakes_fibers(). A plain thread may send on a
//      channel, call go() or unlock a Mutex at any moment, and nothing tells
//      the runtime whether it will, so while one is alive the verdict waits.
// 1-4 are read under Sched::lock (dead_by_counts_locked). 5 reads
// /proc/self/task, so it runs without the lock (checkdead); then 1-4 are
// read again, and Sched::idle_gen -- bumped whenever an M leaves the idle
// list or a new M is made -- must not have moved: if no M ran between the
// two reads, no fiber ran, so no fiber can have started a thread that the
// directory read missed, and a foreign thread that existed before the read
// and woke a fiber would have moved idle_gen (ready() off a P queues the
// fiber globally and wakes an M). While a foreign thread is alive the M
// sleeps with a 100 ms deadline and checks again when it comes back to
// stopm, so the deadlock is reported once the last foreign thread exits.

#include <dirent.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/internal/scheduler_internal.h"
#include "runtime/run.h"

namespace goro::runtime_internal {

// Own cache lines: sysmon writes the clock every round, and every switch
// reads the pin count (enter_fiber).
alignas(64) std::atomic<std::int64_t> g_coarse_now_ns{0};
alignas(64) std::atomic<int> g_dump_pins{0};

namespace {

// How often an idle M looks again while a foreign thread defers the verdict.
constexpr std::int64_t kForeignRecheckNs = 100'000'000;  // 100 ms

// Guards g_own_tids (a multiset: a thread may register more than once).
std::mutex g_own_mu;
std::vector<pid_t>* g_own_tids = nullptr;  // guarded by g_own_mu; leaked

pid_t gettid_now() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// Threads registered until they exit. A pthread key's destructor, not a
// thread_local object's: that one costs an allocation per thread
// (__cxa_thread_atexit), which LeakSanitizer reports in a fork()ed child
// (a death test) whose parent had such a thread.
pthread_key_t life_key() {
  static const pthread_key_t key = [] {
    pthread_key_t k;
    pthread_key_create(&k, [](void*) { own_thread_unregister(); });
    return k;
  }();
  return key;
}

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer's runtime starts a background thread of its own (clone,
// not pthread_create) at the process's first pthread_create; it never
// touches goro. Make it start now, before main, and count every thread
// other than this one as goro's own, so that it does not defer deadlock
// detection forever. (A thread a static initializer started before this
// one ran would be misclassified too: only in TSan builds.)
struct RegisterSanitizerThreads {
  RegisterSanitizerThreads() {
    std::thread([] {}).join();
    const pid_t self = gettid_now();
    std::vector<pid_t>* own = new std::vector<pid_t>;
    if (DIR* d = opendir("/proc/self/task")) {
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const pid_t tid = static_cast<pid_t>(std::atol(e->d_name));
        if (tid != self) own->push_back(tid);
      }
      closedir(d);
    }
    std::lock_guard<std::mutex> l(g_own_mu);
    g_own_tids = own;
  }
} g_register_sanitizer_threads;
#endif

}  // namespace

void own_thread_register() {
  const pid_t tid = gettid_now();
  std::lock_guard<std::mutex> l(g_own_mu);
  if (g_own_tids == nullptr) {
    g_own_tids = new std::vector<pid_t>;
    // run_main registers first, on the caller's thread: with room reserved
    // then, the Ms' registrations do not malloc (m.cc, setup_thread).
    g_own_tids->reserve(64);
  }
  g_own_tids->push_back(tid);
}

void own_thread_unregister() {
  const pid_t tid = gettid_now();
  std::lock_guard<std::mutex> l(g_own_mu);
  if (g_own_tids == nullptr) return;
  auto it = std::find(g_own_tids->begin(), g_own_tids->end(), tid);
  if (it != g_own_tids->end()) g_own_tids->erase(it);
}

void own_thread_register_for_life() {
  const pthread_key_t key = life_key();
  if (pthread_getspecific(key) != nullptr) return;
  own_thread_register();
  pthread_setspecific(key, reinterpret_cast<void*>(1));
}

bool foreign_thread_alive() {
  std::vector<pid_t> own;
  {
    std::lock_guard<std::mutex> l(g_own_mu);
    if (g_own_tids != nullptr) own = *g_own_tids;
  }
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return true;  // cannot tell: assume one may wake fibers
  bool foreign = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const pid_t tid = static_cast<pid_t>(std::atol(e->d_name));
    if (std::find(own.begin(), own.end(), tid) == own.end()) {
      foreign = true;
      break;
    }
  }
  closedir(d);
  return foreign;
}

int netpoll_waiting() {
  // Counted by net/ as its fibers park and leave (park.h io_waiters_add).
  return io_waiters();
}

bool dead_by_counts_locked(Sched* s) {
  if (s->stopping.load(std::memory_order_relaxed) ||
      s->main_returned.load(std::memory_order_acquire) || s->deadlocked) {
    return false;
  }
  // 1. Every M idle.
  if (s->nmidle.load(std::memory_order_relaxed) !=
      static_cast<int>(s->ms.size())) {
    return false;
  }
  // 2. Nothing runnable; 3. no timer.
  if (s->gq_size.load(std::memory_order_relaxed) != 0) return false;
  for (const auto& p : s->ps) {
    if (!p->runq.empty() ||
        p->runnext.load(std::memory_order_acquire) != nullptr ||
        p->timers.earliest() != 0) {
      return false;
    }
  }
  for (const auto& m : s->ms) {
    if (m->has_pinned.load(std::memory_order_relaxed)) return false;
  }
  // 4. No fiber waiting on I/O.
  return netpoll_waiting() == 0;
}

std::int64_t checkdead(Sched* s, M* m, std::uint64_t gen) {
  // 5. No thread that could still wake a fiber.
  if (foreign_thread_alive()) return mono_now_ns() + kForeignRecheckNs;
  {
    MutexLock l(&s->lock);
    if (!m->idle || s->idle_gen != gen || !dead_by_counts_locked(s)) return 0;
    s->deadlocked = true;
  }
  // Every other M is asleep and nothing can wake one: the fibers' stacks
  // hold still while they are dumped.
  std::string report =
      "goro: fatal error: all fibers are asleep - deadlock!\n\n";
  if (g_hooks.dump_fibers != nullptr) {
    report += g_hooks.dump_fibers();
  } else {
    report += "(fiber dump unavailable: goro's diagnostics are not linked)\n";
  }
  s->deadlock_report = std::move(report);
  s->main_done.wake();  // run_main reports it (Options::on_deadlock)
  return 0;
}

}  // namespace goro::runtime_internal

namespace goro {

void this_thread_never_wakes_fibers() {
  runtime_internal::own_thread_register_for_life();
}

}  // namespace goro
