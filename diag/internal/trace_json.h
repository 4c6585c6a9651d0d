// Copyright goro authors.
//
// TraceJson turns the execution trace's binary events (runtime/internal/
// trace.h), fed in time order, into Chrome Trace Event JSON laid out like
// `go tool trace`'s view. Used by the writer thread (trace_writer.h) only;
// separate so that tests can feed it events directly.
//
// The file:
//   {"displayTimeUnit":"ns","traceEvents":[
//   {"name":"process_name","ph":"M",...},   one process, this one
//   {"name":"thread_name","ph":"M","tid":1,"args":{"name":"P0"}}, ...
//   {"name":"G7 worker","cat":"fiber","ph":"X","tid":1,"ts":12.345,
//    "dur":6.789,"args":{"fiber":7,"end":"blocked: chan receive"},
//    "bind_id":3,"flow_in":true},
//   {"name":"ready G7","cat":"ready","ph":"X","tid":2,"ts":12.001,"dur":0,
//    "args":{"by":"G5 producer"},"bind_id":3,"flow_out":true},
//   {"name":"Fibers","ph":"C","args":{"running":2,"runnable":1,...}}, ...
//   ],
//   "otherData":{"events":...,"dropped":...}}
// Tracks (tid): P i is tid i + 1 (spares after the regular Ps, named when
// first used), and one "off P" track for what threads without a P did.
// Times are microseconds from the trace's start, to the nanosecond.
//
// Slices ("X", cat "fiber") are written when they end, so a P's slices
// appear in the file in time order. A fiber's slice and the mark of the
// ready (or create, or return from blocking()) that led to it are written
// together, linked by a version-2 flow (bind_id with flow_out on the mark,
// flow_in on the slice, which both viewers bind to those very events): an
// arrow has both ends or neither. Marks are zero-length "X" events. Per
// track, timestamps are made strictly increasing (a later event at the same
// nanosecond moves 1 ns on), so marks nest strictly inside their slice.
//
// Damage from dropped events is contained: a start without the previous
// stop closes the open slice ("unknown (events dropped)"), a stop without a
// start opens its slice at the track's previous event; counters never go
// below zero.

#ifndef GORO_DIAG_INTERNAL_TRACE_JSON_H_
#define GORO_DIAG_INTERNAL_TRACE_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/internal/trace.h"

namespace goro::diag_internal {

class TraceJson {
 public:
  struct Config {
    int pid = 0;
    int nprocs = 0;  // regular Ps: ids [0, nprocs); spares [nprocs, nrings)
    int nrings = 0;
    std::int64_t t0_ns = 0;  // the trace's start: ts 0 in the file
    std::uint64_t max_bytes = 0;
  };
  // The source of an event from the off-P ring.
  static constexpr int kOffP = -1;

  // Writes the header (process and track names) into out().
  explicit TraceJson(const Config& c);

  // add takes one event of ring `source` (a P id, or kOffP) at ts_ns
  // (CLOCK_MONOTONIC). Events must come in time order across sources (equal
  // times in any order); a late one is tolerated (its arrow may be lost).
  void add(int source, const runtime_internal::TraceEvent& e,
           std::int64_t ts_ns);
  // finish closes what is open at end_ns and writes the file's end.
  void finish(std::int64_t end_ns, std::uint64_t dropped_buffer_full);

  // The JSON produced so far and not yet taken. The writer appends it to
  // the file and clears it (take).
  const std::string& out() const { return out_; }
  void take() {
    flushed_ += out_.size();
    out_.clear();
  }

  std::uint64_t bytes() const { return flushed_ + out_.size(); }
  // Events processed before the size limit, and after it.
  std::uint64_t events() const { return events_; }
  std::uint64_t dropped_size_limit() const { return dropped_limit_; }

 private:
  // A mark waiting for its fiber's next start, to be written with the
  // slice it leads to.
  enum class MarkKind : std::uint8_t { kReady, kCreate, kBlockingDone };
  struct Mark {
    bool valid = false;
    MarkKind kind = MarkKind::kReady;
    std::int64_t ts = 0;
    int track = 0;
    std::uint64_t g = 0;
    std::uint64_t by = 0;  // readier / parent fiber, 0: none
    std::string by_name;   // its name then (it may have exited since)
    std::uint8_t src = 0;  // TraceSource of a ready
    bool timer = false;    // a ready right after a timer fired there
  };
  struct Track {
    std::int64_t last = INT64_MIN;  // the latest timestamp used
    bool named = false;
    bool open = false;  // a fiber's slice is open
    std::uint64_t g = 0;
    std::int64_t start = 0;
    const char* start_note = nullptr;  // "start" arg, if any
    Mark in;                           // what led to the open slice
    bool timer_hint = false;           // the previous event was kTimer
  };
  struct FiberInfo {
    std::string name;
    Mark pending;  // a ready/create not yet followed by a start
    std::int64_t last_start = INT64_MIN;
  };

  int tid(int track) const { return track + 1; }
  void name_track(int track);
  void open_slice(int track, std::uint64_t g, std::int64_t ts,
                  const char* note);
  // why: the end's text; wait_reason (if not null) follows it after ": ".
  void close_slice(int track, std::int64_t end, std::string_view why,
                   std::uint64_t limit, const char* wait_reason = nullptr);
  void put_mark(const Mark& m, std::uint64_t flow);
  void hold_mark(const Mark& m, std::uint64_t limit);
  void instant(int track, std::int64_t ts, std::string_view name,
               std::string_view cat, std::string_view args_json);
  void counters_changed(std::int64_t ts);
  void write_counters(std::int64_t ts, std::uint64_t limit);

  // Records: one JSON object (or a group that must be written whole).
  void begin_record();
  bool end_record(std::uint64_t limit);  // false: over the limit, undone
  void comma();

  void append_fiber_name(std::uint64_t g);
  std::string name_of(std::uint64_t g) const;  // "" if unknown
  void append_us(std::int64_t ns);             // as microseconds, 3 decimals
  void append_ts(std::int64_t ns) { append_us(ns - c_.t0_ns); }
  void append_int(std::int64_t v);
  void append_escaped(std::string_view s);
  void append_head(std::string_view name, std::string_view cat, int track,
                   std::int64_t ts);

  Config c_;
  std::uint64_t limit_ = 0;         // while running
  std::uint64_t finish_limit_ = 0;  // for what finish writes
  std::string out_;
  std::uint64_t flushed_ = 0;
  bool first_ = true;
  std::size_t mark_ = 0;
  bool mark_first_ = true;
  bool full_ = false;
  std::uint64_t events_ = 0, dropped_limit_ = 0;
  std::uint64_t next_flow_ = 1;

  std::vector<Track> tracks_;  // [nrings] is the off-P track
  absl::flat_hash_map<std::uint64_t, FiberInfo> fibers_;

  std::int64_t runnable_ = 0, running_ = 0, blocking_ = 0;
  std::int64_t last_counter_ = INT64_MIN;
  bool counters_dirty_ = false;  // changed since written, last at dirty_ts_
  std::int64_t dirty_ts_ = 0;
};

}  // namespace goro::diag_internal

#endif  // GORO_DIAG_INTERNAL_TRACE_JSON_H_
