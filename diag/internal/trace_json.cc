// Copyright goro authors.
//
// TraceJson (trace_json.h): the events' state machine and the JSON text.
// Counters: running (fibers whose slice is open), runnable (created,
// readied, yielded or preempted, or back from blocking() without a P, and
// not yet started) and blocking (inside goro::blocking()), starting from
// the kInit snapshot. They are written at most once per kCounterGap of trace
// time -- changes within it are folded into the last one, written at its
// time -- so a context-switch storm does not double the file.

#include "diag/internal/trace_json.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

#include "runtime/internal/park.h"

namespace goro::diag_internal {

using runtime_internal::TraceEvent;
using runtime_internal::TraceSource;
using runtime_internal::TraceStop;
using runtime_internal::TraceType;

namespace {

constexpr std::int64_t kCounterGap = 1000;  // ns
// Room kept for the file's end, and per track for closing its open slice
// (with the mark that led to it) when the trace stops.
constexpr std::uint64_t kTrailerReserve = 1024;
constexpr std::uint64_t kCloseReserve = 768;

std::int64_t clamp0(std::int64_t v) { return v < 0 ? 0 : v; }

const char* stop_text(std::uint8_t why) {
  switch (static_cast<TraceStop>(why)) {
    case TraceStop::kYield:
      return "yield";
    case TraceStop::kPreemptAsync:
      return "preempted (async)";
    case TraceStop::kPreemptCoop:
      return "preempted (cooperative)";
    case TraceStop::kBlocked:
      return "blocked";  // ": <wait reason>" follows
    case TraceStop::kBlocking:
      return "blocking call";
    case TraceStop::kExit:
      return "exit";
  }
  return "?";
}

// Length of the valid UTF-8 sequence at s[i], or 0 if invalid.
std::size_t utf8_len(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  std::size_t n;
  std::uint32_t cp;
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) {
    n = 2;
    cp = b & 0x1F;
  } else if ((b & 0xF0) == 0xE0) {
    n = 3;
    cp = b & 0x0F;
  } else if ((b & 0xF8) == 0xF0) {
    n = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  // Overlong forms, surrogates, beyond U+10FFFF.
  static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

}  // namespace

TraceJson::TraceJson(const Config& c) : c_(c) {
  tracks_.resize(static_cast<std::size_t>(c.nrings) + 1);
  const std::uint64_t reserve =
      kTrailerReserve + kCloseReserve * tracks_.size();
  finish_limit_ =
      c.max_bytes > kTrailerReserve ? c.max_bytes - kTrailerReserve : 0;
  limit_ = c.max_bytes > reserve ? c.max_bytes - reserve : 0;
  out_.reserve(1 << 20);
  out_ += "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  const int offp = c.nrings;
  begin_record();
  out_ += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":";
  append_int(c.pid);
  out_ += ",\"tid\":";
  append_int(tid(offp));
  out_ += ",\"args\":{\"name\":\"goro (pid ";
  append_int(c.pid);
  out_ += ")\"}}";
  for (int i = 0; i < c.nprocs; ++i) name_track(i);
  name_track(offp);
}

void TraceJson::name_track(int track) {
  Track& t = tracks_[static_cast<std::size_t>(track)];
  t.named = true;
  std::string name;
  if (track == c_.nrings) {
    name = "off P (threads, sysmon, blocking calls)";
  } else if (track < c_.nprocs) {
    name = "P" + std::to_string(track);
  } else {
    name = "P" + std::to_string(track) + " (spare for P" +
           std::to_string(track - c_.nprocs) + ")";
  }
  // Metadata is not held to the size limit: it is what makes the rest
  // readable (two records per track).
  begin_record();
  out_ += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(track));
  out_ += ",\"args\":{\"name\":\"";
  out_ += name;
  out_ += "\"}}";
  begin_record();
  out_ += "{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(track));
  out_ += ",\"args\":{\"sort_index\":";
  append_int(track);
  out_ += "}}";
}

// --- Records -----------------------------------------------------------

void TraceJson::comma() {
  if (!first_) out_ += ",\n";
  first_ = false;
}

void TraceJson::begin_record() {
  mark_ = out_.size();
  mark_first_ = first_;
  comma();
}

bool TraceJson::end_record(std::uint64_t limit) {
  if (flushed_ + out_.size() <= limit) return true;
  out_.resize(mark_);
  first_ = mark_first_;
  full_ = true;
  return false;
}

void TraceJson::append_int(std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void TraceJson::append_us(std::int64_t ns) {
  std::int64_t rel = ns;
  if (rel < 0) {
    out_ += '-';
    rel = -rel;
  }
  append_int(rel / 1000);
  char frac[4] = {'.', static_cast<char>('0' + rel % 1000 / 100),
                  static_cast<char>('0' + rel % 100 / 10),
                  static_cast<char>('0' + rel % 10)};
  out_.append(frac, 4);
}

void TraceJson::append_escaped(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b == '"' || b == '\\') {
      out_ += '\\';
      out_ += static_cast<char>(b);
      ++i;
    } else if (b < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out_ += "\\u00";
      out_ += kHex[b >> 4];
      out_ += kHex[b & 15];
      ++i;
    } else if (b < 0x80) {
      out_ += static_cast<char>(b);
      ++i;
    } else if (const std::size_t n = utf8_len(s, i)) {
      out_.append(s.data() + i, n);
      i += n;
    } else {
      out_ += '?';  // not UTF-8 (or a character cut at 48 bytes)
      ++i;
    }
  }
}

