// Copyright goro authors.
//
// The context switch (context_x86_64.S): it must preserve the callee-saved
// registers (rbx, rbp, r12-r15), MXCSR and the x87 control word of every
// context, both through the runtime (yield, sleep, park; possibly resuming on
// another thread) and when driven directly.

#include <xmmintrin.h>

#include <atomic>
#include <cfenv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/stack.h"
#include "tests/common/test_util.h"

namespace {

using goro_test::Procs;

using namespace std::chrono_literals;
using goro::runtime_internal::kDefaultMxcsr;
using goro::runtime_internal::kDefaultX87Cw;

// How the register-checking assembly below switches away: set per test.
void (*g_switch)() = nullptr;

}  // namespace

extern "C" void goro_test_switch_thunk() { g_switch(); }

// void goro_test_regs_across_switch(uint64_t seed, uint64_t out[6]):
// loads seed+0 .. seed+5 into rbx, r12, r13, r14, r15, rbp, calls
// goro_test_switch_thunk() (which switches to other contexts that load their
// own values), then stores what the six registers hold afterwards into out.
// Written as a whole function so it controls rbp and the stack alignment.
extern "C" void goro_test_regs_across_switch(std::uint64_t seed,
                                             std::uint64_t* out);
asm(R"(
  .text
  .globl goro_test_regs_across_switch
  .type goro_test_regs_across_switch,@function
  .p2align 4
goro_test_regs_across_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbp, 0
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbx, 0
  pushq %r12
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r12, 0
  pushq %r13
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r13, 0
  pushq %r14
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r14, 0
  pushq %r15
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r15, 0
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  movq %rdi, %rbx
  leaq 1(%rdi), %r12
  leaq 2(%rdi), %r13
  leaq 3(%rdi), %r14
  leaq 4(%rdi), %r15
  leaq 5(%rdi), %rbp
  call goro_test_switch_thunk@PLT
  popq %rsi
  .cfi_adjust_cfa_offset -8
  movq %rbx, 0(%rsi)
  movq %r12, 8(%rsi)
  movq %r13, 16(%rsi)
  movq %r14, 24(%rsi)
  movq %r15, 32(%rsi)
  movq %rbp, 40(%rsi)
  popq %r15
  .cfi_adjust_cfa_offset -8
  popq %r14
  .cfi_adjust_cfa_offset -8
  popq %r13
  .cfi_adjust_cfa_offset -8
  popq %r12
  .cfi_adjust_cfa_offset -8
  popq %rbx
  .cfi_adjust_cfa_offset -8
  popq %rbp
  .cfi_adjust_cfa_offset -8
  ret
  .cfi_endproc
  .size goro_test_regs_across_switch,.-goro_test_regs_across_switch
  .text
)");

namespace {

// Returns an empty string if the registers came back intact, else a
// description.
std::string CheckRegsAcrossSwitch(std::uint64_t seed) {
  std::uint64_t out[6] = {};
  goro_test_regs_across_switch(seed, out);
  static const char* const kNames[6] = {"rbx", "r12", "r13",
                                        "r14", "r15", "rbp"};
  std::string err;
  for (int i = 0; i < 6; ++i) {
    if (out[i] != seed + static_cast<std::uint64_t>(i)) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "%s: want %#llx got %#llx; ", kNames[i],
                    static_cast<unsigned long long>(seed + i),
                    static_cast<unsigned long long>(out[i]));
      err += buf;
    }
  }
  return err;
}

std::uint16_t X87ControlWord() {
  std::uint16_t cw;
  asm volatile("fnstcw %0" : "=m"(cw));
  return cw;
}

void SetX87ControlWord(std::uint16_t cw) {
  asm volatile("fldcw %0" : : "m"(cw));
}

// Rounding-control bits: MXCSR bits 13-14, x87 CW bits 10-11.
unsigned MxcsrRounding() { return (_mm_getcsr() >> 13) & 3u; }
unsigned X87Rounding() { return (X87ControlWord() >> 10) & 3u; }
unsigned RcOf(int mode) {
  switch (mode) {
    case FE_TONEAREST:
      return 0;
    case FE_DOWNWARD:
      return 1;
    case FE_UPWARD:
      return 2;
    case FE_TOWARDZERO:
      return 3;
  }
  return 99;
}

