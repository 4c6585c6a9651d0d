// Copyright goro authors.
//
// The execution trace (diag/trace.h): a traced run of a program with
// channels, a Mutex, sleep, blocking() and a spinner that only preemption
// stops, parsed and checked (tests/diag/trace_json_check.h: well-formed,
// slices per track in order and not overlapping, every arrow with both
// ends, counters); drops counted when the buffers are tiny or the file
// reaches its size limit; the errors of start and stop; GORO_TRACE.

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"
#include "tests/diag/trace_json_check.h"

namespace {

using namespace std::chrono_literals;
using goro_test::CheckTrace;
using goro_test::TraceSummary;

std::string TempPath(const std::string& name) {
  return testing::TempDir() + "/" + name + "." + std::to_string(::getpid()) +
         ".json";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size)
                                        : 0;
}

bool HasSliceNamed(const TraceSummary& s, const std::string& suffix) {
  for (const std::string& n : s.slice_names) {
    if (n.size() >= suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return true;
    }
  }
  return false;
}

// Spinners that only preemption can stop: plain loops on an atomic flag.
// Under ThreadSanitizer there is no asynchronous preemption, so one spinner
// only (it keeps one P; the other P runs the rest).
constexpr int kSpinners = goro_test::kTsan ? 1 : 3;

// The traced program: channels, a Mutex, sleep, blocking(), spinners.
void Workload() {
  goro_test::FiberGroup group;
  // Channels: a producer and a consumer, by name.
  goro::Chan<int> ch(0);
  goro::SpawnOptions consumer;
  consumer.name = "consumer";
  goro::go(consumer, [ch]() mutable {
    while (ch.recv()) {
    }
  });
  group.go([ch]() mutable {
    for (int i = 0; i < 200; ++i) ch.send(i);
    ch.close();
  });
  // A Mutex, contended: the holder sleeps inside, so the others block.
  goro::Mutex mu;
  int counter = 0;
  for (int w = 0; w < 4; ++w) {
    group.go([&] {
      for (int i = 0; i < 5; ++i) {
        std::lock_guard<goro::Mutex> l(mu);
        ++counter;
        goro::sleep_for(100us);
      }
    });
  }
  // Yields that switch: the partner waits in this P's runnext.
  std::atomic<bool> partner_done{false};
  group.go([&] {
    for (int i = 0; i < 100; ++i) goro::yield();
    partner_done = true;
  });
  for (int i = 0; i < 100 || !partner_done; ++i) goro::yield();
  // Sleep (timers), and a call that blocks the thread.
  group.go([] {
    for (int i = 0; i < 5; ++i) goro::sleep_for(1ms);
  });
  group.go([] { goro::blocking([] { ::usleep(2000); }); });
  // Spinners.
  std::atomic<bool> stop{false};
  for (int i = 0; i < kSpinners; ++i) {
    group.go([&stop] {
      volatile std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) n = n + 1;
    });
  }
  // 30 ms, and on (up to 500 ms) until a spinner has been preempted
  // asynchronously: on a loaded machine sysmon may not get a CPU in time
  // (CI run 18 saw none in 30 ms). Under TSan there is none to wait for.
  const std::uint64_t async0 = goro::stats().preemptions_async;
  for (int i = 0; i < 3 || (!goro_test::kTsan && i < 50 &&
                            goro::stats().preemptions_async == async0);
       ++i) {
    goro::sleep_for(10ms);
  }
  stop.store(true);
  group.wait();
  EXPECT_EQ(counter, 20);
}

goro::Options TracedOptions() {
  goro::Options o = goro_test::Procs(2);
  o.time_slice = 1ms;  // GORO_TIMESLICE overrides it
  return o;
}

