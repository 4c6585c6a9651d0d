// Copyright goro authors.
//
// The watchdog and the timing helpers of test_util.h.
//
// The watchdog is a gtest event listener that this file installs at static
// initialisation (the library is alwayslink), so every test of a binary
// that depends on //tests/common:test_util is covered without code in the
// test. One background thread waits on a condition variable for the current
// test's deadline; OnTestEnd clears it. The state is leaked on purpose: the
// thread may still be waiting while static destructors run.

#include "tests/common/test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

namespace goro_test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kDefaultLimit{10};
constexpr int kSanitizerFactor = 6;

std::chrono::seconds BaseLimit() {
  if (const char* v = std::getenv("GORO_TEST_WATCHDOG")) {
    const long s = std::strtol(v, nullptr, 10);
    if (s > 0) return std::chrono::seconds(s);
  }
  return kSanitizer ? kDefaultLimit * kSanitizerFactor : kDefaultLimit;
}

struct Dog {
  std::mutex mu;
  std::condition_variable cv;
  bool thread_started = false;
  std::uint64_t generation = 0;  // bumped at every test start and end
  bool armed = false;
  std::string test;  // "Suite.Name"
  Clock::time_point start;
  Clock::time_point deadline;
  std::chrono::seconds limit{0};
  std::string note;
};

Dog& dog() {
  static Dog* d = new Dog;  // leaked: see the top of the file
  return *d;
}

std::string ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "?";
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return "";
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// One line per thread of the process: tid, name, scheduler state (R
// running, S sleeping, D disk) and the kernel function it waits in.
std::string ThreadStates() {
  std::ostringstream out;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return "  (cannot read /proc/self/task)\n";
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string base = std::string("/proc/self/task/") + e->d_name;
    const std::string stat = ReadSmallFile(base + "/stat");
    const std::size_t close = stat.rfind(')');
    const char state = close != std::string::npos && close + 2 < stat.size()
                           ? stat[close + 2]
                           : '?';
    out << "  tid " << e->d_name << " " << ReadSmallFile(base + "/comm")
        << " state " << state << " wchan " << ReadSmallFile(base + "/wchan")
        << "\n";
  }
  ::closedir(dir);
  return out.str();
}

std::string StatsLine(const goro::Stats& s) {
  char buf[1024];
  std::snprintf(
      buf, sizeof(buf),
      "procs %d threads %d fibers_live %" PRIu64 " fibers_created %" PRIu64
      " context_switches %" PRIu64 " steals %" PRIu64 " handoffs %" PRIu64
      " timers_fired %" PRIu64 " threads_woken %" PRIu64
      "\n  preempt_requests %" PRIu64 " preemptions_async %" PRIu64
      " preemptions_cooperative %" PRIu64 " signals_sent %" PRIu64
      " preempt_refused %" PRIu64 " (no_preempt %" PRIu64 " os_lock %" PRIu64
      " pc %" PRIu64 " stack %" PRIu64 " not_fiber %" PRIu64
      ") syscall_retakes %" PRIu64,
      s.procs, s.threads, s.fibers_live, s.fibers_created, s.context_switches,
      s.steals, s.handoffs, s.timers_fired, s.threads_woken, s.preempt_requests,
      s.preemptions_async, s.preemptions_cooperative, s.signals_sent,
      s.preempt_refused, s.refused_no_preempt, s.refused_os_lock, s.refused_pc,
      s.refused_stack, s.refused_not_fiber, s.syscall_retakes);
  return buf;
}

std::string ReportLocked(Dog& d) {
  std::ostringstream out;
  out << "  note: " << (d.note.empty() ? "(none)" : d.note) << "\n";
  out << "  goro::stats(): " << StatsLine(goro::stats()) << "\n";
  out << "  threads:\n" << ThreadStates();
  return out.str();
}

[[noreturn]] void Fire(Dog& d) {
  const auto ran = std::chrono::duration_cast<std::chrono::milliseconds>(
      Clock::now() - d.start);
  std::string msg = "\n[goro watchdog] FAILED: " + d.test +
                    " did not finish within " +
                    std::to_string(d.limit.count()) + " s (ran " +
                    std::to_string(ran.count()) +
                    " ms); it is hung or far too slow.\n" + ReportLocked(d);
  std::fflush(stdout);
  std::fputs(msg.c_str(), stderr);
  std::fflush(stderr);
  std::_Exit(1);
}

void WatchLoop() {
  // The watchdog never touches a fiber: do not let it defer deadlock
  // detection (run.h) in the tests it watches.
  goro::this_thread_never_wakes_fibers();
  Dog& d = dog();
  std::unique_lock<std::mutex> l(d.mu);
  for (;;) {
    if (!d.armed) {
      d.cv.wait(l);
      continue;
    }
    const std::uint64_t gen = d.generation;
    const Clock::time_point deadline = d.deadline;
    d.cv.wait_until(l, deadline);
    if (d.armed && d.generation == gen && d.deadline == deadline &&
        Clock::now() >= deadline) {
      Fire(d);
    }
  }
}

