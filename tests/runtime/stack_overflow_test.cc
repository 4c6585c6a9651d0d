// Copyright goro authors.
//
// Stack overflow is always caught, never silent (docs/runtime.md, "Stack
// overflow"): a frame bigger than the guard region is reported when the code
// is built with -fstack-clash-protection (this test is, through .bazelrc);
// a frame up to the guard size is reported even without it; the report's
// backtrace names the frames that recursed, whether libunwind is loaded yet
// or not (then it follows frame pointers); a fault in any
// fiber's guard region is reported; on a kernel without guards (emulated by a
// seccomp filter) an overwritten canary is reported at the fiber's next
// switch; and the stack sizes ordinary C++ needs
// (a regex on the default stack, a 1 MiB array on the main fiber) work.

#include <alloca.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/scheduler_internal.h"
#include "tests/common/test_util.h"
#include "tests/runtime/no_clash_frames.h"

namespace {

volatile int g_sink;

class StackOverflowDeathTest : public testing::Test {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
};

// Runs `fn` on a fiber with a `stack`-byte stack named "big-frame" and waits.
template <typename F>
void RunOnFiber(std::size_t stack, F fn) {
  goro_test::CleanGoroEnv env;
  goro::run([&] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::go(goro::SpawnOptions{.stack_size = stack, .name = "big-frame"}, [&] {
      fn();
      wg.done();
    });
    wg.wait();
  });
}

// The message names the fiber, says how to raise the size, and ends with
// the fiber's frames as raw addresses (the frames themselves are checked by
// OverflowReportEndsWithTheFramesThatRecursed).
constexpr char kOverflow64K[] =
    "goro: fiber [0-9]+ \\(big-frame\\) overflowed its 65536-byte stack"
    "(.|\n)*SpawnOptions::stack_size(.|\n)*GORO_STACK_SIZE"
    "(.|\n)*goro: fiber [0-9]+'s stack, innermost frame first"
    "(.|\n)*\tin [^\n]+:\n\t#0 0x[0-9a-f]+\n\t#1 ";

__attribute__((noinline)) int LocalArray69K() {
  volatile char a[69 * 1024];
  a[0] = 1;
  return a[0];
}

__attribute__((noinline)) int Memset200K() {
  char a[200 * 1000];
  std::memset(a, 1, sizeof(a));
  return reinterpret_cast<volatile char*>(a)[100];
}

__attribute__((noinline)) int Alloca100000() {
  auto* a = static_cast<volatile char*>(alloca(100000));
  a[0] = 1;
  return a[0];
}

// The three reports of the issue: each used to jump the one guard page (and
// write into a neighbouring fiber's stack, or die with a bare SIGSEGV).
TEST_F(StackOverflowDeathTest, LocalArrayBiggerThanTheStackIsReported) {
  EXPECT_DEATH(RunOnFiber(64 * 1024, [] { g_sink = LocalArray69K(); }),
               kOverflow64K);
}

TEST_F(StackOverflowDeathTest, Memset200KBIsReported) {
  EXPECT_DEATH(RunOnFiber(64 * 1024, [] { g_sink = Memset200K(); }),
               kOverflow64K);
}

TEST_F(StackOverflowDeathTest, Alloca100000IsReported) {
  EXPECT_DEATH(RunOnFiber(64 * 1024, [] { g_sink = Alloca100000(); }),
               kOverflow64K);
}

// Runs this test binary again with `filter` and the environment variable
// `child_env` set to `value` (the child does what the test does when it
// sees it) and returns everything it printed.
std::string RunChild(const char* filter, const char* child_env,
                     const char* value = "1") {
  return goro_test::RunSelfInChild(filter,
                                   std::string(child_env) + "=" + value);
}

