// Copyright goro authors.
//
// How much stack ordinary C++ work needs on a goro fiber: the data behind
// the default stack size (docs/runtime.md, "Stack size"). Each workload runs
// on a fiber with a big stack whose unused part was painted with a pattern;
// the lowest overwritten byte gives the high-water mark, counted from the top
// of the fiber's stack (so goro's own frames below the entry are included).
//
//   bazel run //bench:stack_need               # default (-O2) build
//   bazel run //bench:stack_need --config=asan  # ASan frames are larger
//
// Not a Google Benchmark: it measures bytes, not time.

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <locale>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "goro.h"
#include "runtime/internal/scheduler_internal.h"

namespace {

constexpr std::size_t kFiberStack = 8u << 20;
constexpr std::uint8_t kPaint = 0xA5;

// Paints [lo, own rsp - 512) with kPaint. A leaf with no calls, so nothing
// of its own lives below its rsp except the 128-byte red zone.
__attribute__((noinline, no_sanitize_address)) void Paint(char* lo) {
  char* sp;
  __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
  for (volatile char* p = lo; p < sp - 512; ++p) *p = static_cast<char>(kPaint);
}

__attribute__((no_sanitize_address)) std::size_t Measure(
    const std::function<void()>& work) {
  auto* m = goro::runtime_internal::current_m();
  const goro::runtime_internal::Stack st = m->curg()->stack;
  // The top 2 MiB is plenty for every workload here.
  char* lo = std::max(st.lo + 4096, st.hi() - (2 << 20));
  // An asynchronous preemption would write its save area (about 11 KiB with
  // AVX-512) below the interrupted frame and be counted as the workload's.
  goro::NoPreempt no_preempt;
  Paint(lo);
  work();
  char* p = lo;
  while (p < st.hi() && static_cast<std::uint8_t>(*p) == kPaint) ++p;
  return static_cast<std::size_t>(st.hi() - p);
}

volatile int g_sink;

__attribute__((noinline)) void ThrowDeep(int depth) {
  volatile char pad[64];
  pad[0] = static_cast<char>(depth);
  if (depth == 0) throw std::runtime_error("deep");
  ThrowDeep(depth - 1);
  g_sink = pad[0];
}

struct Workload {
  const char* name;
  std::function<void()> fn;
};

std::string Letters(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<char>('a' + i % 26);
  return s;
}

std::vector<Workload> Workloads() {
  std::vector<Workload> w;
  w.push_back({"nothing (goro's own frames)", [] {}});
  w.push_back({"snprintf(\"%d %s\")", [] {
                 char buf[64];
                 std::snprintf(buf, sizeof(buf), "%d %s", 42, "x");
                 g_sink = buf[0];
               }});
  w.push_back({"snprintf(\"%.17g %Lf\")", [] {
                 char buf[256];
                 std::snprintf(buf, sizeof(buf), "%.17g %Lf", 1e300, 1e300L);
                 g_sink = buf[0];
               }});
  w.push_back({"strtod of a 100-digit number", [] {
                 std::string s = "0." + std::string(100, '7') + "e-300";
                 g_sink = static_cast<int>(std::strtod(s.c_str(), nullptr));
               }});
  w.push_back({"ostringstream << int, double, string", [] {
                 std::ostringstream o;
                 o << 42 << ' ' << std::setprecision(17) << 3.14159 << ' '
                   << std::string("hello");
                 g_sink = static_cast<int>(o.str().size());
               }});
  w.push_back({"std::cout << double (to /dev/null)", [] {
                 std::ostream out(std::cout.rdbuf());
                 out.setstate(std::ios::badbit);  // format, write nothing
                 out << std::setprecision(17) << 1e300 << std::endl;
               }});
  w.push_back({"istringstream >> double", [] {
                 std::istringstream i("1.2345e10 17");
                 double d;
                 int n;
                 i >> d >> n;
                 g_sink = n;
               }});
  w.push_back({"std::to_string(double)", [] {
                 g_sink = static_cast<int>(std::to_string(1e300).size());
               }});
  w.push_back({"throw/catch through 100 frames", [] {
                 try {
                   ThrowDeep(100);
                 } catch (const std::exception& e) {
                   g_sink = e.what()[0];
                 }
               }});
  w.push_back({"throw/catch, 1 frame", [] {
                 try {
                   throw std::runtime_error("x");
                 } catch (const std::exception& e) {
                   g_sink = e.what()[0];
                 }
               }});
  w.push_back({"std::sort of 100,000 ints", [] {
                 std::vector<int> v(100000);
                 for (std::size_t i = 0; i < v.size(); ++i)
                   v[i] = static_cast<int>((i * 2654435761u) % 100003);
                 std::sort(v.begin(), v.end());
                 g_sink = v[0];
               }});
  w.push_back({"std::map of 10,000 strings", [] {
                 std::map<std::string, int> m;
                 for (int i = 0; i < 10000; ++i) m[std::to_string(i)] = i;
                 g_sink = m.begin()->second;
               }});
  for (std::size_t n : {50, 200, 1000}) {
    static std::string names[3];
    static int k = 0;
    names[k] =
        "regex_search \"(\\\\w+)=(.*)\" on " + std::to_string(n) + " chars";
    w.push_back({names[k++].c_str(), [n] {
                   std::regex re("(\\w+)=(.*)");
                   std::string s = "key=" + Letters(n - 4);
                   std::smatch m;
                   g_sink = std::regex_search(s, m, re);
                 }});
  }
  for (std::size_t n : {200, 1000}) {
    static std::string names[2];
    static int k = 0;
    names[k] = "regex_match \"[a-z]+\" on " + std::to_string(n) + " chars";
    w.push_back({names[k++].c_str(), [n] {
                   std::regex re("[a-z]+");
                   g_sink = std::regex_match(Letters(n), re);
                 }});
  }
  w.push_back({"std::regex construction (e-mail pattern)", [] {
                 std::regex re(
                     "([a-zA-Z0-9._%+-]+)@([a-zA-Z0-9.-]+)\\.([a-zA-Z]{2,})");
                 g_sink = static_cast<int>(re.mark_count());
               }});
  w.push_back({"getaddrinfo(\"localhost\")", [] {
                 addrinfo hints{};
                 hints.ai_socktype = SOCK_STREAM;
                 addrinfo* res = nullptr;
                 if (getaddrinfo("localhost", "80", &hints, &res) == 0) {
                   freeaddrinfo(res);
                 }
               }});
  return w;
}

}  // namespace

int main() {
  goro::run([] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(goro::SpawnOptions{.stack_size = kFiberStack, .name = "measure"},
             [&] {
               std::printf("%-48s %10s\n", "workload", "stack used");
               for (const Workload& w : Workloads()) {
                 // Twice: the first call may initialise lazily (locales,
                 // the unwinder's caches); report the larger.
                 std::size_t a = Measure(w.fn);
                 std::size_t b = Measure(w.fn);
                 std::printf("%-48s %10zu\n", w.name, std::max(a, b));
               }
               wg.done();
             });
    wg.wait();
  });
}
