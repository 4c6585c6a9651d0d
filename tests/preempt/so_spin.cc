// Copyright goro authors.
//
// User code in a shared object (built as libgoro_test_so_spin.so and linked
// into unwind_test): it must be preempted like the program's own code.

#include <atomic>
#include <chrono>
#include <cstdint>

extern "C" __attribute__((visibility("default"))) std::uint64_t so_spin(
    const std::atomic<bool>* stop, std::int64_t max_ns) {
  // A call-free loop on a relaxed load; the clock is read only every 4096
  // rounds (through the vDSO), so almost every signal lands in this object.
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(max_ns);
  std::uint64_t n = 0;
  while (!stop->load(std::memory_order_relaxed)) {
    if ((++n & 4095) == 0 && std::chrono::steady_clock::now() > end) break;
  }
  return n;
}
