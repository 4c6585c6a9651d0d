// Copyright goro authors.
//
// goro::trace: an execution trace of the scheduler, written as Chrome Trace
// Event JSON that Perfetto's UI (ui.perfetto.dev, "Open trace file") and
// Chromium's trace viewer (chrome://tracing, "Load") open. The layout is
// `go tool trace`'s: one track per P, with a slice for every stretch a fiber
// ran there, named by the fiber's id and name ("G7 worker-3") and saying why
// it ended (yield, preempted (async), preempted (cooperative), blocked: chan
// receive, blocking call, exit); flow arrows from the fiber that readied (or
// created) a fiber to where that fiber next ran; short marks for steals,
// timers and network polls; and a counter track of running, runnable and
// blocking fibers.
//
//   absl::Status st = goro::trace::start("/tmp/app.trace.json");
//   ...                                   // the part of the program to see
//   absl::StatusOr<goro::trace::Result> r = goro::trace::stop();
//   // r->events written, r->dropped lost
//
// or, for a whole run, GORO_TRACE=/tmp/app.trace.json in the environment
// (the trace starts before the main fiber and ends when run's main returns;
// run throws std::invalid_argument naming GORO_TRACE if the file cannot be
// written, like the other GORO_* variables). docs/diagnostics.md shows a
// trace and how to read it.
//
// Guarantees:
//   * A fiber never waits for the trace: each P writes its events into its
//     own buffer, which a writer thread drains; an event that finds its
//     buffer full is dropped and counted, as are events past the file's size
//     limit (Options::max_bytes; the writer stops writing there and finishes
//     the file). Both counts are in Result and in the file ("otherData").
//   * The file is valid JSON whenever stop() returns OK (also at the size
//     limit): slices on a P's track are in time order and do not overlap,
//     and every flow arrow has both ends (an arrow whose end was lost is left
//     out, the mark of its start kept).
//   * The counters are exact from event to event, but start from a snapshot
//     taken without stopping the fibers, and dropped events skew them (they
//     never go below zero).
//   * Names are cut at 48 bytes.
//
// Cost. While no trace runs: one predictable branch per event site (a
// relaxed load of a flag on a cache line of its own); the yield and
// ping-pong benchmarks show no change above their noise (the ping-pong's
// best runs up to 3 ns, 2 %, slower). While one runs: 2
// or 3 events per context switch (the stop, the start, and the ready that
// led to it), each 15-35 ns on the switching thread on the development
// machines (a TSC read and a 32-byte store), plus about 100 ns of the
// writer thread's CPU and 70-120 bytes of JSON; the writer keeps up with
// about 10 million events a second on a CPU of its own, and what it cannot
// keep up with is dropped. `bench/trace_bench.cc` measures it; the figures
// are in docs/diagnostics.md. Memory: Options::buffer_events x 32 bytes
// per P (and as much again for its spare, and one more ring for threads
// without a P), committed as it is written.
//
// Not async-signal-safe: start, stop and active take a lock and allocate.
//
// start, stop and active may be called from any fiber or thread while a
// runtime runs (a fiber calling start or stop is inside goro::blocking()
// meanwhile, so its P keeps running others); one trace at a time. When run's
// main returns, a trace still running is stopped and its file finished.

#ifndef GORO_DIAG_TRACE_H_
#define GORO_DIAG_TRACE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace goro::trace {

struct Options {
  // Events each P's buffer holds (32 bytes each) before the writer must have
  // drained it: a power of two from 16 to 2^24. The writer wakes when one is
  // half full and every 5 ms otherwise.
  std::size_t buffer_events = std::size_t{1} << 18;  // 8 MiB
  // The file's size limit in bytes (at least 64 KiB). JSON costs about 100
  // bytes an event; past the limit events are dropped and counted, and the
  // file is finished properly.
  std::size_t max_bytes = std::size_t{256} << 20;
};

struct Result {
  std::uint64_t events = 0;               // events written to the file
  std::uint64_t dropped = 0;              // the two below together
  std::uint64_t dropped_buffer_full = 0;  // a P's buffer was full
  std::uint64_t dropped_size_limit = 0;   // past Options::max_bytes
  std::uint64_t bytes = 0;                // the file's size
};

// start begins a trace into the file at `path` (created or truncated).
// Errors: FailedPrecondition when a trace is already running (GORO_TRACE's
// included) or no runtime is running; InvalidArgument for bad options; the
// error of open(2) (NotFound, PermissionDenied, ...) when the file cannot be
// opened for writing. Blocks the calling fiber (not its P) for about a
// millisecond.
absl::Status start(const std::string& path, const Options& options = {});

// stop ends the trace: no event is taken after it begins, everything taken
// before is written, and the file is finished and closed. Returns what was
// written and dropped. Errors: FailedPrecondition when no trace is running;
// the error of write(2) if the file could not be written (the counts are
// then lost; the file is incomplete). Blocks the calling fiber (not its P)
// until the writer has written everything: milliseconds, or about a second
// per 10 million events still buffered.
absl::StatusOr<Result> stop();

// active says whether a trace is running.
bool active();

}  // namespace goro::trace

#endif  // GORO_DIAG_TRACE_H_