TEST(TraceTest, TracedRunIsWellFormedAndShowsEveryKindOfEvent) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_full");
  absl::StatusOr<goro::trace::Result> result;
  goro::run(TracedOptions(), [&] {
    ASSERT_TRUE(goro::trace::start(path).ok());
    EXPECT_TRUE(goro::trace::active());
    Workload();
    result = goro::trace::stop();
    EXPECT_FALSE(goro::trace::active());
  });
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string text = ReadFile(path);
  EXPECT_EQ(result->bytes, text.size());
  TraceSummary sum;
  const std::string problems = CheckTrace(text, &sum);
  EXPECT_EQ(problems, "");

  EXPECT_GT(result->events, 500u);
  EXPECT_EQ(sum.events, static_cast<double>(result->events));
  EXPECT_EQ(sum.dropped, static_cast<double>(result->dropped));
  EXPECT_EQ(result->dropped,
            result->dropped_buffer_full + result->dropped_size_limit);
  EXPECT_EQ(sum.track_names[1], "P0");
  EXPECT_EQ(sum.track_names[2], "P1");

  // Why slices ended: every kind the workload causes.
  for (const char* why : {"blocked: chan receive", "blocked: mutex lock",
                          "blocked: sleep", "blocking call", "exit", "yield"}) {
    EXPECT_GT(sum.end_reasons[why], 0) << why;
  }
  if (!goro_test::kTsan) {
    EXPECT_GT(sum.end_reasons["preempted (async)"], 0);
  }
  EXPECT_GT(sum.mark_names["ready"], 0);
  EXPECT_GT(sum.mark_names["create"], 0);
  // Every fiber the workload created ran (the trace merges the Ps' events
  // in time order, so each create is met before the start it leads to):
  // every create mark starts an arrow -- unless events were lost.
  if (result->dropped == 0) {
    EXPECT_EQ(sum.marks_with_arrow["create"], sum.mark_names["create"]);
  }
  EXPECT_GT(sum.mark_names["timer"], 0);
  EXPECT_GT(sum.flows, 10);
  EXPECT_GT(sum.counters, 0);
  EXPECT_TRUE(HasSliceNamed(sum, " consumer"));
  ::unlink(path.c_str());
}

// Every slice's end reason and every mark in one place: how a started
// fiber's slice after blocking() looks, and the main fiber's name.
TEST(TraceTest, BlockingCallEndsTheSliceAndTheNextOneSaysWhy) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_blocking");
  goro::run(goro_test::Procs(1), [&] {
    ASSERT_TRUE(goro::trace::start(path).ok());
    goro::blocking([] { ::usleep(1000); });
    ASSERT_TRUE(goro::trace::stop().ok());
  });
  const std::string text = ReadFile(path);
  TraceSummary sum;
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_GT(sum.end_reasons["blocking call"], 0);
  // The fiber comes back on its P (a slice that starts "after blocking
  // call") -- or, if another M held the P at that instant (a spinning M, the
  // poller; seen on a loaded machine), off a P: a "blocking done" mark, and
  // it runs again from the global queue (park.cc, blocking_exit).
  EXPECT_TRUE(text.find("\"start\":\"after blocking call\"") !=
                  std::string::npos ||
              sum.mark_names["blocking done"] > 0)
      << "neither a slice after the blocking call nor a blocking-done mark";
  EXPECT_TRUE(HasSliceNamed(sum, " main"));
  ::unlink(path.c_str());
}

// Fibers waiting for sockets are woken by network polls: the trace shows
// the polls, the fibers they readied, and the IO waits that ended.
TEST(TraceTest, NetworkWaitsShowNetpollWakeUps) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_net");
  goro::run(goro_test::Procs(2), [&] {
    goro_test::FiberGroup g;
    absl::StatusOr<goro::net::Listener> ln =
        goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok()) << ln.status();
    ASSERT_TRUE(goro::trace::start(path).ok());
    g.go([l = *ln]() mutable {
      absl::StatusOr<goro::net::Conn> c = l.accept();
      if (!c.ok()) return;
      char buf[64];
      for (;;) {
        absl::StatusOr<std::size_t> n = c->read(buf);
        if (!n.ok() || *n == 0) break;
        if (!c->write({buf, *n}).ok()) break;
      }
      (void)c->close();
    });
    absl::StatusOr<goro::net::Conn> c = goro::net::dial("tcp", ln->addr());
    ASSERT_TRUE(c.ok()) << c.status();
    for (int i = 0; i < 50; ++i) {
      const std::string msg = "ping " + std::to_string(i);
      ASSERT_TRUE(c->write(msg).ok());
      std::string got(msg.size(), '\0');
      ASSERT_TRUE(c->read_full(std::span<char>(got.data(), got.size())).ok());
    }
    (void)c->close();
    g.wait();
    (void)ln->close();
    ASSERT_TRUE(goro::trace::stop().ok());
  });
  const std::string text = ReadFile(path);
  TraceSummary sum;
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_GT(sum.end_reasons["blocked: IO wait"], 0);
  EXPECT_GT(sum.mark_names["netpoll"], 0);
  EXPECT_NE(text.find("\"by\":\"netpoll\""), std::string::npos);
  ::unlink(path.c_str());
}

