// Copyright goro authors.
//
// Fiber stacks: the overflow report (guard page -> message naming the fiber
// -> abort), and StackAllocator's guard modes used directly: madvise guards
// (the default on Linux >= 6.13), the mprotect fallback and its budget, and
// canaries.

#include "runtime/internal/stack.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using goro::runtime_internal::GuardKind;
using goro::runtime_internal::GuardMode;
using goro::runtime_internal::kGuardSize;
using goro::runtime_internal::kPageSize;
using goro::runtime_internal::kStackCanary;
using goro::runtime_internal::Stack;
using goro::runtime_internal::StackAllocator;

// Recurses without bound; the volatile array keeps every frame on the stack
// (no tail call, no loop).
volatile int g_sink;
volatile bool g_forever = true;
__attribute__((noinline)) int Recurse(int depth) {
  volatile char frame[512];
  frame[0] = static_cast<char>(depth);
  frame[511] = static_cast<char>(depth >> 8);
  int r = g_forever ? Recurse(depth + 1) : 0;
  return r + frame[0] + frame[511];
}

class StackDeathTest : public testing::Test {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
};

TEST_F(StackDeathTest, OverflowIsReportedAndAborts) {
  EXPECT_DEATH(goro::run([] {
                 goro::WaitGroup wg;
                 wg.add(1);
                 goro::go(goro::SpawnOptions{.stack_size = 64 * 1024}, [&] {
                   g_sink = Recurse(0);
                   wg.done();
                 });
                 wg.wait();
               }),
               "goro: fiber [0-9]+ overflowed its 65536-byte stack");
}

TEST_F(StackDeathTest, OverflowMessageNamesTheFiber) {
  EXPECT_DEATH(goro::run([] {
                 goro::WaitGroup wg;
                 wg.add(1);
                 goro::go(goro::SpawnOptions{.stack_size = 128 * 1024,
                                             .name = "deep-recursion"},
                          [&] {
                            g_sink = Recurse(0);
                            wg.done();
                          });
                 wg.wait();
               }),
               "goro: fiber [0-9]+ \\(deep-recursion\\) overflowed its "
               "131072-byte stack");
}

TEST_F(StackDeathTest, OverflowOfTheMainFiberWithTwoProcs) {
  goro::Options o;
  o.procs = 2;
  // The main fiber's stack is thread-sized (8 MiB), not Options::stack_size.
  EXPECT_DEATH(goro::run(o, [] { g_sink = Recurse(0); }),
               "goro: fiber [0-9]+ \\(main\\) overflowed its 8388608-byte "
               "stack(.|\n)*the main fiber gets at least 8 MiB");
}

TEST_F(StackDeathTest, FaultsOutsideGuardsAreNotReportedAsOverflow) {
  // A wild write in a fiber is an ordinary crash, not an "overflow".
  EXPECT_DEATH(goro::run([] {
                 volatile std::uintptr_t addr = 16;
                 *reinterpret_cast<volatile int*>(addr) = 1;
               }),
               testing::Not(testing::ContainsRegex("overflowed")));
}

// ---------------------------------------------------------------------------
// StackAllocator, directly.

bool KernelHasGuardInstall() {
  utsname u;
  if (uname(&u) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 13);
}

void ExpectGuardGeometry(const Stack& s, std::size_t size) {
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s.size, size);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s.lo) % kPageSize, 0u);
  EXPECT_EQ(s.hi(), s.lo + size);
  EXPECT_TRUE(s.guard_contains(s.lo - 1));
  EXPECT_TRUE(s.guard_contains(s.lo - kGuardSize));
  EXPECT_FALSE(s.guard_contains(s.lo - kGuardSize - 1));
  EXPECT_FALSE(s.guard_contains(s.lo));
  EXPECT_FALSE(s.guard_contains(s.hi() - 1));
  EXPECT_FALSE(Stack{}.guard_contains(s.lo - 1));
}