std::string TraceJson::name_of(std::uint64_t g) const {
  if (g == 0) return std::string();
  auto it = fibers_.find(g);
  return it != fibers_.end() ? it->second.name : std::string();
}

void TraceJson::append_fiber_name(std::uint64_t g) {
  out_ += 'G';
  append_int(static_cast<std::int64_t>(g));
  auto it = fibers_.find(g);
  if (it != fibers_.end() && !it->second.name.empty()) {
    out_ += ' ';
    append_escaped(it->second.name);
  }
}

void TraceJson::append_head(std::string_view name, std::string_view cat,
                            int track, std::int64_t ts) {
  out_ += "{\"name\":\"";
  out_ += name;
  out_ += "\",\"cat\":\"";
  out_ += cat;
  out_ += "\",\"ph\":\"X\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(track));
  out_ += ",\"ts\":";
  append_ts(ts);
}

void TraceJson::instant(int track, std::int64_t ts, std::string_view name,
                        std::string_view cat, std::string_view args_json) {
  begin_record();
  append_head(name, cat, track, ts);
  out_ += ",\"dur\":0,\"args\":{";
  out_ += args_json;
  out_ += "}}";
  end_record(limit_);
}

// --- Slices and marks --------------------------------------------------

// Writes the mark (no comma before it): the caller checks the record.
void TraceJson::put_mark(const Mark& m, std::uint64_t flow) {
  const char* kind = m.kind == MarkKind::kReady    ? "ready"
                     : m.kind == MarkKind::kCreate ? "create"
                                                   : "blocking done";
  out_ += "{\"name\":\"";
  out_ += kind;
  out_ += ' ';
  append_fiber_name(m.g);
  out_ += "\",\"cat\":\"";
  out_ += m.kind == MarkKind::kReady    ? "ready"
          : m.kind == MarkKind::kCreate ? "create"
                                        : "blocking";
  out_ += "\",\"ph\":\"X\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(m.track));
  out_ += ",\"ts\":";
  append_ts(m.ts);
  out_ += ",\"dur\":0,\"args\":{\"fiber\":";
  append_int(static_cast<std::int64_t>(m.g));
  if (m.kind != MarkKind::kBlockingDone) {
    out_ += m.kind == MarkKind::kCreate ? ",\"parent\":\"" : ",\"by\":\"";
    if (m.by != 0) {
      out_ += 'G';
      append_int(static_cast<std::int64_t>(m.by));
      if (!m.by_name.empty()) {
        out_ += ' ';
        append_escaped(m.by_name);
      }
      if (m.kind == MarkKind::kReady &&
          m.src == static_cast<std::uint8_t>(TraceSource::kThread)) {
        out_ += " (in a blocking call)";
      }
    } else if (m.kind == MarkKind::kCreate) {
      out_ += "a thread";
    } else {
      switch (static_cast<TraceSource>(m.src)) {
        case TraceSource::kScheduler:
          out_ += m.timer ? "timer" : "scheduler";
          break;
        case TraceSource::kNetpoll:
          out_ += "netpoll";
          break;
        case TraceSource::kThread:
          out_ += "a thread";
          break;
        case TraceSource::kFiber:
          out_ += "?";
          break;
      }
    }
    out_ += '"';
  }
  out_ += '}';
  if (flow != 0) {
    out_ += ",\"bind_id\":";
    append_int(static_cast<std::int64_t>(flow));
    out_ += ",\"flow_out\":true";
  }
  out_ += '}';
}