TEST(TraceTest, TinyBuffersDropEventsAndCountThem) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_tiny");
  absl::StatusOr<goro::trace::Result> result;
  // One P: the two fibers switch to each other at every yield.
  goro::run(goro_test::Procs(1), [&] {
    goro::trace::Options o;
    o.buffer_events = 16;
    ASSERT_TRUE(goro::trace::start(path, o).ok());
    goro_test::SpawnAndWait(2, [](int) {
      for (int i = 0; i < 20000; ++i) goro::yield();
    });
    result = goro::trace::stop();
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->dropped_buffer_full, 0u);
  EXPECT_EQ(result->dropped_size_limit, 0u);
  const std::string text = ReadFile(path);
  TraceSummary sum;
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_EQ(sum.dropped_buffer_full,
            static_cast<double>(result->dropped_buffer_full));
  EXPECT_EQ(sum.dropped, static_cast<double>(result->dropped));
  EXPECT_GT(sum.events, 0);
  ::unlink(path.c_str());
}

TEST(TraceTest, FileStopsAtItsSizeLimitAndStaysValid) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_limit");
  absl::StatusOr<goro::trace::Result> result;
  goro::run(goro_test::Procs(2), [&] {
    goro::trace::Options o;
    o.max_bytes = 64 << 10;
    ASSERT_TRUE(goro::trace::start(path, o).ok());
    goro::Chan<int> ping(0), pong(0);
    goro_test::FiberGroup g;
    g.go([&] {
      while (auto v = ping.recv()) pong.send(*v);
    });
    for (int i = 0; i < 5000; ++i) {
      ping.send(i);
      pong.recv();
    }
    ping.close();
    g.wait();
    result = goro::trace::stop();
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->dropped_size_limit, 0u);
  EXPECT_LE(FileSize(path), 64u << 10);
  EXPECT_EQ(result->bytes, FileSize(path));
  const std::string text = ReadFile(path);
  TraceSummary sum;
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_EQ(sum.dropped_size_limit,
            static_cast<double>(result->dropped_size_limit));
  EXPECT_GT(sum.flows, 0);
  ::unlink(path.c_str());
}

