// Asynchronous preemption: tight loops are preempted, the interrupted state
// survives bit for bit, and the runtime refuses to switch where it must not.

#include <fcntl.h>
#include <immintrin.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"

namespace {

using namespace std::chrono_literals;

goro::Options one_proc(std::chrono::microseconds slice) {
  goro::Options o;
  o.procs = 1;
  o.time_slice = slice;
  return o;
}

// Call-free spin on a relaxed load: only a signal can take the CPU away.
__attribute__((noinline)) std::uint64_t spin_until(
    const std::atomic<bool>& stop) {
  std::uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) ++n;
  return n;
}

TEST(Preempt, TightLoopEndsOnOneProc) {
  goro::run(one_proc(10ms), [] {
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(1);
    goro::go([&] {
      spin_until(stop);
      wg.done();
    });
    // The main fiber needs the only proc back to set `stop`.
    goro::sleep_for(50ms);
    stop = true;
    wg.wait();
    EXPECT_GT(goro::stats().preemptions_async, 0u);
    EXPECT_GT(goro::stats().signals_sent, 0u);
    EXPECT_GT(goro::stats().preempt_requests, 0u);
  });
}

TEST(Preempt, TwoSpinnersShareOneProc) {
  goro::run(one_proc(1ms), [] {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> count[2] = {};
    goro::WaitGroup wg;
    for (int i = 0; i < 2; ++i) {
      wg.add(1);
      goro::go([&, i] {
        std::uint64_t n = 0;
        while (!stop.load(std::memory_order_relaxed)) ++n;
        count[i] = n;
        wg.done();
      });
    }
    goro::sleep_for(1s);
    stop = true;
    wg.wait();
    double a = static_cast<double>(count[0]);
    double b = static_cast<double>(count[1]);
    double share = a / (a + b);
    EXPECT_GT(share, 0.30) << a << " vs " << b;
    EXPECT_LT(share, 0.70) << a << " vs " << b;
  });
}

// --- Register state survives preemption bit for bit --------------------------

constexpr int kRounds = 3000000;

__attribute__((noinline)) double sse_work(double seed) {
  double a = seed, b = 1.0000001, c = 0.9999999;
  for (int i = 0; i < kRounds; ++i) {
    a = a * b + c * 1e-9;
    b = b * c + 1e-12;
    c = c + a * 1e-15;
  }
  return a + b + c;
}

__attribute__((noinline)) long double x87_work(long double seed) {
  long double a = seed, b = 1.0000001L, c = 0.9999999L;
  for (int i = 0; i < kRounds; ++i) {
    a = a * b + c * 1e-9L;
    b = b * c + 1e-12L;
    c = c + a * 1e-15L;
  }
  return a + b + c;
}

__attribute__((noinline, target("avx2,fma"))) void avx2_work(double seed,
                                                             double out[4]) {
  __m256d a = _mm256_set_pd(seed, seed + 1, seed + 2, seed + 3);
  __m256d b = _mm256_set1_pd(1.0000001);
  __m256d c = _mm256_set1_pd(0.9999999);
  const __m256d e = _mm256_set1_pd(1e-9);
  for (int i = 0; i < kRounds; ++i) {
    a = _mm256_fmadd_pd(a, b, _mm256_mul_pd(c, e));
    b = _mm256_fmadd_pd(b, c, e);
    c = _mm256_add_pd(c, _mm256_mul_pd(a, e));
  }
  _mm256_storeu_pd(out, _mm256_add_pd(_mm256_add_pd(a, b), c));
}

