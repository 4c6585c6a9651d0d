// Copyright goro authors.
//
// tools/diag_example, the program docs/diagnostics.md shows its outputs
// with: each mode run as a child process, and what the page shows checked --
// exit status, message lines, one header line per fiber ("fiber N "NAME"
// [STATE]:"), frames of the program's own functions, "created by" lines.
// File:line pairs are checked against the source itself (the line named for
// consume() must be the one with jobs.recv(), ...), so that a wrong line
// table or an off-by-one frame fails without pinning line numbers here.
//
// Not in the TSan pass: `trace` and `busy` rely on asynchronous preemption,
// which is off under TSan.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/test_util.h"
#include "tests/diag/trace_json_check.h"

extern char** environ;

namespace {

using goro_test::Runfile;
using goro_test::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The child's output (stdout and stderr together) and wait status.
struct Child {
  pid_t pid = -1;
  int out = -1;  // read end of the child's stdout+stderr
  std::string text;
  int status = -1;
};

// Starts tools/diag_example MODE with `env` added to the environment.
Child Start(const std::string& mode, const std::vector<std::string>& env) {
  Child c;
  int fds[2];
  if (::pipe(fds) != 0) return c;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  const std::string bin = Runfile("tools/diag_example");
  std::vector<char*> argv = {const_cast<char*>(bin.c_str()),
                             const_cast<char*>(mode.c_str()), nullptr};
  // The test's own environment, less GORO_* (a developer's GORO_DEBUG must
  // not change the output), plus `env`.
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("GORO_", 0) != 0) envs.push_back(*e);
  }
  for (const std::string& e : env) envs.push_back(e);
  std::vector<char*> envp;
  for (std::string& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc =
      posix_spawn(&c.pid, bin.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    c.pid = -1;
    c.text = "posix_spawn " + bin + " failed: " + std::to_string(rc);
    return c;
  }
  c.out = fds[0];
  return c;
}