// Function names for addresses of `object` (addr2line -Cfe: one function
// name per address, the outermost of an inlined chain left out).
std::vector<std::string> Addr2Line(const std::string& object,
                                   const std::vector<std::string>& addrs) {
  std::string cmd = "addr2line -Cfe " + object;
  for (const std::string& a : addrs) cmd += " " + a;
  std::vector<std::string> names;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return names;
  char line[8192];
  for (int i = 0; std::fgets(line, sizeof(line), p) != nullptr; ++i) {
    if (i % 2 == 0) names.emplace_back(line, std::strcspn(line, "\n"));
  }
  ::pclose(p);
  return names;
}

volatile int g_depth;

// About 600 bytes a frame: a 64 KiB stack holds ~100 of them.
__attribute__((noinline)) int Recurse(int n) {
  volatile char pad[512];
  pad[0] = static_cast<char>(n);
  g_depth = n;
  return Recurse(n + 1) + pad[0];  // not a tail call
}

__attribute__((noinline)) void StartRecursion() { g_sink = Recurse(0); }

constexpr char kOverflowChildEnv[] = "GORO_OVERFLOW_CHILD";
constexpr char kOverflowChildFilter[] =
    "StackOverflowBacktrace.OverflowReportEndsWithTheFramesThatRecursed";
// What the overflow report says when it follows frame pointers because
// libunwind is not loaded yet (preempt/internal/fault_backtrace.cc).
constexpr char kFramePointerWalk[] =
    "\t(a frame-pointer walk: libunwind is not loaded yet;";

// The child's part: overflow at once ("early": before sysmon loads
// libunwind, preempt/internal/unwinder.h) or after 50 ms ("late": sysmon
// has loaded it, one busy period after the start).
void OverflowChild(const char* when) {
  const bool late = std::strcmp(when, "late") == 0;
  RunOnFiber(64 * 1024, [late] {
    if (late) goro::sleep_for(std::chrono::milliseconds(50));
    StartRecursion();
  });
  std::fprintf(stderr, "the recursion did not overflow\n");
  std::exit(3);
}

// Checks the report in `out`: the recursing function first, then -- after
// the elided middle -- the frames that started the recursion, down to the
// fiber's entry. Raw addresses in the report; addr2line turns them into the
// functions checked here.
void ExpectFramesThatRecursed(const std::string& out) {
  ASSERT_TRUE(std::regex_search(
      out, std::regex("goro: fiber [0-9]+ \\(big-frame\\) overflowed its "
                      "65536-byte stack")))
      << out;
  ASSERT_TRUE(std::regex_search(
      out, std::regex("\ngoro: fiber [0-9]+'s stack, innermost frame "
                      "first, as addresses in the object file")))
      << out;
  EXPECT_TRUE(std::regex_search(
      out, std::regex("\n\t\\.\\.\\. [0-9]+ frames elided \\.\\.\\.\n")))
      << out;
  // "\tin OBJECT:" lines, then "\t#N 0xADDR" lines: all in this program.
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(len, 0);
  self[len] = '\0';
  const std::regex line_re("\t(in ([^\n]+):|#([0-9]+) (0x[0-9a-f]+))\n");
  std::vector<int> index;
  std::vector<std::string> addrs;
  int objects = 0;
  for (std::sregex_iterator it(out.begin(), out.end(), line_re), end; it != end;
       ++it) {
    if ((*it)[2].matched) {
      EXPECT_EQ((*it)[2].str(), std::string(self)) << out;
      ++objects;
    } else {
      index.push_back(std::stoi((*it)[3]));
      addrs.push_back((*it)[4]);
    }
  }
  EXPECT_EQ(objects, 2) << "named before the first and the last frames\n"
                        << out;
  ASSERT_GE(addrs.size(), 40u) << out;  // 32 first, 16 last
  const std::vector<std::string> names = Addr2Line(self, addrs);
  ASSERT_EQ(names.size(), addrs.size()) << out;
  std::string listing;
  for (std::size_t i = 0; i < names.size(); ++i) {
    listing += "#" + std::to_string(index[i]) + " " + names[i] + "\n";
  }
  // The innermost frames: the recursion itself.
  for (std::size_t i = 0; i < 32; ++i) {
    EXPECT_NE(names[i].find("Recurse(int)"), std::string::npos)
        << "frame " << index[i] << "\n"
        << listing;
  }
  // The outermost: where it started, then the fiber's entry.
  const auto start =
      std::find_if(names.begin() + 32, names.end(), [](const std::string& n) {
        return n.find("StartRecursion()") != std::string::npos;
      });
  EXPECT_NE(start, names.end()) << listing;
  EXPECT_NE(names.back().find("goro_context_trampoline"), std::string::npos)
      << listing;
  // Consecutive numbers within each part, the tail after a gap.
  EXPECT_EQ(index[31], 31) << listing;
  EXPECT_GT(index[32], 32) << listing;
  EXPECT_EQ(index.back(), index[32] + static_cast<int>(index.size()) - 33)
      << listing;
}