TEST(TraceTest, StartAndStopReportTheirErrors) {
  goro_test::CleanGoroEnv env;
  // No runtime.
  EXPECT_EQ(goro::trace::start(TempPath("trace_none")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(goro::trace::stop().status().code(),
            absl::StatusCode::kFailedPrecondition);
  const std::string path = TempPath("trace_errors");
  goro::run(goro_test::Procs(1), [&] {
    EXPECT_EQ(goro::trace::stop().status().code(),
              absl::StatusCode::kFailedPrecondition);
    const absl::Status missing =
        goro::trace::start("/nonexistent-goro-dir/trace.json");
    EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
    EXPECT_NE(missing.message().find("/nonexistent-goro-dir/trace.json"),
              std::string_view::npos);
    goro::trace::Options bad;
    bad.buffer_events = 1000;  // not a power of two
    EXPECT_EQ(goro::trace::start(path, bad).code(),
              absl::StatusCode::kInvalidArgument);
    bad = {};
    bad.max_bytes = 1000;
    EXPECT_EQ(goro::trace::start(path, bad).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(goro::trace::active());

    ASSERT_TRUE(goro::trace::start(path).ok());
    const absl::Status again = goro::trace::start(path);
    EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
    EXPECT_TRUE(goro::trace::stop().ok());
    EXPECT_EQ(goro::trace::stop().status().code(),
              absl::StatusCode::kFailedPrecondition);
  });
  ::unlink(path.c_str());
}

TEST(TraceTest, TraceLeftRunningIsFinishedWhenRunEnds) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_left");
  goro::run(goro_test::Procs(2), [&] {
    ASSERT_TRUE(goro::trace::start(path).ok());
    goro_test::SpawnAndWait(4, [](int) { goro::sleep_for(1ms); });
  });
  EXPECT_FALSE(goro::trace::active());
  EXPECT_EQ(goro::trace::stop().status().code(),
            absl::StatusCode::kFailedPrecondition);
  TraceSummary sum;
  EXPECT_EQ(CheckTrace(ReadFile(path), &sum), "");
  EXPECT_GT(sum.fiber_slices, 4);
  // main's last slice: it exits as run's end stops the trace, or after.
  EXPECT_GT(sum.end_reasons["trace end"] + sum.end_reasons["exit"], 0);
  ::unlink(path.c_str());
}

TEST(TraceTest, SecondTraceInOneRunNamesFibersThatAlreadyExisted) {
  goro_test::CleanGoroEnv env;
  const std::string first = TempPath("trace_first");
  const std::string second = TempPath("trace_second");
  goro::run(goro_test::Procs(2), [&] {
    goro::Chan<int> ch(0);
    goro::SpawnOptions o;
    o.name = "old-timer";
    goro_test::FiberGroup g;
    goro::go(o, [ch]() mutable {
      while (ch.recv()) {
      }
    });
    ASSERT_TRUE(goro::trace::start(first).ok());
    for (int i = 0; i < 10; ++i) ch.send(i);
    ASSERT_TRUE(goro::trace::stop().ok());
    ASSERT_TRUE(goro::trace::start(second).ok());
    for (int i = 0; i < 10; ++i) ch.send(i);
    ASSERT_TRUE(goro::trace::stop().ok());
    ch.close();
  });
  for (const std::string& path : {first, second}) {
    TraceSummary sum;
    EXPECT_EQ(CheckTrace(ReadFile(path), &sum), "") << path;
    EXPECT_TRUE(HasSliceNamed(sum, " old-timer")) << path;
    ::unlink(path.c_str());
  }
}

TEST(TraceTest, PlainThreadMayStartAndStopATrace) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_thread");
  goro::run(goro_test::Procs(2), [&] {
    goro::Chan<int> ch(1);
    std::thread t([&] {
      ASSERT_TRUE(goro::trace::start(path).ok());
      ch.send(1);       // readies main from a thread: an off-P ready
      goro::go([] {});  // created off P
    });
    ch.recv();
    goro::sleep_for(2ms);
    t.join();
    ASSERT_TRUE(goro::trace::stop().ok());
  });
  TraceSummary sum;
  const std::string text = ReadFile(path);
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_NE(text.find("off P"), std::string::npos);
  ::unlink(path.c_str());
}

// Stopping waits until no P and no thread is inside a buffer before it
// unmaps them (runtime/internal/trace.h, T2): traces started and stopped
// over and over while fibers switch on both Ps and a plain thread readies
// fibers from outside. A write into an unmapped buffer would crash (and
// ASan/TSan would say where); every file must be complete.
TEST(TraceTest, StartAndStopWhileEverythingRunsLeaveNoWriterBehind) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_cycles");
  constexpr int kCycles = goro_test::Scaled(30, 10);
  goro::run(goro_test::Procs(2), [&] {
    std::atomic<bool> stop{false};
    goro::Chan<int> from_thread(16);
    goro_test::FiberGroup g;
    for (int k = 0; k < 2; ++k) {
      g.go([&] {
        while (!stop.load()) goro::yield();
      });
    }
    g.go([&] {
      while (from_thread.recv()) {
      }
    });
    std::thread t([&] {
      for (int i = 0; !stop.load(); ++i) {
        from_thread.send(i);  // readies the receiver from off P
        goro::go([] {});      // and creates fibers from off P
      }
    });
    for (int i = 0; i < kCycles; ++i) {
      goro::trace::Options o;
      o.buffer_events = 256;  // full often: drops on every path
      ASSERT_TRUE(goro::trace::start(path, o).ok());
      goro::sleep_for(1ms);
      const absl::StatusOr<goro::trace::Result> r = goro::trace::stop();
      ASSERT_TRUE(r.ok()) << r.status();
      TraceSummary sum;
      ASSERT_EQ(CheckTrace(ReadFile(path), &sum), "") << "cycle " << i;
    }
    stop = true;
    t.join();
    from_thread.close();
    g.wait();
  });
  ::unlink(path.c_str());
}

TEST(TraceTest, GoroTraceTracesTheWholeRun) {
  goro_test::CleanGoroEnv env;
  const std::string path = TempPath("trace_env");
  {
    goro_test::ScopedEnv trace("GORO_TRACE", path);
    goro::run(goro_test::Procs(2), [] {
      goro_test::SpawnAndWait(3, [](int) { goro::sleep_for(1ms); });
    });
  }
  TraceSummary sum;
  const std::string text = ReadFile(path);
  EXPECT_EQ(CheckTrace(text, &sum), "");
  EXPECT_TRUE(HasSliceNamed(sum, " main"));
  EXPECT_GT(sum.mark_names["create"], 3);  // main's too
  ::unlink(path.c_str());
}

TEST(TraceTest, GoroTraceRejectsEmptyAndUnwritablePaths) {
  goro_test::CleanGoroEnv env;
  for (const char* value : {"", "/nonexistent-goro-dir/trace.json"}) {
    goro_test::ScopedEnv trace("GORO_TRACE", value);
    try {
      goro::run([] {});
      ADD_FAILURE() << "run accepted GORO_TRACE=\"" << value << "\"";
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("GORO_TRACE"), std::string::npos) << what;
      if (*value != '\0') {
        EXPECT_NE(what.find("No such file"), std::string::npos) << what;
      }
    }
  }
  // And the next run is fine.
  goro::run([] {});
}

}  // namespace