void TouchWholeStack(const Stack& s) {
  // Every usable byte is writable (below `hi`, above the guard).
  for (char* p = s.lo; p < s.hi(); p += kPageSize)
    *reinterpret_cast<volatile char*>(p) = 1;
  *reinterpret_cast<volatile char*>(s.hi() - 1) = 1;
}

TEST(StackAllocatorTest, AutoUsesMadviseGuardsOnNewKernels) {
  StackAllocator a;
  Stack s = a.allocate(64 * 1024);
  ExpectGuardGeometry(s, 64 * 1024);
  if (KernelHasGuardInstall()) {
    EXPECT_EQ(s.guard, GuardKind::kMadvise);
    EXPECT_EQ(a.guard_kind(), GuardKind::kMadvise);
  } else {
    EXPECT_NE(s.guard, GuardKind::kNone);
  }
  EXPECT_TRUE(s.canary_intact());
  // Write the bottom usable word; not a canary stack, so still "intact".
  TouchWholeStack(s);
  *reinterpret_cast<volatile std::uint64_t*>(s.lo) = 0;
  EXPECT_TRUE(s.canary_intact());
  a.release(s);
}

TEST(StackAllocatorTest, MprotectMode) {
  StackAllocator a(GuardMode::kMprotect);
  Stack s = a.allocate(64 * 1024);
  ExpectGuardGeometry(s, 64 * 1024);
  EXPECT_EQ(s.guard, GuardKind::kMprotect);
  EXPECT_EQ(a.guard_kind(), GuardKind::kMprotect);
  EXPECT_TRUE(s.canary_intact());
  TouchWholeStack(s);
  a.release(s);
}

TEST(StackAllocatorTest, MprotectBudgetFallsBackToCanaries) {
  // Each mprotect guard splits a mapping; past the budget, canaries.
  StackAllocator a(GuardMode::kMprotect, /*mprotect_budget=*/3);
  std::vector<Stack> stacks;
  int mprotect = 0, canary = 0;
  for (int i = 0; i < 600; ++i) {  // more than one 16 MiB chunk
    Stack s = a.allocate(64 * 1024);
    if (s.guard == GuardKind::kMprotect) ++mprotect;
    if (s.guard == GuardKind::kCanary) {
      ++canary;
      EXPECT_TRUE(s.canary_intact());
      EXPECT_EQ(*reinterpret_cast<std::uint64_t*>(s.lo), kStackCanary);
    }
    stacks.push_back(s);
  }
  EXPECT_EQ(mprotect, 3);
  EXPECT_EQ(canary, 597);
  EXPECT_EQ(a.guard_kind(), GuardKind::kCanary);
  for (const Stack& s : stacks) a.release(s);
}

TEST(StackAllocatorTest, CanaryModeDetectsCorruption) {
  StackAllocator a(GuardMode::kCanary);
  Stack s = a.allocate(32 * 1024);
  ExpectGuardGeometry(s, 32 * 1024);
  EXPECT_EQ(s.guard, GuardKind::kCanary);
  EXPECT_EQ(a.guard_kind(), GuardKind::kCanary);
  EXPECT_TRUE(s.canary_intact());
  // Using the stack down to just above the canary is fine.
  for (char* p = s.lo + 8; p < s.hi(); ++p) *p = static_cast<char>(0xAB);
  EXPECT_TRUE(s.canary_intact());
  // An overflow that reaches the lowest word is detected...
  s.lo[0] = 0;
  EXPECT_FALSE(s.canary_intact());
  // ...and a recycled stack gets a fresh canary.
  char* lo = s.lo;
  a.release(s);
  Stack t = a.allocate(32 * 1024);
  EXPECT_EQ(t.lo, lo);  // LIFO reuse
  EXPECT_TRUE(t.canary_intact());
  // Released memory went back to the kernel: it reads as zero again.
  EXPECT_EQ(t.lo[100], 0);
  EXPECT_EQ(t.hi()[-1], 0);
  a.release(t);
}