// The overflow report ends with the fiber's frames (issue 11), found by
// libunwind's CFI walk once sysmon has loaded it.
TEST(StackOverflowBacktrace, OverflowReportEndsWithTheFramesThatRecursed) {
  if (const char* when = std::getenv(kOverflowChildEnv)) OverflowChild(when);
  const std::string out =
      RunChild(kOverflowChildFilter, kOverflowChildEnv, "late");
  EXPECT_EQ(out.find(kFramePointerWalk), std::string::npos)
      << "libunwind was not loaded 50 ms into the run\n"
      << out;
  ExpectFramesThatRecursed(out);
}

// The same report for an overflow in the first instant of a run, before
// sysmon has loaded libunwind (which a signal handler cannot load): the
// frame-pointer walk names the same frames, and says what it is. The
// overflow comes microseconds after the start and sysmon a busy period (at
// most 1 ms) later, but a loaded machine can stall the child past that:
// up to 20 children, until one's report is a frame-pointer walk.
TEST(StackOverflowBacktrace, OverflowBeforeLibunwindIsLoadedStillNamesFrames) {
  std::string out;
  for (int rep = 0; rep < 20; ++rep) {
    out = RunChild(kOverflowChildFilter, kOverflowChildEnv, "early");
    if (out.find(kFramePointerWalk) != std::string::npos) break;
  }
  // Under AddressSanitizer on a VM with dear page faults (25-35 us each:
  // ASan's shadow pages) every child can outlive sysmon's delay (CI run 14:
  // 20 of 20), as in LazyUnwinder.EmptyRunDoesNotLoadIt: there the
  // libunwind report, checked the same way, stands in for it.
  if (goro_test::kAsan && out.find(kFramePointerWalk) == std::string::npos) {
    ExpectFramesThatRecursed(out);
    GTEST_SKIP() << "every child outlived sysmon's delay under ASan";
  }
  ASSERT_NE(out.find(kFramePointerWalk), std::string::npos)
      << "no frame-pointer walk in 20 overflows at the start of a run\n"
      << out;
  ExpectFramesThatRecursed(out);
}

