// Copyright goro authors.
//
// page_fault_cost: what one page fault and one mmap/munmap pair cost on this
// machine. The figures explain start-up times and the scale tests' run
// times, which are mostly page faults: on a VM whose host backs each new
// page of the guest lazily, a fault costs 25-35 us instead of well under
// one (bench/README.md, "Start-up").
//   bazel run -c opt //tools:page_fault_cost

#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

using Clock = std::chrono::steady_clock;

double micros_since(Clock::time_point t0, long n) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() /
         static_cast<double>(n);
}

}  // namespace

int main() {
  constexpr long kPages = 20000;  // 80 MiB
  constexpr long kPage = 4096;
  constexpr long kMaps = 5000;
  for (int round = 0; round < 3; ++round) {
    void* mem = mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      std::perror("page_fault_cost: mmap");
      return EXIT_FAILURE;
    }
    // No transparent huge pages: one fault per 4 KiB page, as for stacks.
    madvise(mem, kPages * kPage, MADV_NOHUGEPAGE);
    auto* bytes = static_cast<volatile char*>(mem);
    auto t0 = Clock::now();
    for (long i = 0; i < kPages; ++i) bytes[i * kPage] = 1;
    const double fault_us = micros_since(t0, kPages);
    munmap(mem, kPages * kPage);
    t0 = Clock::now();
    for (long i = 0; i < kMaps; ++i) {
      void* p = mmap(nullptr, 16 * kPage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        std::perror("page_fault_cost: mmap");
        return EXIT_FAILURE;
      }
      munmap(p, 16 * kPage);
    }
    const double map_us = micros_since(t0, kMaps);
    std::printf("round %d: %.2f us per page fault, %.2f us per mmap+munmap\n",
                round, fault_us, map_us);
  }
  return 0;
}