__attribute__((noinline, target("avx512f"))) void avx512_work(double seed,
                                                              double out[8]) {
  __m512d a = _mm512_set_pd(seed, seed + 1, seed + 2, seed + 3, seed + 4,
                            seed + 5, seed + 6, seed + 7);
  __m512d b = _mm512_set1_pd(1.0000001);
  __m512d c = _mm512_set1_pd(0.9999999);
  // Use the upper registers (zmm16-31 exist only with AVX-512).
  __m512d d0 = _mm512_set1_pd(seed), d1 = d0, d2 = d0, d3 = d0, d4 = d0,
          d5 = d0, d6 = d0, d7 = d0, d8 = d0, d9 = d0, d10 = d0, d11 = d0,
          d12 = d0, d13 = d0, d14 = d0, d15 = d0, d16 = d0;
  const __m512d e = _mm512_set1_pd(1e-9);
  for (int i = 0; i < kRounds / 4; ++i) {
    a = _mm512_fmadd_pd(a, b, _mm512_mul_pd(c, e));
    b = _mm512_fmadd_pd(b, c, e);
    c = _mm512_add_pd(c, _mm512_mul_pd(a, e));
    d0 = _mm512_fmadd_pd(d0, b, e);
    d1 = _mm512_fmadd_pd(d1, d0, e);
    d2 = _mm512_fmadd_pd(d2, d1, e);
    d3 = _mm512_fmadd_pd(d3, d2, e);
    d4 = _mm512_fmadd_pd(d4, d3, e);
    d5 = _mm512_fmadd_pd(d5, d4, e);
    d6 = _mm512_fmadd_pd(d6, d5, e);
    d7 = _mm512_fmadd_pd(d7, d6, e);
    d8 = _mm512_fmadd_pd(d8, d7, e);
    d9 = _mm512_fmadd_pd(d9, d8, e);
    d10 = _mm512_fmadd_pd(d10, d9, e);
    d11 = _mm512_fmadd_pd(d11, d10, e);
    d12 = _mm512_fmadd_pd(d12, d11, e);
    d13 = _mm512_fmadd_pd(d13, d12, e);
    d14 = _mm512_fmadd_pd(d14, d13, e);
    d15 = _mm512_fmadd_pd(d15, d14, e);
    d16 = _mm512_fmadd_pd(d16, d15, e);
  }
  __m512d sum = _mm512_add_pd(_mm512_add_pd(a, b), c);
  sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_add_pd(d0, d1), d2));
  sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_add_pd(d3, d4), d5));
  sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_add_pd(d6, d7), d8));
  sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_add_pd(d9, d10), d11));
  sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_add_pd(d12, d13), d14));
  sum = _mm512_add_pd(sum, _mm512_add_pd(d15, d16));
  _mm512_storeu_pd(out, sum);
}

struct Results {
  double sse;
  long double x87;
  double avx2[4];
  double avx512[8];
  bool operator==(const Results& o) const {
    return std::memcmp(&sse, &o.sse, sizeof(sse)) == 0 &&
           std::memcmp(&x87, &o.x87, 10) == 0 &&
           std::memcmp(avx2, o.avx2, sizeof(avx2)) == 0 &&
           std::memcmp(avx512, o.avx512, sizeof(avx512)) == 0;
  }
};

Results compute(int k, bool avx512) {
  Results r{};
  r.sse = sse_work(1.0 + k);
  r.x87 = x87_work(1.0L + k);
  avx2_work(1.0 + k, r.avx2);
  if (avx512) avx512_work(1.0 + k, r.avx512);
  return r;
}

TEST(Preempt, VectorAndX87StateSurvivesPreemption) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    GTEST_SKIP() << "needs AVX2 and FMA";
  }
  constexpr int kFibers = 4;
  Results ref[kFibers];
  for (int k = 0; k < kFibers; ++k) ref[k] = compute(k, avx512);
  Results got[kFibers];
  goro::run(one_proc(100us), [&] {
    goro::WaitGroup wg;
    for (int k = 0; k < kFibers; ++k) {
      wg.add(1);
      goro::go([&, k] {
        got[k] = compute(k, avx512);
        wg.done();
      });
    }
    wg.wait();
    EXPECT_GT(goro::stats().preemptions_async, 10u);
  });
  for (int k = 0; k < kFibers; ++k) EXPECT_TRUE(got[k] == ref[k]) << k;
  if (!avx512) std::printf("note: no AVX-512 on this CPU; checked the rest\n");
}

// --- The red zone below rsp survives ----------------------------------------