// A parked neighbour whose stack sits right below the overflowing fiber's
// keeps a 26 KiB pattern on its stack and checks it when woken. Code built
// without -fstack-clash-protection (no_clash_frames.cc) moves the stack
// pointer 60 KiB at once and writes only there: the guard region must be at
// least that big to catch it. If the write got through, the neighbour finds
// its pattern broken and the program would exit normally.
TEST_F(StackOverflowDeathTest, FrameUpToTheGuardSizeIsCaughtWithoutProbes) {
  constexpr std::size_t kStack = 32 * 1024;
  constexpr std::size_t kPattern = 26 * 1024;
  EXPECT_DEATH(
      {
        goro_test::CleanGoroEnv env;
        goro::Options o;
        o.procs = 1;
        goro::run(o, [&] {
          goro::WaitGroup parked, release, done;
          std::atomic<int> corrupted{0};
          constexpr int kNeighbours = 4;
          parked.add(kNeighbours);
          release.add(1);
          done.add(kNeighbours);
          // Stacks of a non-default size come straight from the allocator,
          // lowest address first: each fiber's stack lies above the
          // previous one's, so the last neighbour is right below the
          // overflowing fiber.
          for (int i = 0; i < kNeighbours; ++i) {
            goro::go(goro::SpawnOptions{.stack_size = kStack}, [&] {
              volatile unsigned char pattern[kPattern];
              for (std::size_t j = 0; j < kPattern; ++j) pattern[j] = 0xC3;
              parked.done();
              release.wait();
              for (std::size_t j = 0; j < kPattern; ++j) {
                if (pattern[j] != 0xC3) {
                  corrupted.fetch_add(1);
                  break;
                }
              }
              done.done();
            });
          }
          parked.wait();
          goro::WaitGroup wg;
          wg.add(1);
          goro::go(
              goro::SpawnOptions{.stack_size = kStack, .name = "big-frame"},
              [&] {
                g_sink = goro_test::BigFrameNoProbe60K();
                wg.done();
              });
          wg.wait();
          release.done();
          done.wait();
          std::fprintf(stderr, "neighbours corrupted: %d\n", corrupted.load());
        });
        std::exit(0);
      },
      "goro: fiber [0-9]+ \\(big-frame\\) overflowed its 32768-byte stack");
}

// A write into another fiber's guard region (a stray pointer, not this
// fiber's overflow) is reported too, naming the region, never a bare SIGSEGV.
TEST_F(StackOverflowDeathTest, FaultInAnotherFibersGuardIsReported) {
  EXPECT_DEATH(
      {
        goro_test::CleanGoroEnv env;
        goro::run([] {
          std::atomic<char*> other_lo{nullptr};
          goro::WaitGroup parked, release;
          parked.add(1);
          release.add(1);
          goro::go([&] {
            other_lo = goro::runtime_internal::current_m()->curg()->stack.lo;
            parked.done();
            release.wait();
          });
          parked.wait();
          goro::WaitGroup wg;
          wg.add(1);
          goro::go(goro::SpawnOptions{.name = "stray"}, [&] {
            *reinterpret_cast<volatile char*>(other_lo.load() - 100) = 1;
            wg.done();
          });
          wg.wait();
          release.done();
        });
      },
      "goro: fiber [0-9]+ \\(stray\\) faulted at 0x[0-9a-f]+ in the guard "
      "region of another fiber's stack");
}

// Makes this process (and the threads it creates from now on) look like a
// kernel without MADV_GUARD_INSTALL whose mprotect guard budget is spent:
// madvise(MADV_GUARD_INSTALL) fails with EINVAL (what a pre-6.13 kernel
// says) and mprotect(PROT_NONE) of a 64 KiB guard with ENOMEM (what the
// kernel says when vm.max_map_count is reached). A seccomp filter, so no
// test hook in the runtime: new StackAllocators then fall back to canary
// stacks as they would on such a machine. Returns false if seccomp is not
// available.
bool EmulateKernelWithoutStackGuards() {
  using goro::runtime_internal::kGuardSize;
  constexpr std::uint32_t kMadvGuardInstall = 102;
  auto arg = [](int i) {
    return static_cast<std::uint32_t>(offsetof(seccomp_data, args) +
                                      static_cast<std::size_t>(i) * 8);
  };
  const std::uint32_t kAllow = SECCOMP_RET_ALLOW;
  sock_filter f[] = {
      /* 0*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      /* 1*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 11),
      /* 2*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      /* 3*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 3),
      /* 4*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg(2)),  // advice
      /* 5*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kMadvGuardInstall, 0, 7),
      /* 6*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
      /* 7*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 0, 5),
      /* 8*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg(1)),  // len (low half)
      /* 9*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kGuardSize, 0, 3),
      /*10*/ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg(2)),  // prot
      /*11*/ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_NONE, 0, 1),
      /*12*/ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOMEM),
      /*13*/ BPF_STMT(BPF_RET | BPF_K, kAllow),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(f) / sizeof(f[0])), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// docs/runtime.md, "Stack overflow": where neither MADV_GUARD_INSTALL nor an