class WatchdogListener : public testing::EmptyTestEventListener {
  void OnTestStart(const testing::TestInfo& info) override {
    Dog& d = dog();
    std::lock_guard<std::mutex> l(d.mu);
    if (!d.thread_started) {
      std::thread(WatchLoop).detach();
      d.thread_started = true;
    }
    ++d.generation;
    d.armed = true;
    d.test = std::string(info.test_suite_name()) + "." + info.name();
    d.start = Clock::now();
    d.limit = BaseLimit();
    d.deadline = d.start + d.limit;
    d.note.clear();
    d.cv.notify_all();
  }
  void OnTestEnd(const testing::TestInfo&) override {
    Dog& d = dog();
    std::lock_guard<std::mutex> l(d.mu);
    ++d.generation;
    d.armed = false;
    d.cv.notify_all();
  }
};

const bool kInstalled = [] {
  testing::UnitTest::GetInstance()->listeners().Append(new WatchdogListener);
  return true;
}();

std::string Micros(std::chrono::nanoseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f",
                std::chrono::duration<double, std::micro>(d).count());
  return buf;
}

}  // namespace

std::chrono::seconds WatchdogLimit() {
  Dog& d = dog();
  std::lock_guard<std::mutex> l(d.mu);
  return d.armed ? d.limit : BaseLimit();
}

void ExtendWatchdog(std::chrono::seconds total) {
  Dog& d = dog();
  std::lock_guard<std::mutex> l(d.mu);
  if (!d.armed) return;
  const std::chrono::seconds want =
      kSanitizer ? total * kSanitizerFactor : total;
  if (want <= d.limit) return;
  d.limit = want;
  d.deadline = d.start + want;
  d.cv.notify_all();
}

void WatchdogNote(std::string what) {
  Dog& d = dog();
  std::lock_guard<std::mutex> l(d.mu);
  d.note = std::move(what);
}

std::string WatchdogReport() {
  Dog& d = dog();
  std::lock_guard<std::mutex> l(d.mu);
  return ReportLocked(d);
}

std::chrono::nanoseconds Samples::Quantile(double q) const {
  if (v_.empty()) return std::chrono::nanoseconds(0);
  std::vector<std::chrono::nanoseconds> s = v_;
  std::sort(s.begin(), s.end());
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least q of the samples <= it.
  std::size_t rank =
      static_cast<std::size_t>(q * static_cast<double>(s.size()));
  if (rank > 0 &&
      static_cast<double>(rank) == q * static_cast<double>(s.size())) {
    --rank;
  }
  return s[std::min(rank, s.size() - 1)];
}

std::string Samples::Summary() const {
  std::ostringstream out;
  out << what_ << ": n=" << v_.size() << " min=" << Micros(Quantile(0))
      << " p50=" << Micros(Quantile(0.5)) << " p90=" << Micros(Quantile(0.9))
      << " max=" << Micros(Quantile(1)) << " us";
  return out.str();
}

testing::AssertionResult QuantileBetween(const Samples& s, double q,
                                         std::chrono::nanoseconds lo,
                                         std::chrono::nanoseconds hi) {
  if (s.size() < kMinTimingSamples) {
    return testing::AssertionFailure()
           << s.what() << ": " << s.size() << " samples; a timing assertion "
           << "needs at least " << kMinTimingSamples;
  }
  const std::chrono::nanoseconds v = s.Quantile(q);
  std::printf("%s\n", s.Summary().c_str());
  if (v < lo || v >= hi) {
    testing::AssertionResult r = testing::AssertionFailure();
    r << "quantile " << q << " = " << Micros(v) << " us, ";
    if (lo == std::chrono::nanoseconds::min()) {
      r << "not below " << Micros(hi) << " us";
    } else {
      r << "outside [" << Micros(lo) << ", " << Micros(hi) << ") us";
    }
    return r << "; " << s.Summary();
  }
  return testing::AssertionSuccess() << s.Summary();
}

testing::AssertionResult QuantileBelow(const Samples& s, double q,
                                       std::chrono::nanoseconds bound) {
  return QuantileBetween(s, q, std::chrono::nanoseconds::min(), bound);
}

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && ws != nullptr) {
    return std::string(srcdir) + "/" + ws + "/" + path;
  }
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return path;
  self[n] = '\0';
  return std::string(self) + ".runfiles/goro/" + path;
}

std::string RunSelfInChild(const std::string& filter, const std::string& env) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "readlink failed";
  self[n] = '\0';
  const std::string cmd =
      "env -u XML_OUTPUT_FILE -u GTEST_OUTPUT -u TEST_PREMATURE_EXIT_FILE "
      "-u TEST_SHARD_STATUS_FILE " +
      env + " " + self + " --gtest_filter=" + filter + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "popen failed";
  std::string out;
  char buf[4096];
  while (std::size_t got = std::fread(buf, 1, sizeof(buf), p)) {
    out.append(buf, got);
  }
  ::pclose(p);
  return out;
}

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t != nullptr ? t : "/tmp";
}

}  // namespace goro_test