// Writes 16 words into the red zone (below rsp, where a leaf function may keep
// data without moving rsp), spins `iters` times without calls, then sums them.
__attribute__((noinline)) std::uint64_t red_zone_roundtrip(
    std::uint64_t seed, std::uint64_t iters) {
  std::uint64_t sum;
  __asm__ volatile(
      "movq %[seed], %%rax\n"
      "movabsq $0x9e3779b97f4a7c15, %%r8\n"
      "movq $-128, %%rcx\n"
      "1:\n"
      "movq %%rax, (%%rsp,%%rcx)\n"
      "addq %%r8, %%rax\n"
      "addq $8, %%rcx\n"
      "jnz 1b\n"
      "movq %[iters], %%rdx\n"
      "2:\n"
      "decq %%rdx\n"
      "jnz 2b\n"
      "xorq %%rax, %%rax\n"
      "movq $-128, %%rcx\n"
      "3:\n"
      "addq (%%rsp,%%rcx), %%rax\n"
      "rolq $7, %%rax\n"
      "addq $8, %%rcx\n"
      "jnz 3b\n"
      "movq %%rax, %[sum]\n"
      : [sum] "=r"(sum)
      : [seed] "r"(seed), [iters] "r"(iters)
      : "rax", "rcx", "rdx", "r8", "cc", "memory");
  return sum;
}

TEST(Preempt, RedZoneSurvives) {
  constexpr std::uint64_t kIters = 20000000;  // ~10 ms per call
  std::vector<std::uint64_t> ref;
  for (int k = 0; k < 8; ++k) ref.push_back(red_zone_roundtrip(k, 1));
  std::atomic<int> bad{0};
  goro::run(one_proc(100us), [&] {
    goro::WaitGroup wg;
    for (int f = 0; f < 3; ++f) {
      wg.add(1);
      goro::go([&] {
        for (int rep = 0; rep < 4; ++rep) {
          for (int k = 0; k < 8; ++k) {
            if (red_zone_roundtrip(k, kIters) != ref[k]) ++bad;
          }
        }
        wg.done();
      });
    }
    wg.wait();
    EXPECT_GT(goro::stats().preemptions_async, 10u);
  });
  EXPECT_EQ(bad.load(), 0);
}

// --- Where the runtime must refuse ------------------------------------------

TEST(Preempt, NeverSwitchesInsideLibc) {
  // A fiber that spends most of its time inside libc (memcpy/memcmp of large
  // buffers): signals landing there are refused; results stay right.
  std::atomic<int> errors{0};
  goro::Stats st;
  goro::run(one_proc(100us), [&] {
    std::atomic<bool> stop{false}, spinning{false};
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      // Only once the spinner runs: from then on this fiber gets the P back
      // only by preempting the spinner asynchronously (it has no
      // cooperative point), so that count cannot stay zero.
      while (!spinning.load()) goro::yield();
      std::vector<char> a(1 << 22, 'x'), b(1 << 22);
      for (int i = 0; i < 200; ++i) {
        a[static_cast<std::size_t>(i)] = static_cast<char>(i);
        std::memcpy(b.data(), a.data(), a.size());
        if (std::memcmp(a.data(), b.data(), a.size()) != 0) ++errors;
      }
      stop = true;
      wg.done();
    });
    goro::go([&] {
      spinning = true;
      spin_until(stop);
      wg.done();
    });
    wg.wait();
    st = goro::stats();
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(st.refused_pc, 0u);
  EXPECT_GT(st.preemptions_async, 0u);
}

TEST(Preempt, NoPreemptScopeHoldsOffSwitches) {
  goro::run(one_proc(1ms), [] {
    std::atomic<bool> inside{false}, other_ran_inside{false};
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      {
        goro::NoPreempt np;
        inside = true;
        auto end = std::chrono::steady_clock::now() + 100ms;
        while (std::chrono::steady_clock::now() < end) {
        }
        inside = false;
      }
      spin_until(stop);
      wg.done();
    });
    goro::go([&] {
      if (inside.load()) other_ran_inside = true;
      stop = true;
      wg.done();
    });
    wg.wait();
    EXPECT_FALSE(other_ran_inside.load());
    EXPECT_GT(goro::stats().refused_no_preempt, 0u);
  });
}

