// Copyright goro authors.
//
// TraceWriter: the thread that drains a trace session's rings into the file.
// Every round (5 ms, or sooner when a producer finds its ring half full) it
//   1. takes a (TSC, CLOCK_MONOTONIC) pair, for converting event times;
//   2. copies every ring's new events out (freeing the ring for producers);
//   3. feeds TraceJson, in time order across rings, the events older than
//      the hold-back horizon -- the newest pair taken at least 2 ms ago --
//      and keeps the younger ones for the next round;
//   4. appends the JSON to the file, until the size limit.
// The hold-back is why the merge is right: an event is published a few
// nanoseconds after its time is taken, so by the time an event 2 ms old is
// merged, every ring holds whatever happened before it -- unless its thread
// was descheduled between the two for 2 ms; such a late event is still
// written, at its time, and only its flow arrow may be lost.
//
// Times: an event's TSC is converted by linear interpolation between the
// two pairs around it (extrapolating from the nearest two outside them),
// which is continuous and increasing, so the order of events is kept.

#ifndef GORO_DIAG_INTERNAL_TRACE_WRITER_H_
#define GORO_DIAG_INTERNAL_TRACE_WRITER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "diag/internal/trace_json.h"
#include "runtime/internal/trace.h"

namespace goro::diag_internal {

// What a finished trace wrote (goro::trace::Result's counts).
struct TraceCounts {
  std::uint64_t events = 0;
  std::uint64_t dropped_buffer_full = 0;
  std::uint64_t dropped_size_limit = 0;
  std::uint64_t bytes = 0;
};

class TraceWriter {
 public:
  struct Config {
    int fd = -1;  // the file (the caller closes it)
    int pid = 0;
    int nprocs = 0;
    std::uint64_t max_bytes = 0;
    // The trace's start, taken together (the kInit event's time).
    std::uint64_t t0_tsc = 0;
    std::int64_t t0_ns = 0;
  };

  // `s` outlives the writer; the writer reads its rings only.
  TraceWriter(runtime_internal::TraceSession* s, const Config& c);
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;
  ~TraceWriter();

  // Starts the thread.
  void start();
  // Once no producer can write into the session any more (trace.h, T2):
  // drains everything, finishes the file, ends the thread. Returns the
  // counts, or the first write error.
  absl::StatusOr<TraceCounts> finish();

 private:
  void main();
  // One round; `final`: everything left, with no hold-back.
  void round(bool final);
  void flush();
  std::int64_t to_ns(std::uint64_t tsc);

  runtime_internal::TraceSession* const s_;
  const Config c_;
  std::atomic<bool> stop_{false};  // set by finish (release)
  std::thread thread_;
  // The members below belong to the writer thread (finish reads them after
  // joining it).
  TraceJson json_;
  std::vector<std::deque<runtime_internal::TraceEvent>> staged_;  // by ring
  std::vector<std::pair<std::uint64_t, std::int64_t>> calib_;     // (tsc, ns)
  // The segment to_ns used last (valid while calib_ is unchanged).
  std::uint64_t seg_lo_ = 1, seg_hi_ = 0;  // empty
  std::int64_t seg_ns_ = 0;
  double seg_scale_ = 0;
  std::uint64_t dropped_buffer_full_ = 0;
  absl::Status status_;  // the first write error
};

}  // namespace goro::diag_internal

#endif  // GORO_DIAG_INTERNAL_TRACE_WRITER_H_