// 1/3 rounded in the current SSE mode: up and down give different doubles.
double OneThird() {
  volatile double one = 1.0, three = 3.0;
  return one / three;
}

// Checks the rounding mode is `mode` everywhere it lives; records failures.
void ExpectMode(int mode, const char* who) {
  EXPECT_EQ(std::fegetround(), mode) << who;
  EXPECT_EQ(MxcsrRounding(), RcOf(mode))
      << who << " MXCSR " << std::hex << _mm_getcsr();
  EXPECT_EQ(X87Rounding(), RcOf(mode))
      << who << " x87 CW " << std::hex << X87ControlWord();
}

class ContextTest : public testing::Test {
 protected:
  void SetUp() override {
    saved_mxcsr_ = _mm_getcsr();
    saved_cw_ = X87ControlWord();
  }
  void TearDown() override {
    _mm_setcsr(saved_mxcsr_);
    SetX87ControlWord(saved_cw_);
  }
  unsigned saved_mxcsr_;
  std::uint16_t saved_cw_;
};

// Fiber A sets FE_UPWARD, yields to B which sets FE_DOWNWARD; each still
// sees its own mode after every resume. One P, so they strictly alternate,
// once B has seen A's first turn: either may run first (CI run 20, TSan:
// main was preempted at its wg.wait() and A ran before B).
TEST_F(ContextTest, RoundingModeIsPerFiberAcrossYield) {
  goro::run(Procs(1), [] {
    goro::WaitGroup wg;
    wg.add(2);
    std::atomic<int> turn{0};
    double a_third = 0, b_third = 0;
    goro::go([&] {
      ASSERT_EQ(std::fesetround(FE_UPWARD), 0);
      for (int i = 0; i < 100; ++i) {
        turn.store(1);
        goro::yield();  // B runs and sets its own mode
        // B really ran in between (else the modes prove nothing).
        EXPECT_EQ(turn.load(), 2) << "round " << i;
        ExpectMode(FE_UPWARD, "A");
        a_third = OneThird();
      }
      wg.done();
    });
    goro::go([&] {
      ASSERT_EQ(std::fesetround(FE_DOWNWARD), 0);
      while (turn.load() == 0) goro::yield();  // A's first turn
      for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(turn.load(), 1) << "round " << i << ": A did not run";
        turn.store(2);
        ExpectMode(FE_DOWNWARD, "B");
        b_third = OneThird();
        goro::yield();
      }
      wg.done();
    });
    wg.wait();
    EXPECT_GT(a_third, b_third);  // the modes really took effect
    // The main fiber never changed its mode.
    ExpectMode(FE_TONEAREST, "main");
  });
}