TEST(Preempt, HeldStdMutexHoldsOffSwitchesAndDoesNotDeadlock) {
  goro::run(one_proc(1ms), [] {
    std::mutex mu;
    std::atomic<bool> holding{false}, b_done{false}, stop{false};
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      {
        std::lock_guard<std::mutex> l(mu);
        holding = true;
        std::uint64_t n = 0;
        auto end = std::chrono::steady_clock::now() + 100ms;
        // Call-free between clock reads: plenty of preemptible pcs.
        while (std::chrono::steady_clock::now() < end) {
          for (int i = 0; i < 100000; ++i) n = n * 3 + 1;
          __asm__ volatile("" : "+r"(n));
        }
        holding = false;
      }
      spin_until(stop);
      wg.done();
    });
    goro::go([&] {
      // Runs on the same (only) proc. Had the holder been preempted, this
      // lock would block the proc's thread forever.
      std::lock_guard<std::mutex> l(mu);
      b_done = true;
      stop = true;
      wg.done();
    });
    wg.wait();
    EXPECT_TRUE(b_done.load());
    EXPECT_GT(goro::stats().refused_os_lock, 0u);
  });
}

std::uintptr_t thread_pointer() {
  std::uintptr_t tp;
  __asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
  return tp;
}

// Reads %fs:0, spins call-free for `iters`, reads it again.
__attribute__((noinline)) bool same_thread_across_spin(std::uint64_t iters) {
  std::uintptr_t before = thread_pointer();
  for (std::uint64_t i = 0; i < iters; ++i) __asm__ volatile("");
  return thread_pointer() == before;
}

int count_migrations(bool migrate) {
  goro::Options o;
  o.procs = 2;
  o.time_slice = 100us;
  o.preempt_migrate = migrate;
  std::atomic<int> moved{0};
  goro::run(o, [&] {
    goro::WaitGroup wg;
    for (int f = 0; f < 6; ++f) {
      wg.add(1);
      goro::go([&] {
        for (int rep = 0; rep < 20; ++rep) {
          if (!same_thread_across_spin(5000000)) ++moved;
        }
        wg.done();
      });
    }
    wg.wait();
    EXPECT_GT(goro::stats().preemptions_async, 10u);
  });
  return moved.load();
}

TEST(Preempt, ResumesOnSameThreadByDefault) {
  EXPECT_EQ(count_migrations(false), 0);
}

TEST(Preempt, MayMigrateWhenAllowed) { EXPECT_GT(count_migrations(true), 0); }

TEST(Preempt, RawBlockingReadDoesNotStopOthersNorSeeEintr) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(200ms);
    char c = 'z';
    ASSERT_EQ(write(fds[1], &c, 1), 1);
  });
  goro::run(one_proc(1ms), [&] {
    std::atomic<bool> reading{true};
    std::atomic<int> ticks{0};
    ssize_t got = -2;
    int err = 0;
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      char c;
      got = ::read(fds[0], &c, 1);  // not wrapped in goro::blocking()
      err = errno;
      reading = false;
      wg.done();
    });
    goro::go([&] {
      while (reading.load()) {
        goro::sleep_for(1ms);
        ++ticks;
      }
      wg.done();
    });
    wg.wait();
    EXPECT_EQ(got, 1) << "errno " << err;
    // ~190 ticks on a quiet machine (the first slice passes before sysmon
    // lends a P); a loaded one still gets far more than a stalled proc's 1.
    EXPECT_GT(ticks.load(), 50);
    EXPECT_GT(goro::stats().syscall_retakes, 0u);
  });
  writer.join();
  close(fds[0]);
  close(fds[1]);
}

// Recurses until less than `keep` bytes of stack are left, then spins.
__attribute__((noinline)) std::uint64_t deep_then_spin(
    const std::atomic<bool>& stop, std::uintptr_t lo, std::uintptr_t keep) {
  volatile char pad[256];
  pad[0] = 1;
  auto here = reinterpret_cast<std::uintptr_t>(&pad[0]);
  if (here > lo + keep) return deep_then_spin(stop, lo, keep) + pad[0];
  return spin_until(stop);
}

