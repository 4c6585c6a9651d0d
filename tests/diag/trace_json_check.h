// Copyright goro authors.
//
// For the execution-trace tests: a small JSON reader (recursive descent, the
// whole of RFC 8259 except that numbers are read as doubles) and a checker
// of goro's trace files -- what Perfetto and Chromium's trace viewer need
// and what diag/trace.h promises:
//   * the file is one JSON object with "displayTimeUnit" and a
//     "traceEvents" array, and "otherData" with the counts;
//   * every event has "ph"; every "X" has numeric "ts" and "dur" >= 0,
//     "pid" and "tid"; metadata names the process and every track used;
//   * per track, the fiber slices (cat "fiber") appear in the file in time
//     order and do not overlap, and every other "X" on it lies inside one
//     of them or outside all (nesting, never a partial overlap);
//   * every flow arrow has both ends: each bind_id is on exactly one event
//     with flow_out and one with flow_in, the out end not later than the
//     in end, the in end a fiber slice;
//   * a "C" counter track "Fibers" with running/runnable/blocking >= 0.

#ifndef GORO_TESTS_DIAG_TRACE_JSON_CHECK_H_
#define GORO_TESTS_DIAG_TRACE_JSON_CHECK_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace goro_test {

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;

  // The member `key` of an object, or null.
  const Json* get(const std::string& key) const;
  bool is_number() const { return type == Type::kNumber; }
  bool is_string() const { return type == Type::kString; }
};

// Parses `text` (the whole of it must be one JSON value). Returns false and
// an error with the offset otherwise.
bool ParseJson(const std::string& text, Json* out, std::string* error);

// What CheckTrace found, for the tests' own expectations.
struct TraceSummary {
  int fiber_slices = 0;
  int marks = 0;    // zero-length X events
  int flows = 0;    // complete arrows
  int counters = 0;
  std::map<std::string, int> end_reasons;  // args.end of fiber slices
  std::map<std::string, int> mark_names;   // "ready", "create", "steal", ...
  std::map<std::string, int> marks_with_arrow;  // those that start an arrow
  std::vector<std::string> slice_names;
  std::map<int, std::string> track_names;  // tid -> thread_name
  double events = -1, dropped = -1, dropped_buffer_full = -1,
         dropped_size_limit = -1;  // otherData
};

// Checks a trace file's text (see the top of this file). Returns the
// problems found, one per line (empty: none), and fills *summary.
std::string CheckTrace(const std::string& text, TraceSummary* summary);

}  // namespace goro_test

#endif  // GORO_TESTS_DIAG_TRACE_JSON_CHECK_H_
