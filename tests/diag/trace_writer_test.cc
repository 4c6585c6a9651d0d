// Copyright goro authors.
//
// The execution trace's rings and writer without a runtime: a TraceRing
// that is full drops and counts and never overwrites; the writer merges
// its rings in time order (a fiber created on one P and started on another
// gets its arrow whichever ring is drained first) and finishes a file the
// checker accepts.

#include "diag/internal/trace_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/internal/futex.h"
#include "runtime/internal/trace.h"
#include "tests/diag/trace_json_check.h"

namespace {

using goro::diag_internal::TraceCounts;
using goro::diag_internal::TraceWriter;
using goro::runtime_internal::TraceEvent;
using goro::runtime_internal::TraceRing;
using goro::runtime_internal::TraceSession;
using goro::runtime_internal::TraceStop;
using goro::runtime_internal::TraceType;

TraceEvent Ev(std::uint64_t tsc, TraceType type, std::uint64_t g,
              std::uint64_t arg = 0, std::uint8_t reason = 0) {
  TraceEvent e;
  e.tsc = tsc;
  e.type = type;
  e.g = g;
  e.arg = arg;
  e.reason = reason;
  return e;
}

bool Put(TraceRing* r, const TraceEvent& e) {
  std::uint64_t pos;
  if (!r->reserve(1, &pos)) {
    r->drop(1);
    return false;
  }
  r->at(pos) = e;
  r->commit(pos + 1);
  return true;
}

TEST(TraceRingTest, FullRingDropsAndCountsAndNeverOverwrites) {
  std::vector<TraceEvent> slots(16);
  TraceRing r;
  r.init(slots.data(), 16);
  for (std::uint64_t i = 0; i < 16; ++i) {
    EXPECT_TRUE(Put(&r, Ev(i, TraceType::kTimer, i)));
  }
  EXPECT_FALSE(Put(&r, Ev(16, TraceType::kTimer, 16)));
  EXPECT_FALSE(Put(&r, Ev(17, TraceType::kTimer, 17)));
  EXPECT_EQ(r.dropped(), 2u);
  std::uint64_t from;
  std::uint64_t end = r.readable(&from);
  ASSERT_EQ(end - from, 16u);
  for (std::uint64_t p = from; p != end; ++p) {
    EXPECT_EQ(r.at_consumer(p).g, p);  // the first 16, intact
  }
  r.consumed(from + 4);  // the consumer frees four slots
  for (std::uint64_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(Put(&r, Ev(20 + i, TraceType::kTimer, 20 + i)));
  }
  EXPECT_FALSE(Put(&r, Ev(30, TraceType::kTimer, 30)));
  end = r.readable(&from);
  EXPECT_EQ(end - from, 16u);
  EXPECT_EQ(r.at_consumer(end - 1).g, 23u);
  EXPECT_EQ(r.dropped(), 3u);
}

TEST(TraceWriterTest, MergesRingsInTimeOrder) {
  constexpr std::uint32_t kCap = 64;
  std::vector<TraceEvent> storage(3 * kCap);
  TraceSession s;
  s.seq = 1;
  s.nrings = 2;
  s.rings = std::make_unique<TraceRing[]>(2);
  s.rings[0].init(storage.data(), kCap);
  s.rings[1].init(storage.data() + kCap, kCap);
  s.offp.init(storage.data() + 2 * kCap, kCap);

  const std::int64_t t0_ns = goro::runtime_internal::mono_now_ns();
  const std::uint64_t base = goro::runtime_internal::trace_now();
  Put(&s.offp, Ev(base, TraceType::kInit, 0));
  // Fiber 5 is created on P1 and runs on P0; fiber 6 is readied on P0 by 5
  // and runs on P1. Ring 0 holds the later half of the first pair, ring 1
  // the later half of the second: merged ring by ring, one arrow is lost
  // whichever ring goes first.
  Put(&s.rings[1], Ev(base + 1000, TraceType::kCreate, 5, /*parent=*/0));
  Put(&s.rings[0], Ev(base + 2000, TraceType::kStart, 5));
  Put(&s.rings[0], Ev(base + 2500, TraceType::kReady, 6, /*by=*/5));
  Put(&s.rings[0], Ev(base + 3000, TraceType::kStop, 5, 0,
                      static_cast<std::uint8_t>(TraceStop::kExit)));
  Put(&s.rings[1], Ev(base + 4000, TraceType::kStart, 6));
  Put(&s.rings[1], Ev(base + 5000, TraceType::kStop, 6, 0,
                      static_cast<std::uint8_t>(TraceStop::kExit)));

  const std::string path = testing::TempDir() + "/trace_writer_test." +
                           std::to_string(::getpid()) + ".json";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  TraceWriter::Config c;
  c.fd = fd;
  c.pid = 1;
  c.nprocs = 2;
  c.max_bytes = 1 << 20;
  c.t0_tsc = base;
  c.t0_ns = t0_ns;
  absl::StatusOr<TraceCounts> counts;
  {
    TraceWriter w(&s, c);
    w.start();
    counts = w.finish();
  }
  ::close(fd);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->events, 7u);
  EXPECT_EQ(counts->dropped_buffer_full, 0u);
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  goro_test::TraceSummary sum;
  EXPECT_EQ(goro_test::CheckTrace(text.str(), &sum), "") << text.str();
  EXPECT_EQ(sum.flows, 2) << text.str();
  EXPECT_EQ(sum.fiber_slices, 2);
  EXPECT_EQ(counts->bytes, text.str().size());
  ::unlink(path.c_str());
}

}  // namespace