TEST(Preempt, NearlyFullStackIsNotPreemptedIntoOverflow) {
  goro::Stats st;
  std::atomic<bool> stop{false};
  // The spinner cannot be preempted (too little stack), so the only proc
  // stays busy: a plain thread ends the spin.
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop = true;
  });
  goro::run(one_proc(100us), [&] {
    goro::WaitGroup wg;
    wg.add(1);
    goro::SpawnOptions so;
    so.stack_size = goro::min_stack_size();
    goro::go(so, [&] {
      // The stack's lowest address: the top is 16 KiB above a local near the
      // base of the fiber; leave ~1.5 KiB, less than a preemption needs.
      char probe;
      auto top = reinterpret_cast<std::uintptr_t>(&probe);
      std::uintptr_t lo = (top & ~std::uintptr_t{4095}) + 4096 - so.stack_size;
      deep_then_spin(stop, lo, 1536);
      wg.done();
    });
    wg.wait();
    st = goro::stats();
  });
  stopper.join();
  // (A preemption may still land early, while the fiber recurses with room
  // to spare; what matters is the refusals near the end and no crash.)
  EXPECT_GT(st.refused_stack, 0u);
}

// --- Bugs found by the preemption probes ------------------------------------

// Aborts the test binary if `body` has not returned after `limit`: the
// failures below are deadlocks.
template <typename F>
void with_watchdog(std::chrono::seconds limit, const char* what, F body) {
  std::atomic<bool> done{false};
  std::thread dog([&] {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!done.load() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(10ms);
    }
    if (!done.load()) {
      std::fprintf(stderr, "deadlock: %s\n", what);
      std::_Exit(1);
    }
  });
  body();
  done = true;
  dog.join();
}

TEST(Preempt, ErrnoSurvivesPreemption) {
  long bad = 0;
  goro::Stats st;
  goro::run(one_proc(100us), [&] {
    std::atomic<bool> stop{false};
    goro::WaitGroup wg;
    wg.add(2);
    goro::go([&] {
      volatile int* ep = &errno;
      *ep = 12345;
      for (long i = 0; i < 100000000; ++i) {
        if (*ep != 12345) {
          ++bad;
          *ep = 12345;
        }
      }
      stop = true;
      wg.done();
    });
    goro::go([&] {
      volatile int* ep = &errno;  // same thread (one proc): same errno
      while (!stop.load(std::memory_order_relaxed)) *ep = 777;
      wg.done();
    });
    wg.wait();
    st = goro::stats();
  });
  EXPECT_GT(st.preemptions_async, 10u);
  EXPECT_EQ(bad, 0);
}

TEST(Preempt, HeldSharedMutexHoldsOffSwitches) {
  with_watchdog(30s, "a preempted std::shared_mutex holder never resumed", [] {
    goro::run(one_proc(1ms), [] {
      std::shared_mutex mu;
      std::atomic<bool> holding{false};
      goro::WaitGroup wg;
      wg.add(2);
      goro::go([&] {
        mu.lock();
        holding = true;
        volatile unsigned long x = 0;
        for (unsigned long i = 0; i < 100000000; ++i) x = x + i;
        mu.unlock();
        wg.done();
      });
      goro::go([&] {
        while (!holding.load()) goro::yield();
        mu.lock();  // EDEADLK or a hang if the holder is parked
        mu.unlock();
        wg.done();
      });
      wg.wait();
      EXPECT_GT(goro::stats().refused_os_lock, 0u);
    });
  });
}

TEST(Preempt, BlockingCallDoesNotStrandPreemptedFibers) {
  // A is preempted (pinned to the thread); B then blocks the thread in
  // goro::blocking waiting for A's byte. A must run elsewhere meanwhile.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  with_watchdog(30s, "a fiber pinned to a thread in goro::blocking", [&] {
    goro::run(one_proc(1ms), [&] {
      goro::WaitGroup wg;
      wg.add(2);
      std::atomic<bool> started{false};
      ssize_t n = -1;
      goro::go([&] {
        started = true;
        volatile unsigned long x = 0;
        for (unsigned long i = 0; i < 60000000; ++i) x = x + i;
        char c = 'a';
        EXPECT_EQ(write(fds[1], &c, 1), 1);
        wg.done();
      });
      goro::go([&] {
        char c;
        while (!started.load()) goro::yield();
        n = goro::blocking([&] { return read(fds[0], &c, 1); });
        wg.done();
      });
      wg.wait();
      EXPECT_EQ(n, 1);
    });
  });
  close(fds[0]);
  close(fds[1]);
}

}  // namespace