// A mark whose fiber did not start again: written alone, without an arrow.
void TraceJson::hold_mark(const Mark& m, std::uint64_t limit) {
  if (!m.valid) return;
  begin_record();
  put_mark(m, 0);
  end_record(limit);
}

void TraceJson::open_slice(int track, std::uint64_t g, std::int64_t ts,
                           const char* note) {
  Track& t = tracks_[static_cast<std::size_t>(track)];
  t.open = true;
  t.g = g;
  t.start = ts;
  t.start_note = note;
  t.in = Mark{};
  FiberInfo& f = fibers_[g];
  if (f.pending.valid) {
    // Strictly earlier: a viewer that meets the arrow's end before its
    // start (equal times, sorted either way) drops the arrow.
    if (f.pending.ts < ts) {
      t.in = f.pending;
    } else {
      hold_mark(f.pending, limit_);
    }
    f.pending.valid = false;
  }
  f.last_start = ts;
  ++running_;
}

void TraceJson::close_slice(int track, std::int64_t end, std::string_view why,
                            std::uint64_t limit, const char* wait_reason) {
  Track& t = tracks_[static_cast<std::size_t>(track)];
  t.open = false;
  running_ = clamp0(running_ - 1);
  const std::uint64_t flow = t.in.valid ? next_flow_++ : 0;
  begin_record();
  out_ += "{\"name\":\"";
  append_fiber_name(t.g);
  out_ += "\",\"cat\":\"fiber\",\"ph\":\"X\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(track));
  out_ += ",\"ts\":";
  append_ts(t.start);
  out_ += ",\"dur\":";
  append_us(end - t.start);
  out_ += ",\"args\":{\"fiber\":";
  append_int(static_cast<std::int64_t>(t.g));
  out_ += ",\"end\":\"";
  out_ += why;
  if (wait_reason != nullptr) {
    out_ += ": ";
    out_ += wait_reason;
  }
  out_ += '"';
  if (t.start_note != nullptr) {
    out_ += ",\"start\":\"";
    out_ += t.start_note;
    out_ += '"';
  }
  out_ += '}';
  if (flow != 0) {
    out_ += ",\"bind_id\":";
    append_int(static_cast<std::int64_t>(flow));
    out_ += ",\"flow_in\":true";
  }
  out_ += '}';
  if (flow != 0) {
    out_ += ",\n";
    put_mark(t.in, flow);
  }
  end_record(limit);
  t.in = Mark{};
}

// --- Counters ------------------------------------------------------------