// Reads the child's output until it contains `until` (or, with an empty
// `until`, until it closes) or `limit` passes. True if found or closed.
bool ReadUntil(Child* c, const std::string& until,
               std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  for (;;) {
    if (!until.empty() && c->text.find(until) != std::string::npos) {
      return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{c->out, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t got = ::read(c->out, buf, sizeof(buf));
    if (got <= 0) return until.empty();
    c->text.append(buf, static_cast<std::size_t>(got));
  }
}

// Runs a mode to its end (killed after `limit`).
Child RunMode(const std::string& mode, const std::vector<std::string>& env = {},
              std::chrono::seconds limit = std::chrono::seconds(60)) {
  goro_test::WatchdogNote("diag_example " + mode);
  Child c = Start(mode, env);
  if (c.pid < 0) return c;
  if (!ReadUntil(&c, "", limit)) {
    ::kill(c.pid, SIGKILL);
    c.text += "\n[test: killed after " + std::to_string(limit.count()) + " s]";
  }
  ::close(c.out);
  ::waitpid(c.pid, &c.status, 0);
  return c;
}

bool ExitedWith(int status, int code) {
  return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool KilledBy(int status, int sig) {
  return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

// Line `n` (1-based) of tools/diag_example.cc.
std::string SourceLine(int n) {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> v;
    std::istringstream in(ReadFile(Runfile("tools/diag_example.cc")));
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }();
  if (n < 1 || static_cast<std::size_t>(n) > lines.size()) return "";
  return lines[static_cast<std::size_t>(n - 1)];
}

// The block of one fiber in a dump: from its header line to the blank line
// after it ("" if there is no such fiber).
std::string FiberBlock(const std::string& text, const std::string& header) {
  const std::size_t at = text.find(header);
  if (at == std::string::npos) return "";
  const std::size_t end = text.find("\n\n", at);
  return text.substr(at, end == std::string::npos ? end : end - at);
}

// In a fiber's block: the frame `function` is followed by
// "\ttools/diag_example.cc:LINE +0x..." and that source line contains
// `code`.
testing::AssertionResult FrameAt(const std::string& block,
                                 const std::string& function,
                                 const std::string& code) {
  // An inlined function is named by its DWARF scope, without the
  // namespace: run_mode inlined into go()'s lambda at -O2 is "run_mode",
  // the same function out of line at -O1 (ASan) is
  // "(anonymous namespace)::run_mode".
  std::string name = function;
  std::size_t at = block.find("\n" + name + "(...)\n");
  if (at == std::string::npos && function.find("::") == std::string::npos) {
    name = "(anonymous namespace)::" + function;
    at = block.find("\n" + name + "(...)\n");
  }
  if (at == std::string::npos) {
    return testing::AssertionFailure() << "no frame " << function << " in:\n"
                                       << block;
  }
  std::smatch m;
  const std::string rest = block.substr(at + name.size() + 7);
  static const std::regex kWhere(
      R"(^\ttools/diag_example\.cc:(\d+) \+0x[0-9a-f]+\n?)");
  if (!std::regex_search(rest, m, kWhere)) {
    return testing::AssertionFailure()
           << "frame " << function << " has no tools/diag_example.cc:LINE "
           << "+0xOFF line in:\n"
           << block;
  }
  const std::string src = SourceLine(std::stoi(m[1]));
  if (src.find(code) == std::string::npos) {
    return testing::AssertionFailure()
           << function << " at line " << m[1] << ", which is \"" << src
           << "\", not a line with \"" << code << "\"";
  }
  return testing::AssertionSuccess();
}

// "created by FUNCTION in fiber 1" then "\ttools/diag_example.cc:LINE",
// that line containing `code`.
testing::AssertionResult CreatedAt(const std::string& block,
                                   const std::string& function,
                                   const std::string& code) {
  std::smatch m;
  const std::regex re(
      "\ncreated by " +
      std::regex_replace(function, std::regex(R"([{}:])"), R"(\$&)") +
      R"( in fiber 1\n\ttools/diag_example\.cc:(\d+))");
  if (!std::regex_search(block, m, re)) {
    return testing::AssertionFailure()
           << "no \"created by " << function << " in fiber 1\" with "
           << "tools/diag_example.cc:LINE in:\n"
           << block;
  }
  const std::string src = SourceLine(std::stoi(m[1]));
  if (src.find(code) == std::string::npos) {
    return testing::AssertionFailure()
           << "created at line " << m[1] << ", which is \"" << src
           << "\", not a line with \"" << code << "\"";
  }
  return testing::AssertionSuccess();
}

// The consumer and the updater, as the deadlock, SIGQUIT and dump outputs
// show them.
void ExpectParkedWorkers(const std::string& text) {
  const std::string consumer =
      FiberBlock(text, "fiber 2 \"consumer\" [chan receive");
  ASSERT_FALSE(consumer.empty()) << text;
  EXPECT_TRUE(
      FrameAt(consumer, "(anonymous namespace)::consume", "jobs.recv()"));
  EXPECT_TRUE(CreatedAt(consumer, "{anonymous}::start_fibers", "\"consumer\""));
  const std::string updater =
      FiberBlock(text, "fiber 3 \"updater\" [mutex lock");
  ASSERT_FALSE(updater.empty()) << text;
  EXPECT_TRUE(
      FrameAt(updater, "(anonymous namespace)::guarded_update", "lock_guard"));
  EXPECT_TRUE(CreatedAt(updater, "{anonymous}::start_fibers", "\"updater\""));
}

TEST(DiagExampleTest, DeadlockExitsTwoWithTheMessageAndEveryFiber) {
  const Child c = RunMode("deadlock");
  EXPECT_TRUE(ExitedWith(c.status, 2)) << c.status << "\n" << c.text;
  EXPECT_EQ(c.text.rfind("goro: fatal error: all fibers are asleep - "
                         "deadlock!\n\nfiber ",
                         0),
            0u)
      << c.text;
  const std::string main =
      FiberBlock(c.text, "fiber 1 \"main\" [chan receive]:");
  ASSERT_FALSE(main.empty()) << c.text;
  EXPECT_TRUE(FrameAt(main, "run_mode", "never.recv()"));
  ExpectParkedWorkers(c.text);
  EXPECT_EQ(c.text.find("napper"), std::string::npos) << c.text;
}

TEST(DiagExampleTest, HangDumpsEveryFiberOnSigquitAndExitsTwo) {
  goro_test::WatchdogNote("diag_example hang");
  Child c = Start("hang", {});
  ASSERT_GT(c.pid, 0) << c.text;
  const bool ready = ReadUntil(&c, "ready\n", std::chrono::seconds(30));
  // "ready" comes just before main parks in never.recv(): give it time to
  // get there (CI run 15, ASan on a VM with dear page faults: the dump
  // caught main still running, "fiber 1 [running]").
  if (ready) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  if (ready) ::kill(c.pid, SIGQUIT);
  const bool closed = ReadUntil(&c, "", std::chrono::seconds(30));
  if (!ready || !closed) ::kill(c.pid, SIGKILL);
  ::close(c.out);
  ::waitpid(c.pid, &c.status, 0);
  ASSERT_TRUE(ready) << c.text;
  EXPECT_TRUE(closed) << c.text;
  EXPECT_TRUE(ExitedWith(c.status, 2)) << c.status << "\n" << c.text;
  EXPECT_NE(c.text.find("ready\nSIGQUIT: quit\n\nfiber "), std::string::npos)
      << c.text;
  const std::string main =
      FiberBlock(c.text, "fiber 1 \"main\" [chan receive]:");
  ASSERT_FALSE(main.empty()) << c.text;
  EXPECT_TRUE(FrameAt(main, "run_mode", "never.recv()"));
  ExpectParkedWorkers(c.text);
  const std::string napper = FiberBlock(c.text, "fiber 4 \"napper\" [sleep]:");
  ASSERT_FALSE(napper.empty()) << c.text;
  EXPECT_TRUE(FrameAt(napper, "(anonymous namespace)::nap", "sleep_for(1h)"));
  EXPECT_TRUE(CreatedAt(napper, "{anonymous}::run_mode", "\"napper\""));
}

TEST(DiagExampleTest, DumpPrintsTheCallerRunningAndTheOthersParked) {
  const Child c = RunMode("dump");
  EXPECT_TRUE(ExitedWith(c.status, 0)) << c.status << "\n" << c.text;
  EXPECT_EQ(c.text.rfind("fiber 1 \"main\" [running]:\n", 0), 0u) << c.text;
  const std::string main = FiberBlock(c.text, "fiber 1 \"main\" [running]:");
  EXPECT_TRUE(FrameAt(main, "run_mode", "dump_fibers"));
  ExpectParkedWorkers(c.text);
  EXPECT_FALSE(FiberBlock(c.text, "fiber 4 \"napper\" [sleep]:").empty())
      << c.text;
}

TEST(DiagExampleTest, BusyPrintsSchedtraceLines) {
  const Child c = RunMode("busy", {"GORO_DEBUG=schedtrace=1000,scheddetail=1"});
  EXPECT_TRUE(ExitedWith(c.status, 0)) << c.status << "\n" << c.text;
  static const std::regex kSched(
      R"(SCHED (\d+)ms: gomaxprocs=\d+ idleprocs=\d+ threads=\d+ )"
      R"(spinningthreads=\d+ idlethreads=\d+ runqueue=\d+ \[[\d ]+\] )"
      R"(preempt=\d+ steals=\d+\n)");
  int lines = 0;
  for (std::sregex_iterator it(c.text.begin(), c.text.end(), kSched), end;
       it != end; ++it) {
    ++lines;
  }
  // 3 s of work at one line a second (the last may miss the end).
  EXPECT_GE(lines, 2) << c.text;
  EXPECT_TRUE(std::regex_search(
      c.text,
      std::regex(
          R"(\n  P0: status=\w+ m=-?\d+ runqsize=\d+ runnext=\d+ timers=(yes|no)\n)")))
      << c.text;
  EXPECT_TRUE(std::regex_search(
      c.text, std::regex(R"(\n  M0: tid=\d+ curg=\S+ idle=\d blocking=\d\n)")))
      << c.text;
  EXPECT_TRUE(std::regex_search(c.text, std::regex(R"(\n  G1: status=)")))
      << c.text;
}

TEST(DiagExampleTest, ThrowPrintsTheExceptionAndTheFramesThatThrew) {
  const Child c = RunMode("throw");
  EXPECT_TRUE(KilledBy(c.status, SIGABRT)) << c.status << "\n" << c.text;
  EXPECT_EQ(c.text.rfind("goro: uncaught exception in fiber 2: empty "
                         "configuration\n\nfiber 2 \"loader\" [running]:\n",
                         0),
            0u)
      << c.text;
  const std::string loader =
      FiberBlock(c.text, "fiber 2 \"loader\" [running]:");
  EXPECT_TRUE(FrameAt(loader, "(anonymous namespace)::parse_config", "throw"));
  EXPECT_TRUE(FrameAt(loader, "(anonymous namespace)::load_config",
                      "parse_config(\"\")"));
  EXPECT_TRUE(CreatedAt(loader, "{anonymous}::run_mode", "\"loader\""));
  // parse_config is the innermost frame: nothing of the C++ runtime's throw.
  EXPECT_EQ(loader.find("fiber 2 \"loader\" [running]:\n(anonymous "
                        "namespace)::parse_config(...)\n"),
            0u)
      << loader;
}

TEST(DiagExampleTest, OverflowPrintsTheReportAndTheRawFrames) {
  const Child c = RunMode("overflow");
  EXPECT_TRUE(KilledBy(c.status, SIGABRT)) << c.status << "\n" << c.text;
  EXPECT_TRUE(std::regex_search(
      c.text,
      std::regex(R"(^goro: fiber 2 \(walker\) overflowed its \d+-byte stack )"
                 R"(\(fault at 0x[0-9a-f]+, \d+ bytes below it\)\n)"
                 R"(goro: give it a bigger stack: )")))
      << c.text;
  EXPECT_NE(c.text.find("goro: fiber 2's stack, innermost frame first, as "
                        "addresses in the object file named before them"),
            std::string::npos)
      << c.text;
  EXPECT_TRUE(std::regex_search(
      c.text, std::regex(R"(\n\tin \S*diag_example:\n\t#0 0x[0-9a-f]+\n)")))
      << c.text;
  EXPECT_TRUE(std::regex_search(
      c.text, std::regex(R"(\n\t\.\.\. \d+ frames elided \.\.\.\n)")))
      << c.text;
}

TEST(DiagExampleTest, TraceWritesAWellFormedTraceOfThePipeline) {
  if (goro_test::kTsan) GTEST_SKIP() << "no asynchronous preemption";
  const std::string path = TempDir() + "/diag_example_trace.json";
  std::remove(path.c_str());
  const Child c =
      RunMode("trace", {"GORO_TIMESLICE=1ms", "GORO_TRACE=" + path});
  EXPECT_TRUE(ExitedWith(c.status, 0)) << c.status << "\n" << c.text;
  const std::string json = ReadFile(path);
  ASSERT_FALSE(json.empty()) << "no " << path << "\n" << c.text;
  goro_test::TraceSummary s;
  EXPECT_EQ(goro_test::CheckTrace(json, &s), "");
  EXPECT_EQ(s.dropped, 0);
  // Each named fiber of the pipeline has slices, and the spinner was
  // preempted asynchronously (it never calls into the runtime).
  for (const char* name : {"main", "producer", "worker-0", "worker-1",
                           "collector", "logger", "spinner"}) {
    bool found = false;
    for (const std::string& n : s.slice_names) {
      const std::string suffix = std::string(" ") + name;
      found = found || (n.size() >= suffix.size() &&
                        n.compare(n.size() - suffix.size(), std::string::npos,
                                  suffix) == 0);
    }
    EXPECT_TRUE(found) << "no slice of " << name;
  }
  EXPECT_GE(s.end_reasons["preempted (async)"], 1);
  EXPECT_GE(s.end_reasons["blocking call"], 1);
  EXPECT_GE(s.end_reasons["blocked: chan send"] +
                s.end_reasons["blocked: chan receive"],
            1);
  EXPECT_GE(s.end_reasons["blocked: sleep"], 1);
  EXPECT_EQ(s.track_names[1], "P0");
}

}  // namespace