// Many fibers, each with its own rounding mode, flush-to-zero setting and x87
// precision, switching by yield, sleep and WaitGroup parks on two Ps (so they
// also resume on other threads).
TEST_F(ContextTest, FpControlStateIsPerFiberOnTwoProcs) {
  const int kModes[4] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};
  const int kFibers = goro_test::Scaled(16, 8);
  const int kIters = goro_test::Scaled(300, 50);
  std::atomic<int> failures{0};
  goro::run(Procs(2), [&] {
    goro::WaitGroup wg;
    wg.add(kFibers);
    for (int f = 0; f < kFibers; ++f) {
      goro::go([&, f] {
        const int mode = kModes[f % 4];
        const bool ftz = (f / 4) % 2 == 1;
        // x87 precision control (bits 8-9): 00 single, 10 double, 11 ext.
        const std::uint16_t pc = (f % 3 == 0)   ? 0x000
                                 : (f % 3 == 1) ? 0x200
                                                : 0x300;
        std::fesetround(mode);
        _mm_setcsr((_mm_getcsr() & ~0x8000u) | (ftz ? 0x8000u : 0u));
        SetX87ControlWord(
            static_cast<std::uint16_t>((X87ControlWord() & ~0x300) | pc));
        const unsigned want_mx = _mm_getcsr() & 0xFFC0u;  // control bits
        const std::uint16_t want_cw = X87ControlWord();
        for (int i = 0; i < kIters; ++i) {
          switch (i % 3) {
            case 0:
              goro::yield();
              break;
            case 1:
              goro::sleep_for(std::chrono::microseconds(i % 50));
              break;
            case 2: {
              goro::WaitGroup w;
              w.add(1);
              goro::go([&w] { w.done(); });
              w.wait();
              break;
            }
          }
          if ((_mm_getcsr() & 0xFFC0u) != want_mx ||
              X87ControlWord() != want_cw || std::fegetround() != mode) {
            failures.fetch_add(1);
          }
        }
        wg.done();
      });
    }
    wg.wait();
  });
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ContextTest, NewFibersStartWithDefaultFpControlState) {
  goro::run(Procs(1), [] {
    std::fesetround(FE_UPWARD);
    _mm_setcsr(_mm_getcsr() | 0x8040u);  // FTZ | DAZ
    goro::WaitGroup wg;
    wg.add(1);
    unsigned mx = 0;
    std::uint16_t cw = 0;
    goro::go([&] {
      mx = _mm_getcsr() & 0xFFC0u;
      cw = X87ControlWord();
      wg.done();
    });
    wg.wait();
    EXPECT_EQ(mx, kDefaultMxcsr & 0xFFC0u);
    EXPECT_EQ(cw, kDefaultX87Cw);
    // The spawner kept its own.
    ExpectMode(FE_UPWARD, "main");
    EXPECT_EQ(_mm_getcsr() & 0x8040u, 0x8040u);
    std::fesetround(FE_TONEAREST);
    _mm_setcsr(_mm_getcsr() & ~0x8040u);
  });
}

// rbx, rbp, r12-r15 hold known values across goro::yield() while other
// fibers load different values into the same registers and yield too.
TEST_F(ContextTest, CalleeSavedRegistersSurviveYield) {
  g_switch = [] { goro::yield(); };
  for (int procs : {1, 2}) {
    const int kFibers = 4;
    const int kIters = goro_test::Scaled(2000, 200);
    std::atomic<int> failures{0};
    std::string first_error;
    std::atomic<bool> have_error{false};
    goro::run(Procs(procs), [&] {
      goro::WaitGroup wg;
      wg.add(kFibers);
      for (int f = 0; f < kFibers; ++f) {
        goro::go([&, f] {
          for (int i = 0; i < kIters; ++i) {
            const std::uint64_t seed =
                0x1000000000000000ull * (f + 1) +
                0x10000ull * static_cast<std::uint64_t>(i);
            std::string err = CheckRegsAcrossSwitch(seed);
            if (!err.empty()) {
              failures.fetch_add(1);
              if (!have_error.exchange(true)) first_error = err;
            }
          }
          wg.done();
        });
      }
      wg.wait();
    });
    EXPECT_EQ(failures.load(), 0) << "procs " << procs << ": " << first_error;
  }
}

TEST_F(ContextTest, CalleeSavedRegistersSurviveSleepAndPark) {
  g_switch = [] {
    static std::atomic<unsigned> n{0};
    if (n.fetch_add(1) % 2 == 0) {
      goro::sleep_for(20us);
    } else {
      goro::WaitGroup w;
      w.add(1);
      goro::go([&w] { w.done(); });
      w.wait();
    }
  };
  const int kFibers = 4;
  const int kIters = goro_test::Scaled(500, 100);
  std::atomic<int> failures{0};
  goro::run(Procs(2), [&] {
    goro::WaitGroup wg;
    wg.add(kFibers);
    for (int f = 0; f < kFibers; ++f) {
      goro::go([&, f] {
        for (int i = 0; i < kIters; ++i) {
          const std::uint64_t seed =
              0xA000000000000000ull + 0x100000000ull * f + 0x100ull * i;
          if (!CheckRegsAcrossSwitch(seed).empty()) failures.fetch_add(1);
        }
        wg.done();
      });
    }
    wg.wait();
  });
  EXPECT_EQ(failures.load(), 0);
}