TEST(StackAllocatorTest, StackCacheRewritesTheCanary) {
  StackAllocator a(GuardMode::kCanary);
  goro::runtime_internal::StackCache cache;
  constexpr std::size_t kSize = 64 * 1024;
  Stack s = cache.reserve(a, kSize, kSize);
  ASSERT_EQ(s.guard, GuardKind::kCanary);
  s.lo[3] = 7;
  EXPECT_FALSE(s.canary_intact());
  cache.put(a, s, kSize);
  Stack t = cache.reserve(a, kSize, kSize);
  cache.swap_for_warm(a, &t, kSize);  // the warm one, still committed
  EXPECT_EQ(t.lo, s.lo);
  EXPECT_TRUE(t.canary_intact());
  cache.put(a, t, kSize);
  cache.drain();
}

// A reservation never takes the warm stack a finished fiber left: that one
// goes to the next fiber that runs, and the reserved one waits for the next
// reservation (so queued fibers do not each fault in a stack of their own).
TEST(StackAllocatorTest, StackCacheReservesColdAndRunsWarm) {
  StackAllocator a;
  goro::runtime_internal::StackCache cache;
  constexpr std::size_t kSize = 64 * 1024;
  Stack ran = cache.reserve(a, kSize, kSize);
  ran.hi()[-1] = 1;  // committed
  cache.put(a, ran, kSize);
  Stack r1 = cache.reserve(a, kSize, kSize);
  Stack r2 = cache.reserve(a, kSize, kSize);
  EXPECT_NE(r1.lo, ran.lo);
  EXPECT_NE(r2.lo, ran.lo);
  cache.swap_for_warm(a, &r2, kSize);
  EXPECT_EQ(r2.lo, ran.lo);
  Stack r3 = cache.reserve(a, kSize, kSize);  // r2's reservation, unused
  EXPECT_NE(r3.lo, ran.lo);
  EXPECT_NE(r3.lo, r1.lo);
  // Nothing warm left: a fiber keeps its own reservation.
  Stack before = r1;
  cache.swap_for_warm(a, &r1, kSize);
  EXPECT_EQ(r1.lo, before.lo);
  // Other sizes are never exchanged.
  Stack big = cache.reserve(a, 2 * kSize, kSize);
  cache.put(a, r3, kSize);
  before = big;
  cache.swap_for_warm(a, &big, kSize);
  EXPECT_EQ(big.lo, before.lo);
  a.release(big);
  cache.put(a, r1, kSize);
  cache.put(a, r2, kSize);
  cache.drain();
}

TEST(StackAllocatorTest, SizesHaveSeparateFreeListsAndNeverOverlap) {
  StackAllocator a;
  std::vector<Stack> stacks;
  for (std::size_t kib : {16, 64, 128, 1024, 64, 16}) {
    for (int i = 0; i < 20; ++i) stacks.push_back(a.allocate(kib * 1024));
  }
  // No two [guard, hi) ranges overlap.
  std::vector<std::pair<char*, char*>> ranges;
  for (const Stack& s : stacks) ranges.push_back({s.lo - kGuardSize, s.hi()});
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  }
  for (const Stack& s : stacks) {
    TouchWholeStack(s);
    a.release(s);
  }
  // Reuse keeps the size.
  Stack big = a.allocate(1024 * 1024);
  EXPECT_EQ(big.size, 1024u * 1024);
  a.release(big);
}

int CountMappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

// Whether any mapping in /proc/self/maps contains `p`.
bool IsMapped(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && a >= lo &&
        a < hi) {
      return true;
    }
  }
  return false;
}

