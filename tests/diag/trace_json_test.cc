// Copyright goro authors.
//
// TraceJson (diag/internal/trace_json.h) fed by hand: the JSON for known
// event sequences -- arrows between tracks, names in parts, damage from
// dropped events contained, the size limit, timestamps made strictly
// increasing per track, counters coalesced -- each checked with the same
// checker as the traced runs (trace_json_check.h).

#include "diag/internal/trace_json.h"

#include <string>

#include "gtest/gtest.h"
#include "runtime/internal/park.h"
#include "runtime/internal/trace.h"
#include "tests/diag/trace_json_check.h"

namespace {

using goro::diag_internal::TraceJson;
using goro::runtime_internal::TraceEvent;
using goro::runtime_internal::TraceSource;
using goro::runtime_internal::TraceStop;
using goro::runtime_internal::TraceType;
using goro::runtime_internal::WaitReason;
using goro_test::CheckTrace;
using goro_test::TraceSummary;

constexpr std::int64_t kT0 = 1'000'000'000;  // the trace's start, in ns

class Feeder {
 public:
  explicit Feeder(std::uint64_t max_bytes = 1 << 20, int nprocs = 2)
      : json_(TraceJson::Config{4242, nprocs, 2 * nprocs, kT0, max_bytes}) {}

  Feeder& Ev(int src, std::int64_t t_us, TraceType type, std::uint64_t g,
             std::uint64_t arg = 0, std::uint8_t reason = 0,
             std::uint16_t aux16 = 0, std::uint32_t aux32 = 0) {
    TraceEvent e;
    e.type = type;
    e.g = g;
    e.arg = arg;
    e.reason = reason;
    e.aux16 = aux16;
    e.aux32 = aux32;
    json_.add(src, e, kT0 + t_us * 1000);
    return *this;
  }
  Feeder& Start(int p, std::int64_t t, std::uint64_t g) {
    return Ev(p, t, TraceType::kStart, g);
  }
  Feeder& Stop(int p, std::int64_t t, std::uint64_t g, TraceStop why,
               WaitReason r = WaitReason::kNone) {
    return Ev(p, t, TraceType::kStop, g, 0, static_cast<std::uint8_t>(why),
              static_cast<std::uint16_t>(r));
  }
  Feeder& Ready(int p, std::int64_t t, std::uint64_t g, std::uint64_t by) {
    return Ev(p, t, TraceType::kReady, g, by,
              static_cast<std::uint8_t>(by != 0 ? TraceSource::kFiber
                                                : TraceSource::kScheduler));
  }
  // The kName events for g's name, as the runtime writes them.
  Feeder& Name(int p, std::int64_t t, std::uint64_t g, const std::string& n) {
    const std::size_t len = std::min<std::size_t>(n.size(), 48);
    for (std::size_t i = 0, k = 0; i < len; i += 12, ++k) {
      TraceEvent e;
      e.type = TraceType::kName;
      e.g = g;
      const std::size_t part = std::min<std::size_t>(12, len - i);
      e.reason = static_cast<std::uint8_t>(part);
      e.aux16 = static_cast<std::uint16_t>(k);
      std::memcpy(&e.arg, n.data() + i, std::min<std::size_t>(part, 8));
      if (part > 8) std::memcpy(&e.aux32, n.data() + i + 8, part - 8);
      json_.add(p, e, kT0 + t * 1000);
    }
    return *this;
  }
  std::string Finish(std::int64_t t_us, std::uint64_t dropped = 0) {
    json_.finish(kT0 + t_us * 1000, dropped);
    std::string s = json_.out();
    json_.take();
    return s;
  }
  TraceJson& json() { return json_; }

 private:
  TraceJson json_;
};

TEST(TraceJsonTest, ReadyOnOnePStartOnAnotherIsOneArrow) {
  Feeder f;
  f.Ev(TraceJson::kOffP, 0, TraceType::kInit, 0, /*runnable=*/2, 0, 0,
       /*running=*/0);
  f.Start(0, 10, 1).Name(0, 10, 1, "main");
  f.Ready(0, 20, 2, /*by=*/1);
  f.Stop(0, 30, 1, TraceStop::kBlocked, WaitReason::kChanReceive);
  f.Start(1, 40, 2).Name(1, 40, 2, "worker");
  f.Stop(1, 50, 2, TraceStop::kExit);
  const std::string text = f.Finish(60);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "") << text;
  EXPECT_EQ(s.flows, 1) << text;
  EXPECT_EQ(s.fiber_slices, 2);
  EXPECT_EQ(s.end_reasons["blocked: chan receive"], 1);
  EXPECT_EQ(s.end_reasons["exit"], 1);
  EXPECT_NE(text.find("\"name\":\"ready G2 worker\""), std::string::npos);
  EXPECT_NE(text.find("\"by\":\"G1 main\""), std::string::npos);
  EXPECT_NE(text.find("\"name\":\"G2 worker\",\"cat\":\"fiber\""),
            std::string::npos);
  EXPECT_NE(text.find("\"ts\":40.000,\"dur\":10.000"), std::string::npos);
  EXPECT_EQ(s.track_names[1], "P0");
  EXPECT_EQ(s.track_names[2], "P1");
  EXPECT_EQ(s.events, 6);  // names are parts of their events
}