void TraceJson::write_counters(std::int64_t ts, std::uint64_t limit) {
  if (last_counter_ != INT64_MIN && ts <= last_counter_) {
    ts = last_counter_ + 1;  // a late event: keep the series in order
  }
  begin_record();
  out_ += "{\"name\":\"Fibers\",\"ph\":\"C\",\"pid\":";
  append_int(c_.pid);
  out_ += ",\"tid\":";
  append_int(tid(c_.nrings));
  out_ += ",\"ts\":";
  append_ts(ts);
  out_ += ",\"args\":{\"running\":";
  append_int(running_);
  out_ += ",\"runnable\":";
  append_int(runnable_);
  out_ += ",\"blocking\":";
  append_int(blocking_);
  out_ += "}}";
  if (end_record(limit)) {
    last_counter_ = ts;
    counters_dirty_ = false;
  }
}

void TraceJson::counters_changed(std::int64_t ts) {
  if (last_counter_ == INT64_MIN || ts >= last_counter_ + kCounterGap) {
    write_counters(ts, limit_);
  } else {
    // Written with the next event at least kCounterGap after the last
    // write, at the time of this (latest) change, where it became true.
    counters_dirty_ = true;
    dirty_ts_ = ts;
  }
}

// --- Events --------------------------------------------------------------

void TraceJson::add(int source, const TraceEvent& e, std::int64_t ts) {
  const int track = source == kOffP ? c_.nrings : source;
  if (track < 0 || track > c_.nrings) return;
  Track& t = tracks_[static_cast<std::size_t>(track)];
  if (e.type == TraceType::kName) {
    // Part of the name of the fiber whose kCreate/kStart came just before.
    std::string& name = fibers_[e.g].name;
    if (e.aux16 == 0) name.clear();
    char bytes[12];
    std::memcpy(bytes, &e.arg, 8);
    std::memcpy(bytes + 8, &e.aux32, 4);
    name.append(bytes, std::min<std::size_t>(e.reason, sizeof(bytes)));
    return;
  }
  if (full_) {
    ++dropped_limit_;
    return;
  }
  ++events_;
  const std::int64_t prev = t.last;
  if (prev != INT64_MIN && ts <= prev) ts = prev + 1;
  t.last = ts;
  if (!t.named) name_track(track);
  if (counters_dirty_ && ts >= last_counter_ + kCounterGap) {
    write_counters(dirty_ts_, limit_);
  }
  const bool timer_hint = t.timer_hint;
  t.timer_hint = false;
  const bool on_p = track != c_.nrings;

  switch (e.type) {
    case TraceType::kNone:
    case TraceType::kName:
      break;
    case TraceType::kInit:
      runnable_ = static_cast<std::int64_t>(e.arg);
      running_ = e.aux32;
      blocking_ = e.aux16;
      counters_changed(ts);
      break;
    case TraceType::kCreate: {
      FiberInfo& f = fibers_[e.g];
      f.name.clear();  // the kName events that follow set it
      hold_mark(f.pending, limit_);
      f.pending = Mark{true,  MarkKind::kCreate, ts, track, e.g,
                       e.arg, name_of(e.arg),    0,  false};
      ++runnable_;
      counters_changed(ts);
      break;
    }
    case TraceType::kStart:
      if (!on_p) break;
      if (t.open) {
        close_slice(track, ts - 1 > t.start ? ts - 1 : t.start,
                    "unknown (events dropped)", limit_);
      }
      open_slice(track, e.g, ts, nullptr);
      runnable_ = clamp0(runnable_ - 1);
      counters_changed(ts);
      break;
    case TraceType::kStop: {
      if (!on_p) break;
      if (t.open && t.g != e.g) {
        // e.g's start was dropped: end the slice we have; none for e.g.
        close_slice(track, ts, "unknown (events dropped)", limit_);
      } else {
        if (!t.open) {
          // Running since before the trace (or its start was dropped).
          const std::int64_t start = prev == INT64_MIN ? std::min(c_.t0_ns, ts)
                                                       : std::min(prev + 1, ts);
          open_slice(track, e.g, start, "before the trace (or not recorded)");
          --running_;  // counted in the snapshot, or never
        }
        close_slice(
            track, ts, stop_text(e.reason), limit_,
            static_cast<TraceStop>(e.reason) == TraceStop::kBlocked
                ? runtime_internal::wait_reason_name(
                      static_cast<runtime_internal::WaitReason>(e.aux16))
                : nullptr);
      }
      switch (static_cast<TraceStop>(e.reason)) {
        case TraceStop::kYield:
        case TraceStop::kPreemptAsync:
        case TraceStop::kPreemptCoop:
          ++runnable_;
          break;
        case TraceStop::kBlocking:
          ++blocking_;
          break;
        case TraceStop::kExit:
          fibers_.erase(e.g);
          break;
        case TraceStop::kBlocked:
          break;
      }
      counters_changed(ts);
      break;
    }
    case TraceType::kReady: {
      Mark m{true,  MarkKind::kReady, ts,       track, e.g,
             e.arg, name_of(e.arg),   e.reason, false};
      m.timer = timer_hint &&
                e.reason == static_cast<std::uint8_t>(TraceSource::kScheduler);
      FiberInfo& f = fibers_[e.g];
      hold_mark(f.pending, limit_);
      f.pending.valid = false;
      if (f.last_start >= ts) {
        hold_mark(m, limit_);  // late: the start it led to is written
      } else {
        f.pending = m;
      }
      ++runnable_;
      counters_changed(ts);
      break;
    }
    case TraceType::kSteal: {
      std::string args = "\"fiber\":" + std::to_string(e.g) + ",\"from\":\"P" +
                         std::to_string(e.aux32) +
                         "\",\"fibers\":" + std::to_string(e.aux16);
      instant(track, ts, "steal", "steal", args);
      break;
    }
    case TraceType::kBlockingDone:
      blocking_ = clamp0(blocking_ - 1);
      if (on_p && e.reason == 1) {
        if (t.open) {
          close_slice(track, ts - 1 > t.start ? ts - 1 : t.start,
                      "unknown (events dropped)", limit_);
        }
        open_slice(track, e.g, ts, "after blocking call");
      } else {
        FiberInfo& f = fibers_[e.g];
        hold_mark(f.pending, limit_);
        f.pending = Mark{
            true, MarkKind::kBlockingDone, ts, track, e.g, 0, "", 0, false};
        ++runnable_;
      }
      counters_changed(ts);
      break;
    case TraceType::kTimer:
      instant(track, ts, "timer", "timer", "");
      t.timer_hint = true;
      break;
    case TraceType::kNetpoll:
      instant(track, ts, "netpoll", "netpoll",
              "\"ready\":" + std::to_string(e.aux32));
      break;
  }
}

