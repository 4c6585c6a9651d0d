// Copyright goro authors.
//
// Options: validation, environment overrides, and the CPU count.

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/stack.h"

namespace goro::runtime_internal {
namespace {

constexpr std::size_t kMaxStack = std::size_t{1} << 30;
constexpr int kMaxProcs = 1024;

[[noreturn]] void bad(const std::string& what, const std::string& value,
                      const std::string& expected) {
  throw std::invalid_argument("goro: invalid " + what + " \"" + value +
                              "\": expected " + expected);
}

// Parses a non-negative decimal integer with an optional suffix; returns the
// suffix through *suffix. Rejects empty input, signs, overflow.
bool parse_number(const std::string& s, unsigned long long* v,
                  std::string* suffix) {
  std::size_t i = 0;
  unsigned long long n = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    unsigned long long d = static_cast<unsigned long long>(s[i] - '0');
    if (n > (~0ULL - d) / 10) return false;
    n = n * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  *v = n;
  *suffix = s.substr(i);
  return true;
}

// The first line of a small file, or "" (no such file). open/read rather
// than std::ifstream: this runs at every start (bench/README.md,
// "Start-up"), and a stream costs a buffer allocation and locale set-up per
// file.
std::string read_line(const char* path) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[128];
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return "";
  return std::string(buf, static_cast<std::size_t>(n));
}

int cgroup_cpu_limit() {
  // cgroup v2: "max 100000" or "<quota> <period>".
  const std::string v2 = read_line("/sys/fs/cgroup/cpu.max");
  if (!v2.empty()) {
    if (v2.compare(0, 3, "max") == 0) return 0;
    char* end = nullptr;
    const double q = std::strtod(v2.c_str(), &end);
    const double p = std::strtod(end, nullptr);
    if (q > 0 && p > 0) return static_cast<int>(std::ceil(q / p));
    return 0;
  }
  // cgroup v1 (quota -1: no limit, and the period is not read).
  const long long q =
      std::atoll(read_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").c_str());
  if (q <= 0) return 0;
  const long long p =
      std::atoll(read_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us").c_str());
  if (p > 0) return static_cast<int>((q + p - 1) / p);
  return 0;
}

}  // namespace

int available_cpus() {
  cpu_set_t set;
  int n = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = 1;
  int limit = cgroup_cpu_limit();
  if (limit > 0 && limit < n) n = limit;
  return n;
}

namespace {

// "16384 bytes (16 KiB: the 11008-byte save area of an asynchronous
// preemption on this CPU plus 4 KiB)": the minimum, and why it is what it is.
std::string min_stack_text() {
  const std::size_t min = min_stack_size();
  return std::to_string(min) + " bytes (" + std::to_string(min / 1024) +
         " KiB: 16 KiB, or the " + std::to_string(xsave_layout().size) +
         "-byte XSAVE area an asynchronous preemption saves on this CPU "
         "plus 4 KiB, whichever is larger)";
}

}  // namespace

std::size_t validate_stack_size(std::size_t bytes, const char* what) {
  if (bytes < min_stack_size() || bytes > kMaxStack) {
    bad(what, std::to_string(bytes), "from " + min_stack_text() + " to 1 GiB");
  }
  return (bytes + kPageSize - 1) / kPageSize * kPageSize;
}

Options resolve_options(const Options& in) {
  Options o = in;
  if (o.procs < 0 || o.procs > kMaxProcs) {
    bad("Options::procs", std::to_string(o.procs), "0 (automatic) to 1024");
  }
  // GORO_MAXPROCS is checked even when Options::procs wins: a malformed
  // value is an error wherever it appears.
  int env_procs = 0;
  if (const char* e = std::getenv("GORO_MAXPROCS")) {
    unsigned long long v;
    std::string suffix;
    if (!parse_number(e, &v, &suffix) || !suffix.empty() || v < 1 ||
        v > kMaxProcs) {
      bad("GORO_MAXPROCS", e, "an integer from 1 to 1024");
    }
    env_procs = static_cast<int>(v);
  }
  if (o.procs == 0) o.procs = env_procs != 0 ? env_procs : available_cpus();
  if (const char* e = std::getenv("GORO_STACK_SIZE")) {
    unsigned long long v;
    std::string suffix;
    unsigned long long mult = 0;
    if (parse_number(e, &v, &suffix)) {
      if (suffix.empty()) mult = 1;
      if (suffix == "K" || suffix == "k" || suffix == "KiB") mult = 1ULL << 10;
      if (suffix == "M" || suffix == "m" || suffix == "MiB") mult = 1ULL << 20;
      if (suffix == "G" || suffix == "g" || suffix == "GiB") mult = 1ULL << 30;
    }
    if (mult == 0 || v > kMaxStack / mult || v * mult < min_stack_size()) {
      bad("GORO_STACK_SIZE", e,
          "a size from " + min_stack_text() +
              " to 1G (bytes, or with a K/M/G suffix)");
    }
    o.stack_size = static_cast<std::size_t>(v * mult);
  }
  o.stack_size = validate_stack_size(o.stack_size, "Options::stack_size");
  if (const char* e = std::getenv("GORO_TIMESLICE")) {
    unsigned long long v;
    std::string suffix;
    long long us = -1;
    if (parse_number(e, &v, &suffix) && v <= 10000000000ULL) {
      if (suffix == "us") us = static_cast<long long>(v);
      if (suffix == "ms") us = static_cast<long long>(v) * 1000;
      if (suffix == "s") us = static_cast<long long>(v) * 1000000;
    }
    if (us < 100 || us > 10000000) {
      bad("GORO_TIMESLICE", e,
          "a duration from 100us to 10s with a unit: us, ms or s");
    }
    o.time_slice = std::chrono::microseconds(us);
  }
  if (o.time_slice < std::chrono::microseconds(100) ||
      o.time_slice > std::chrono::seconds(10)) {
    bad("Options::time_slice", std::to_string(o.time_slice.count()) + "us",
        "100us to 10s");
  }
  auto parse_bool = [](const char* name, bool* out) {
    if (const char* e = std::getenv(name)) {
      std::string v = e;
      if (v == "0") {
        *out = false;
      } else if (v == "1") {
        *out = true;
      } else {
        bad(name, v, "0 or 1");
      }
    }
  };
  if (o.on_deadlock != OnDeadlock::kExit &&
      o.on_deadlock != OnDeadlock::kThrow) {
    bad("Options::on_deadlock", std::to_string(static_cast<int>(o.on_deadlock)),
        "kExit or kThrow");
  }
  parse_bool("GORO_ASYNCPREEMPT", &o.async_preempt);
  parse_bool("GORO_PREEMPT_MIGRATE", &o.preempt_migrate);
  return o;
}

DebugOptions resolve_debug_options() {
  DebugOptions d;
  if (const char* e = std::getenv("GORO_DEBUG")) {
    const std::string all = e;
    std::size_t pos = 0;
    while (pos <= all.size()) {
      std::size_t comma = all.find(',', pos);
      if (comma == std::string::npos) comma = all.size();
      const std::string item = all.substr(pos, comma - pos);
      pos = comma + 1;
      if (item.empty()) continue;
      const std::size_t eq = item.find('=');
      const std::string key = item.substr(0, eq);
      const std::string val =
          eq == std::string::npos ? "" : item.substr(eq + 1);
      unsigned long long v = 0;
      std::string suffix;
      const bool num = parse_number(val, &v, &suffix) && suffix.empty();
      if (key == "schedtrace") {
        if (!num || v < 1 || v > 3600000) {
          bad("GORO_DEBUG", all,
              "schedtrace=MS with MS an integer from 1 to 3600000 "
              "(milliseconds), e.g. GORO_DEBUG=schedtrace=1000");
        }
        d.schedtrace_ms = static_cast<int>(v);
      } else if (key == "scheddetail") {
        if (!num || v > 1) bad("GORO_DEBUG", all, "scheddetail=0 or 1");
        d.scheddetail = v == 1;
      } else {
        bad("GORO_DEBUG", all,
            "a comma-separated list of schedtrace=MS and scheddetail=0|1 "
            "(unknown setting \"" +
                key + "\")");
      }
    }
  }
  if (const char* e = std::getenv("GORO_SIGQUIT")) {
    const std::string v = e;
    if (v != "0" && v != "1") bad("GORO_SIGQUIT", v, "0 or 1");
    d.sigquit = v == "1";
  }
  // GORO_TRACE=PATH: an execution trace of the whole run (diag/trace.h).
  // Whether PATH can be written is checked when the trace starts (on_create
  // hook), with the same message shape.
  if (const char* e = std::getenv("GORO_TRACE")) {
    d.trace_path = e;
    if (d.trace_path.empty()) {
      bad("GORO_TRACE", "",
          "the path of a file to write the execution trace to");
    }
  }
  return d;
}

}  // namespace goro::runtime_internal

namespace goro {

std::size_t min_stack_size() { return runtime_internal::min_stack_size(); }

}  // namespace goro