// mprotect guard is available, "stacks have a canary word at their lowest
// address, checked whenever the fiber switches out. An overflow that
// overwrites the canary is reported at" that switch. The fiber overwrites
// its own canary (what a frame just past the stack's end would do) and
// yields: the switch must report it.
TEST_F(StackOverflowDeathTest, OverwrittenCanaryIsReportedAtTheNextSwitch) {
  EXPECT_DEATH(
      {
        goro_test::CleanGoroEnv env;
        if (!EmulateKernelWithoutStackGuards()) {
          std::fprintf(stderr,
                       "seccomp unavailable: cannot emulate a kernel "
                       "without stack guards\n");
          std::_Exit(3);
        }
        goro::run([] {
          goro::WaitGroup wg;
          wg.add(1);
          goro::go(
              goro::SpawnOptions{.stack_size = 64 * 1024, .name = "canary"},
              [&] {
                const goro::runtime_internal::Stack& st =
                    goro::runtime_internal::current_m()->curg()->stack;
                if (st.guard != goro::runtime_internal::GuardKind::kCanary) {
                  std::fprintf(stderr,
                               "not a canary stack: the "
                               "fallback was not taken\n");
                  std::_Exit(3);
                }
                *reinterpret_cast<volatile std::uint64_t*>(st.lo) = 0;
                goro::yield();  // a switch: the check
                std::fprintf(stderr,
                             "the switch did not check the "
                             "canary\n");
                wg.done();
              });
          wg.wait();
        });
      },
      "goro: fiber [0-9]+ \\(canary\\) overflowed its 65536-byte stack "
      "\\(its canary was overwritten; found at a switch");
}

// ---------------------------------------------------------------------------
// Stack sizes that ordinary C++ needs (measured by //bench:stack_need).

// libstdc++'s regex executor recurses once per character (about 370 bytes
// each at -O2): a 200-character subject needs about 75 KiB, more than the old
// 64 KiB default.
TEST(StackSizeTest, RegexOnA200CharStringWorksOnTheDefaultStack) {
  EXPECT_EXIT(
      {
        goro_test::CleanGoroEnv env;
        int found = -1;
        goro::run([&] {
          goro::WaitGroup wg;
          wg.add(1);
          goro::go([&] {
            std::string s = "key=";
            for (int i = 0; i < 196; ++i) s += static_cast<char>('a' + i % 26);
            std::smatch m;
            found = std::regex_search(s, m, std::regex("(\\w+)=(.*)")) &&
                    m[2].length() == 196;
            wg.done();
          });
          wg.wait();
        });
        std::fprintf(stderr, "found=%d\n", found);
        std::exit(found == 1 ? 0 : 1);
      },
      testing::ExitedWithCode(0), "found=1");
}

__attribute__((noinline)) int OneMiBArray() {
  char a[1 << 20];
  // On its own stack, not below it (where another fiber's stack may be).
  if (a < goro::runtime_internal::current_m()->curg()->stack.lo) return -1;
  std::memset(a, 7, sizeof(a));
  int sum = 0;
  for (std::size_t i = 0; i < sizeof(a); i += 4096) sum += a[i];
  return sum;
}

// Programs put their whole main inside goro::run: the main fiber gets a
// thread-sized (8 MiB) stack, committed only as it is used.
TEST(StackSizeTest, MainFiberCanUseAOneMiBLocalArray) {
  EXPECT_EXIT(
      {
        goro_test::CleanGoroEnv env;
        int sum = 0;
        goro::run([&] { sum = OneMiBArray(); });
        std::fprintf(stderr, "sum=%d\n", sum);
        std::exit(sum == 7 * 256 ? 0 : 1);
      },
      testing::ExitedWithCode(0), "sum=1792");
}

}  // namespace