void TraceJson::finish(std::int64_t end_ns, std::uint64_t dropped_buffer_full) {
  for (std::size_t i = 0; i < tracks_.size(); ++i) {
    Track& t = tracks_[i];
    if (!t.open) continue;
    const std::int64_t end = std::max(end_ns, t.last + 1);
    close_slice(static_cast<int>(i), end, "trace end", finish_limit_);
  }
  for (auto& [g, f] : fibers_) {
    hold_mark(f.pending, finish_limit_);
    f.pending.valid = false;
  }
  if (counters_dirty_) write_counters(dirty_ts_, finish_limit_);
  out_ += "\n],\n\"otherData\":{\"version\":\"goro trace 1\",\"procs\":";
  append_int(c_.nprocs);
  out_ += ",\"events\":";
  append_int(static_cast<std::int64_t>(events_));
  out_ += ",\"dropped\":";
  append_int(static_cast<std::int64_t>(dropped_buffer_full + dropped_limit_));
  out_ += ",\"dropped_buffer_full\":";
  append_int(static_cast<std::int64_t>(dropped_buffer_full));
  out_ += ",\"dropped_size_limit\":";
  append_int(static_cast<std::int64_t>(dropped_limit_));
  out_ += ",\"max_bytes\":";
  append_int(static_cast<std::int64_t>(c_.max_bytes));
  out_ += "}}\n";
}

}  // namespace goro::diag_internal