TEST(TraceJsonTest, LongAndOddNamesAreCutAndEscaped) {
  Feeder f;
  // 60 bytes: cut at 48, the cut splitting nothing (ASCII) here.
  const std::string long_name(60, 'x');
  f.Start(0, 1, 7).Name(0, 1, 7, long_name);
  f.Stop(0, 2, 7, TraceStop::kYield);
  // Quotes, a backslash, a control character, a cut UTF-8 sequence.
  f.Start(0, 3, 8).Name(0, 3, 8, std::string("a\"b\\c\x01 \xc3\xa9 \xe2\x82"));
  f.Stop(0, 4, 8, TraceStop::kYield);
  const std::string text = f.Finish(5);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "") << text;
  EXPECT_NE(text.find("\"G7 " + std::string(48, 'x') + "\""),
            std::string::npos);
  EXPECT_NE(text.find("G8 a\\\"b\\\\c\\u0001 \xc3\xa9 ??"), std::string::npos)
      << text;
}

TEST(TraceJsonTest, DroppedEventsDoNotBreakTheTracks) {
  Feeder f;
  f.Start(0, 10, 1);
  f.Start(0, 20, 2);                     // 1's stop was dropped
  f.Stop(0, 30, 3, TraceStop::kYield);   // 2's stop and 3's start dropped
  f.Stop(1, 35, 4, TraceStop::kYield);   // ran since before the trace
  f.Ready(1, 36, 5, 0);                  // 5 never starts again
  f.Ready(0, 40, 6, 0);
  f.Start(1, 39, 6);                     // late: before its ready
  const std::string text = f.Finish(50);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "") << text;
  EXPECT_EQ(s.end_reasons["unknown (events dropped)"], 2) << text;
  EXPECT_EQ(s.end_reasons["yield"], 1);
  EXPECT_EQ(s.flows, 0);
  EXPECT_EQ(s.mark_names["ready"], 2);  // written without arrows
  EXPECT_NE(text.find("\"start\":\"before the trace (or not recorded)\""),
            std::string::npos);
}

TEST(TraceJsonTest, EqualTimesOnATrackBecomeStrictlyIncreasing) {
  Feeder f;
  f.Start(0, 10, 1);
  f.Ready(0, 10, 2, 1);
  f.Stop(0, 10, 1, TraceStop::kYield);
  f.Start(0, 10, 2);
  f.Stop(0, 10, 2, TraceStop::kExit);
  const std::string text = f.Finish(10);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "") << text;
  EXPECT_EQ(s.flows, 1);
  // 10 us, then one nanosecond later each.
  EXPECT_NE(text.find("\"ts\":10.000,\"dur\":0.002"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\"ts\":10.003,\"dur\":0.001"), std::string::npos)
      << text;
}

// Changes within a microsecond of the last write are folded into one
// (written at the time of the latest): at most two writes per microsecond.
TEST(TraceJsonTest, CountersAreCoalescedToAboutOnePerMicrosecond) {
  Feeder f;
  // 1000 switches 100 ns apart: 100 us of trace.
  for (int i = 0; i < 1000; ++i) {
    TraceEvent e;
    e.type = i % 2 == 0 ? TraceType::kStart : TraceType::kStop;
    e.g = 1;
    f.json().add(0, e, kT0 + 100 * i);
  }
  const std::string text = f.Finish(200);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "") << text.substr(0, 2000);
  EXPECT_GT(s.counters, 10);
  EXPECT_LE(s.counters, 202);
}

TEST(TraceJsonTest, SizeLimitStopsTheFileAndCountsTheRest) {
  constexpr std::uint64_t kMax = 64 << 10;
  Feeder f(kMax);
  for (int i = 0; i < 4000; ++i) {
    const int p = i % 2;
    f.Ready(p, 10 * i, static_cast<std::uint64_t>(i + 2), 1);
    f.Start(1 - p, 10 * i + 5, static_cast<std::uint64_t>(i + 2));
    f.Stop(1 - p, 10 * i + 8, static_cast<std::uint64_t>(i + 2),
           TraceStop::kExit);
  }
  f.Start(0, 50000, 99);  // past the limit: dropped too
  const std::string text = f.Finish(60000);
  EXPECT_LE(text.size(), kMax);
  EXPECT_GT(f.json().dropped_size_limit(), 0u);
  TraceSummary s;
  EXPECT_EQ(CheckTrace(text, &s), "");
  EXPECT_EQ(s.dropped_size_limit,
            static_cast<double>(f.json().dropped_size_limit()));
  EXPECT_GT(s.flows, 10);
}

}  // namespace
