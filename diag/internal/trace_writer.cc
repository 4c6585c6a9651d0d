// Copyright goro authors.
//
// TraceWriter (trace_writer.h): the drain, the merge and the file.

#include "diag/internal/trace_writer.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <queue>

#include "runtime/internal/futex.h"
#include "runtime/internal/scheduler.h"

namespace goro::diag_internal {

using runtime_internal::TraceEvent;
using runtime_internal::TraceRing;

namespace {

constexpr std::int64_t kPeriodNs = 5'000'000;
constexpr std::int64_t kHoldBackNs = 2'000'000;
// Pairs kept for converting late events (the horizon's and a few older).
constexpr std::size_t kKeepPairs = 8;
// The JSON is written in pieces of about this size.
constexpr std::size_t kFlushBytes = std::size_t{1} << 20;

}  // namespace

TraceWriter::TraceWriter(runtime_internal::TraceSession* s, const Config& c)
    : s_(s),
      c_(c),
      json_(
          TraceJson::Config{c.pid, c.nprocs, s->nrings, c.t0_ns, c.max_bytes}) {
  staged_.resize(static_cast<std::size_t>(s->nrings) + 1);
  calib_.emplace_back(c.t0_tsc, c.t0_ns);
}

TraceWriter::~TraceWriter() {
  if (thread_.joinable()) {
    stop_.store(true, std::memory_order_release);
    s_->wake.wake();
    thread_.join();
  }
}

void TraceWriter::start() {
  thread_ = std::thread([this] { main(); });
}

absl::StatusOr<TraceCounts> TraceWriter::finish() {
  stop_.store(true, std::memory_order_release);
  s_->wake.wake();
  thread_.join();
  if (!status_.ok()) return status_;
  TraceCounts r;
  r.events = json_.events();
  r.dropped_buffer_full = dropped_buffer_full_;
  r.dropped_size_limit = json_.dropped_size_limit();
  r.bytes = json_.bytes();
  return r;
}

void TraceWriter::main() {
  // goro's own thread: it never wakes a fiber (deadlock detection).
  runtime_internal::own_thread_register_for_life();
  pthread_setname_np(pthread_self(), "goro-trace");
  for (;;) {
    // acquire: the stopper's quiescence (trace.h, T2) happened before.
    const bool last = stop_.load(std::memory_order_acquire);
    s_->wake.clear();  // before draining: a wake-up during it is kept
    round(last);
    if (last) break;
    s_->wake.sleep(runtime_internal::mono_now_ns() + kPeriodNs);
  }
  std::uint64_t dropped = s_->offp.dropped();
  for (int i = 0; i < s_->nrings; ++i) dropped += s_->rings[i].dropped();
  dropped_buffer_full_ = dropped;
  json_.finish(calib_.back().second, dropped);
  flush();
}

std::int64_t TraceWriter::to_ns(std::uint64_t tsc) {
  // Events come mostly in order: most fall in the segment of the last one.
  if (tsc >= seg_lo_ && tsc < seg_hi_) {
    return seg_ns_ + static_cast<std::int64_t>(
                         static_cast<double>(tsc - seg_lo_) * seg_scale_);
  }
  // The last pair at or before tsc; the segment from it to the next (the
  // first or last segment when tsc is outside them).
  auto it = std::upper_bound(
      calib_.begin(), calib_.end(), tsc,
      [](std::uint64_t v, const auto& p) { return v < p.first; });
  std::size_t i = it == calib_.begin() ? 0 : (it - calib_.begin()) - 1;
  if (i + 1 >= calib_.size()) i = calib_.size() >= 2 ? calib_.size() - 2 : 0;
  const auto& a = calib_[i];
  if (i + 1 >= calib_.size() || calib_[i + 1].first == a.first) {
    return a.second;  // one pair: nothing to scale by (not reached)
  }
  const auto& b = calib_[i + 1];
  const double ns_per_tick = static_cast<double>(b.second - a.second) /
                             static_cast<double>(b.first - a.first);
  if (tsc >= a.first && tsc < b.first) {
    seg_lo_ = a.first;
    seg_hi_ = b.first;
    seg_ns_ = a.second;
    seg_scale_ = ns_per_tick;
  }
  const double d =
      static_cast<double>(static_cast<std::int64_t>(tsc - a.first));
  return a.second + static_cast<std::int64_t>(d * ns_per_tick);
}

void TraceWriter::round(bool final) {
  const std::int64_t now_ns = runtime_internal::mono_now_ns();
  const std::uint64_t now_tsc = runtime_internal::trace_now();
  if (now_tsc > calib_.back().first && now_ns > calib_.back().second) {
    calib_.emplace_back(now_tsc, now_ns);
  }
  seg_lo_ = 1;  // the last segment may end later now: forget it
  seg_hi_ = 0;
  // Copy out what each ring holds, freeing it for its producer.
  for (int i = 0; i <= s_->nrings; ++i) {
    TraceRing& r = i < s_->nrings ? s_->rings[i] : s_->offp;
    std::uint64_t from;
    const std::uint64_t end = r.readable(&from);
    auto& q = staged_[static_cast<std::size_t>(i)];
    for (std::uint64_t pos = from; pos != end; ++pos) {
      q.push_back(r.at_consumer(pos));
    }
    r.consumed(end);
  }
  // The horizon: the newest pair at least kHoldBackNs old.
  std::uint64_t horizon = 0;
  std::size_t horizon_at = 0;
  if (final) {
    horizon = UINT64_MAX;
    horizon_at = calib_.size() - 1;
  } else {
    for (std::size_t k = calib_.size(); k-- > 0;) {
      if (calib_[k].second <= now_ns - kHoldBackNs) {
        horizon = calib_[k].first;
        horizon_at = k;
        break;
      }
    }
  }
  // Merge the rings' fronts older than the horizon, oldest first.
  using Head = std::pair<std::uint64_t, int>;  // (tsc, ring)
  std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heads;
  for (std::size_t i = 0; i < staged_.size(); ++i) {
    if (!staged_[i].empty() && staged_[i].front().tsc <= horizon) {
      heads.emplace(staged_[i].front().tsc, static_cast<int>(i));
    }
  }
  while (!heads.empty()) {
    const int i = heads.top().second;
    heads.pop();
    auto& q = staged_[static_cast<std::size_t>(i)];
    const TraceEvent e = q.front();
    q.pop_front();
    json_.add(i == s_->nrings ? TraceJson::kOffP : i, e, to_ns(e.tsc));
    if (!q.empty() && q.front().tsc <= horizon) {
      heads.emplace(q.front().tsc, i);
    }
    if (json_.out().size() >= kFlushBytes) flush();
  }
  flush();
  // Keep the pairs a late event may still need.
  if (!final && horizon_at > kKeepPairs) {
    calib_.erase(calib_.begin(), calib_.begin() + static_cast<std::ptrdiff_t>(
                                                      horizon_at - kKeepPairs));
  }
}

void TraceWriter::flush() {
  const std::string& out = json_.out();
  std::size_t done = 0;
  while (status_.ok() && done < out.size()) {
    const ssize_t n = ::write(c_.fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      status_ = absl::ErrnoToStatus(errno, "goro::trace: writing the trace");
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  json_.take();
}

}  // namespace goro::diag_internal