// ---------------------------------------------------------------------------
// The switch driven directly, without the runtime: a hand-built first frame
// (as init_first_frame makes it), the trampoline, and round trips.

struct Direct {
  void* main_sp = nullptr;
  void* fiber_sp = nullptr;
  bool in_fiber = false;
  int entries = 0;
  int fiber_failures = 0;
  std::uint16_t fiber_cw_at_entry = 0;
  unsigned fiber_mxcsr_at_entry = 0;
};
Direct g_direct;

void DirectSwitch() {
  if (g_direct.in_fiber) {
    g_direct.in_fiber = false;
    goro_context_switch(&g_direct.fiber_sp, g_direct.main_sp);
  } else {
    g_direct.in_fiber = true;
    goro_context_switch(&g_direct.main_sp, g_direct.fiber_sp);
  }
}

[[noreturn]] void DirectEntry(void* arg) {
  auto* d = static_cast<Direct*>(arg);
  d->fiber_cw_at_entry = X87ControlWord();
  d->fiber_mxcsr_at_entry = _mm_getcsr();
  std::fesetround(FE_DOWNWARD);
  for (std::uint64_t i = 0;; ++i) {
    ++d->entries;
    // Switches back to main inside; checks our registers when resumed.
    if (!CheckRegsAcrossSwitch(0x5EED000000000000ull + i * 0x100).empty() ||
        std::fegetround() != FE_DOWNWARD) {
      ++d->fiber_failures;
    }
  }
}

TEST_F(ContextTest, DirectSwitchRoundTrips) {
  if (goro_test::kAsan || goro_test::kTsan) {
    GTEST_SKIP() << "unannotated raw stack switch; covered via the runtime";
  }
  using namespace goro::runtime_internal;
  StackAllocator alloc;
  Stack stack = alloc.allocate(64 * 1024);
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(stack.hi()) % 16, 0u);
  auto* fr = reinterpret_cast<SwitchFrame*>(stack.hi() - sizeof(SwitchFrame));
  std::memset(fr, 0, sizeof *fr);
  fr->mxcsr = kDefaultMxcsr;
  fr->x87_cw = kDefaultX87Cw;
  fr->rbx = reinterpret_cast<std::uint64_t>(&DirectEntry);
  fr->r12 = reinterpret_cast<std::uint64_t>(&g_direct);
  fr->ret = reinterpret_cast<std::uint64_t>(&goro_context_trampoline);
  g_direct = Direct{};
  g_direct.fiber_sp = fr;
  g_switch = DirectSwitch;

  std::fesetround(FE_UPWARD);
  constexpr int kRounds = 1000;
  int main_failures = 0;
  for (int i = 0; i < kRounds; ++i) {
    std::string err = CheckRegsAcrossSwitch(0x7700000000000000ull + i * 0x100);
    if (!err.empty()) {
      ++main_failures;
      ADD_FAILURE() << "main, round " << i << ": " << err;
      break;
    }
    if (std::fegetround() != FE_UPWARD) ++main_failures;
  }
  std::fesetround(FE_TONEAREST);
  EXPECT_EQ(main_failures, 0);
  EXPECT_EQ(g_direct.entries, kRounds);
  // The fiber checked rounds 0..kRounds-2 after being resumed.
  EXPECT_EQ(g_direct.fiber_failures, 0);
  // The first frame's FP state was loaded, not inherited from main.
  EXPECT_EQ(g_direct.fiber_cw_at_entry, kDefaultX87Cw);
  EXPECT_EQ(g_direct.fiber_mxcsr_at_entry & 0xFFC0u, kDefaultMxcsr & 0xFFC0u);
  // The fiber is abandoned mid-switch; its stack goes with the allocator.
}

}  // namespace