TEST(StackAllocatorTest, ManyStacksCostFewMappings) {
  // madvise guards do not split mappings: 100,000 stacks (6.5 GB of address
  // space, untouched) must cost a few hundred mappings, not 100,000.
  if (!KernelHasGuardInstall())
    GTEST_SKIP() << "kernel lacks MADV_GUARD_INSTALL";
  const int kN = goro_test::Scaled(100000, 20000);
  const int before = CountMappings();
  std::vector<char*> some;
  {
    StackAllocator a;
    std::vector<Stack> stacks;
    stacks.reserve(static_cast<std::size_t>(kN));
    for (int i = 0; i < kN; ++i) stacks.push_back(a.allocate(64 * 1024));
    EXPECT_EQ(a.guard_kind(), GuardKind::kMadvise);
    const int during = CountMappings();
    EXPECT_LT(during - before, 2000) << "mappings for " << kN << " stacks";
    std::set<char*> distinct;
    for (const Stack& s : stacks) distinct.insert(s.lo);
    EXPECT_EQ(distinct.size(), stacks.size());
    for (int i = 0; i < kN; i += kN / 10)
      some.push_back(stacks[static_cast<std::size_t>(i)].lo);
    for (char* p : some) EXPECT_TRUE(IsMapped(p));
  }
  // The allocator unmapped its chunks.
  for (char* p : some) EXPECT_FALSE(IsMapped(p)) << static_cast<void*>(p);
}

// Writing just below `lo` must fault in every guarded mode. (In threadsafe
// death tests the child runs no goro runtime, so the plain SIGSEGV kills it.)
class StackGuardDeathTest : public testing::TestWithParam<GuardMode> {
 protected:
  void SetUp() override {
    testing::FLAGS_gtest_death_test_style = "threadsafe";
  }
};

TEST_P(StackGuardDeathTest, WriteBelowLoFaults) {
  if (GetParam() == GuardMode::kAuto && !KernelHasGuardInstall()) {
    GTEST_SKIP();
  }
  StackAllocator a(GetParam());
  Stack s = a.allocate(64 * 1024);
  TouchWholeStack(s);  // the usable range is fine
  EXPECT_DEATH(*reinterpret_cast<volatile char*>(s.lo - 1) = 1, "");
  EXPECT_DEATH(*reinterpret_cast<volatile char*>(s.lo - kGuardSize) = 1, "");
  // Guards survive the MADV_DONTNEED of a release and reuse.
  a.release(s);
  Stack t = a.allocate(64 * 1024);
  ASSERT_EQ(t.lo, s.lo);
  EXPECT_DEATH(*reinterpret_cast<volatile char*>(t.lo - 8) = 1, "");
  a.release(t);
}

// The guard region is 64 KiB (docs/runtime.md): a frame up to that size
// that skips the pages in between (code built without
// -fstack-clash-protection) still lands in it, never in the stack below.
TEST_P(StackGuardDeathTest, TheWholeGuardRegionFaults) {
  if (GetParam() == GuardMode::kAuto && !KernelHasGuardInstall()) {
    GTEST_SKIP();
  }
  constexpr std::size_t kDocumentedGuard = 64 * 1024;
  StackAllocator a(GetParam());
  Stack below = a.allocate(64 * 1024);
  Stack s = a.allocate(64 * 1024);
  ASSERT_EQ(below.hi() + kDocumentedGuard, s.lo);  // adjacent, in one chunk
  TouchWholeStack(below);
  for (std::size_t off : {std::size_t{1}, kPageSize, kDocumentedGuard / 2,
                          kDocumentedGuard - kPageSize, kDocumentedGuard}) {
    EXPECT_DEATH(*reinterpret_cast<volatile char*>(s.lo - off) = 1, "")
        << "offset " << off;
  }
  a.release(s);
  a.release(below);
}

INSTANTIATE_TEST_SUITE_P(Modes, StackGuardDeathTest,
                         testing::Values(GuardMode::kAuto,
                                         GuardMode::kMprotect),
                         [](const testing::TestParamInfo<GuardMode>& info) {
                           return info.param == GuardMode::kAuto ? "Auto"
                                                                 : "Mprotect";
                         });

TEST(StackAllocatorTest, CanaryModeDoesNotFaultBelowLo) {
  // The canary fallback has no protected page: documenting that the check at
  // switch time is the only line of defence there.
  StackAllocator a(GuardMode::kCanary);
  Stack s = a.allocate(64 * 1024);
  *reinterpret_cast<volatile char*>(s.lo - 1) = 1;  // no fault
  EXPECT_TRUE(s.canary_intact());  // the guard page is not the canary
  a.release(s);
}

}  // namespace
