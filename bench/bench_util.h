// Copyright goro authors.
//
// Helpers shared by the benchmark binaries: the clock, a runtime with a given
// number of procs, and the statistics the Go peers use (nearest-rank
// percentiles, medians), so that both sides summarise samples the same way.

#ifndef GORO_BENCH_BENCH_UTIL_H_
#define GORO_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

#include "goro.h"

namespace goro_bench {

using Clock = std::chrono::steady_clock;

inline double NsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

inline goro::Options WithProcs(int procs) {
  goro::Options o;
  o.procs = procs;
  return o;
}

// Nearest-rank percentile (q in [0, 1]) of `v`, which it sorts; the Go peer's
// definition.
inline double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t rank =
      static_cast<std::size_t>(q * static_cast<double>(v.size()) + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > v.size()) rank = v.size();
  return v[rank - 1];
}

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace goro_bench

#endif  // GORO_BENCH_BENCH_UTIL_H_
