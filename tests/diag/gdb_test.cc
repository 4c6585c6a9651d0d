// Copyright goro authors.
//
// tools/goro-gdb.py (issue 11, "gdb"): gdb in batch mode on gdb_helper, a
// program with named fibers parked in known functions and preempted
// spinners, stopped at a breakpoint; then the same commands on a core file
// of that process written by the script's goro-gcore. Checks that `info
// fibers` lists every fiber with its state and the function it waits in,
// and that `fiber N bt` unwinds each parked fiber from its saved registers
// through the function it waits in down to the bottom of its stack -- and a
// preempted one through the preemption trampoline.
//
// Needs gdb (tools/setup.sh installs it).

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/test_util.h"

extern char** environ;

namespace {

using goro_test::Runfile;
using goro_test::TempDir;

bool Executable(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

std::string FindGdb() {
  for (const char* p : {"/usr/bin/gdb", "/usr/local/bin/gdb", "/bin/gdb"}) {
    if (Executable(p)) return p;
  }
  return "";
}

// Runs argv with stdout and stderr into one string; *status gets the wait
// status.
std::string Run(const std::vector<std::string>& argv, int* status) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  std::string out;
  if (rc != 0) {
    ::close(fds[0]);
    *status = -1;
    return "posix_spawn " + argv[0] + " failed: " + std::to_string(rc);
  }
  char buf[4096];
  for (;;) {
    const ssize_t got = ::read(fds[0], buf, sizeof(buf));
    if (got <= 0) break;
    out.append(buf, static_cast<std::size_t>(got));
  }
  ::close(fds[0]);
  ::waitpid(pid, status, 0);
  return out;
}

// gdb's commands for one look at the helper: each answer after a marker
// line, "==== NAME".
void AddQueries(std::vector<std::string>* argv) {
  auto ex = [&](const std::string& cmd) {
    argv->push_back("-ex");
    argv->push_back(cmd);
  };
  auto section = [&](const std::string& name) {
    ex("echo ==== " + name + "\\n");
  };
  auto fiber_bt = [&](const char* var) {
    // The ids are the helper's globals: `fiber N bt` with N read from them.
    ex(std::string("python gdb.execute(\"fiber %d bt\" % "
                   "int(gdb.parse_and_eval(\"") +
       var + "\")))");
  };
  section("preempted");
  ex("print g_preempted");
  section("spare lent");
  ex("print g_spare_lent");
  section("dump preempted");
  ex("print g_dump_preempted");
  section("info fibers");
  ex("info fibers");
  section("receiver bt");
  fiber_bt("g_receiver_id");
  section("locker bt");
  fiber_bt("g_locker_id");
  section("sleeper bt");
  fiber_bt("g_sleeper_id");
  section("receiver registers");
  ex("check-fiber-registers g_receiver_id");
  section("fiber all bt");
  ex("fiber all bt");
  section("end");
}

struct Session {
  std::string live;  // gdb's output with the process stopped at GdbReady
  std::string core;  // gdb's output on the core file of that process
};

// One gdb run on the live helper (which also writes the core) and one on
// the core, shared by the tests below.
const Session& GetSession() {
  static const Session* session = [] {
    auto* s = new Session;
    const std::string gdb = FindGdb();
    if (gdb.empty()) return s;
    const std::string helper = Runfile("tests/diag/gdb_helper");
    const std::string script = Runfile("tools/goro-gdb.py");
    const std::string check = Runfile("tests/diag/gdb_check_registers.py");
    const std::string core = TempDir() + "/gdb_helper.core";
    std::remove(core.c_str());
    goro_test::CleanGoroEnv env;
    // -nx: no ~/.gdbinit; the timeout keeps a stuck gdb from hanging the
    // test until Bazel's.
    std::vector<std::string> live = {"/usr/bin/timeout", "120", gdb,
                                     "-batch",           "-nx", "-q"};
    for (const char* c :
         {"set pagination off", "set confirm off", "set width 0"}) {
      live.push_back("-ex");
      live.push_back(c);
    }
    live.insert(live.end(),
                {"-ex", "source " + script, "-ex", "source " + check, "-ex",
                 "break GdbReady", "-ex", "run"});
    AddQueries(&live);
    // No core under AddressSanitizer: gdb would write the sanitizer's
    // terabytes of shadow memory (goro-gcore refuses; see GdbTest::Out).
    if (!goro_test::kAsan) {
      live.insert(live.end(), {"-ex", "goro-gcore " + core});
    }
    live.insert(live.end(), {"-ex", "kill", helper});
    int status = 0;
    s->live = Run(live, &status);
    if (goro_test::kAsan) return s;
    std::vector<std::string> post = {
        "/usr/bin/timeout", "120", gdb, "-batch", "-nx", "-q", helper, core};
    post.insert(post.end(), {"-ex", "set width 0", "-ex", "source " + script,
                             "-ex", "source " + check});
    AddQueries(&post);
    s->core = Run(post, &status);
    std::remove(core.c_str());
    return s;
  }();
  return *session;
}

std::string Section(const std::string& out, const std::string& name) {
  const std::string marker = "==== " + name + "\n";
  const std::size_t b = out.find(marker);
  if (b == std::string::npos) return "";
  const std::size_t start = b + marker.size();
  const std::size_t e = out.find("==== ", start);
  return out.substr(start,
                    e == std::string::npos ? std::string::npos : e - start);
}

bool Has(const std::string& text, const std::string& re) {
  return std::regex_search(text, std::regex(re));
}

class GdbTest : public testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    goro_test::ExtendWatchdog(std::chrono::seconds(280));
    ASSERT_FALSE(FindGdb().empty())
        << "gdb is not installed (tools/setup.sh installs it)";
  }
  // The live session's output, or the core file's. Under AddressSanitizer
  // there is no core file: gdb's gcore would write the sanitizer's
  // terabytes of shadow memory (goro-gcore refuses, see its help).
  const std::string& Out() {
    const Session& s = GetSession();
    return GetParam() ? s.core : s.live;
  }
  bool NoCore() const { return GetParam() && goro_test::kAsan; }
};

// Every fiber, one line each: `*` for those on a thread, id, name, state,
// the innermost frame of the program's own code.
TEST_P(GdbTest, InfoFibersListsEveryFiberWithItsStateAndFunction) {
  if (NoCore()) GTEST_SKIP() << "no core file under AddressSanitizer";
  const std::string& out = Out();
  const std::string list = Section(out, "info fibers");
  ASSERT_FALSE(list.empty()) << out;
  EXPECT_TRUE(Has(list, "\n\\s+Id\\s+Name\\s+State\\s+Function\n") ||
              Has(list, "^\\s+Id\\s+Name\\s+State\\s+Function\n"))
      << list;
  // main called GdbReady: on a thread.
  EXPECT_TRUE(Has(list, "\n\\*\\s+1\\s+\"main\"\\s+running\\s")) << list;
  EXPECT_TRUE(Has(list,
                  "\n \\s+[0-9]+\\s+\"receiver\"\\s+chan receive\\s+"
                  "\\(anonymous namespace\\)::WaitForJob "
                  "\\(tests/diag/gdb_helper.cc:[0-9]+\\)\n"))
      << list;
  EXPECT_TRUE(Has(list,
                  "\n \\s+[0-9]+\\s+\"locker\"\\s+mutex lock\\s+"
                  "\\(anonymous namespace\\)::TakeTheLock "))
      << list;
  EXPECT_TRUE(Has(list,
                  "\n \\s+[0-9]+\\s+\"sleeper\"\\s+sleep\\s+"
                  "\\(anonymous namespace\\)::Nap "))
      << list;
  // Both spinners are listed, each running or preempted in SpinForever.
  for (const char* name : {"spinner-a", "spinner-b"}) {
    EXPECT_TRUE(Has(list, std::string("\n[* ]\\s+[0-9]+\\s+\"") + name +
                              "\"\\s+(running|preempted)\\s+"
                              "\\(anonymous namespace\\)::SpinForever "))
        << name << "\n"
        << list;
  }
}

// `fiber N bt`: the parked fiber's frames, from the switch through the
// function it waits in to goro_context_trampoline, the bottom of every
// fiber's stack (so every register the unwinder supplied was right). The
// host thread's frame #0 is left out.
TEST_P(GdbTest, FiberBtShowsWhereEachParkedFiberWaits) {
  if (NoCore()) GTEST_SKIP() << "no core file under AddressSanitizer";
  const std::string& out = Out();
  struct Case {
    const char* section;
    const char* wait;  // a goro frame the fiber waits in
    const char* func;  // the helper's function
  } cases[] = {
      {"receiver bt", "goro::Chan<int>::recv", "WaitForJob"},
      {"locker bt", "goro::Mutex::lock", "TakeTheLock"},
      {"sleeper bt", "goro::sleep_for", "Nap"},
  };
  for (const Case& c : cases) {
    const std::string bt = Section(out, c.section);
    EXPECT_TRUE(Has(bt, "^#1 ")) << c.section << ":\n" << bt << "\n" << out;
    EXPECT_FALSE(Has(bt, "(^|\n)#0 ")) << c.section << ":\n" << bt;
    EXPECT_TRUE(Has(bt, "goro::runtime_internal::park")) << bt;
    EXPECT_TRUE(Has(bt, c.wait)) << c.section << ":\n" << bt;
    EXPECT_TRUE(Has(bt, std::string("\\(anonymous namespace\\)::") + c.func +
                            "\\b[^\n]* at tests/diag/gdb_helper.cc:[0-9]+"))
        << c.section << ":\n"
        << bt;
    EXPECT_TRUE(Has(bt, "\n#[0-9]+ [^\n]*goro_context_trampoline \\(\\)"))
        << c.section << " did not reach the bottom of the stack:\n"
        << bt;
  }
}

// Exactly the registers the switch saved: frame #1 in the fiber's context
// has the SwitchFrame's return address, callee-saved registers and the
// stack pointer above it (gdb_check_registers.py decodes the frame with its
// own copy of the layout). The backtraces above do not need every one of
// them to come out right: with frame pointers, gdb finds frame #1's CFA
// from rbp alone.
TEST_P(GdbTest, FiberContextHasTheSavedRegisters) {
  if (NoCore()) GTEST_SKIP() << "no core file under AddressSanitizer";
  const std::string& out = Out();
  EXPECT_EQ(Section(out, "receiver registers"), "registers: ok\n") << out;
}

// A fiber switched out by asynchronous preemption unwinds through
// goro_async_preempt (its CFI gives the interrupted pc and registers) into
// the spinning function and on to the bottom of its stack; `info fibers`
// calls it preempted (tested above: running or preempted).
TEST_P(GdbTest, PreemptedFiberUnwindsThroughTheTrampoline) {
  if (NoCore()) GTEST_SKIP() << "no core file under AddressSanitizer";
  const std::string& out = Out();
  // On a loaded machine sysmon may lend a spare P (an M seen asleep in the
  // kernel twice), and then both spinners can run beside main -- for the
  // helper's whole wait, or again between its check and gdb's stop:
  // nothing is left to unwind through the trampoline. Skipped then, not
  // passed (the helper says whether a spare was lent).
  const bool spare_lent = Has(Section(out, "spare lent"), "= 1\n");
  if (!Has(Section(out, "preempted"), "= 1\n") && spare_lent) {
    GTEST_SKIP() << "a spare P let both spinners run beside main";
  }
  ASSERT_TRUE(Has(Section(out, "preempted"), "= 1\n"))
      << "the helper saw no asynchronous preemption\n"
      << out;
  const std::string all = Section(out, "fiber all bt");
  std::smatch m;
  const std::regex preempted(
      "fiber [0-9]+ \"spinner-[ab]\" \\[preempted\\]:\n((#[^\n]*\n)+)");
  // gdb's own view says so too when both spinners run beside main: a spare
  // lent after the helper read its count.
  const bool both_running = Has(all, "\"spinner-a\" \\[running\\]:") &&
                            Has(all, "\"spinner-b\" \\[running\\]:");
  if (!std::regex_search(all, m, preempted) && (spare_lent || both_running)) {
    GTEST_SKIP() << "a spare P let both spinners run beside main";
  }
  // Under AddressSanitizer the helper's own dump may not have shown a
  // spinner preempted within its 2 s wait (a signal that lands in the
  // sanitizer's runtime is refused, and the spinner is switched at its
  // return instead, as runnable): the state gdb should see never arose.
  // Skipped then, and only then; elsewhere the helper's wait is the check.
  if (!std::regex_search(all, m, preempted) && goro_test::kAsan &&
      !Has(Section(out, "dump preempted"), "= 1\n")) {
    GTEST_SKIP() << "under ASan no spinner was seen preempted in 2 s";
  }
  ASSERT_TRUE(std::regex_search(all, m, preempted))
      << "no spinner is preempted:\n"
      << all;
  const std::string bt = m[1];
  // gdb shows the trampoline, whose CFI says it is a signal frame, as
  // "<signal handler called>" at its source.
  const std::size_t tramp = bt.find(
      "<signal handler called> () at "
      "preempt/internal/async_preempt_x86_64.S");
  const std::size_t spin = bt.find("SpinForever");
  const std::size_t bottom = bt.find("goro_context_trampoline");
  ASSERT_NE(tramp, std::string::npos) << bt;
  ASSERT_NE(spin, std::string::npos) << bt;
  ASSERT_NE(bottom, std::string::npos) << bt;
  EXPECT_LT(tramp, spin) << bt;
  EXPECT_LT(spin, bottom) << bt;
  // Past the interrupted frame, its caller (the fiber's lambda) with its
  // source line: the unwind went on correctly from the interrupted pc.
  EXPECT_TRUE(Has(bt.substr(spin),
                  "\n#[0-9]+ [^\n]*operator\\(\\) [^\n]*at "
                  "tests/diag/gdb_helper.cc:[0-9]+\n"))
      << bt;
}

// `fiber all bt` covers every fiber; in the live process the core was
// written with every fiber stack in it.
TEST_P(GdbTest, FiberAllRunsTheCommandForEveryFiber) {
  if (NoCore()) GTEST_SKIP() << "no core file under AddressSanitizer";
  const std::string& out = Out();
  const std::string all = Section(out, "fiber all bt");
  for (const char* header :
       {"fiber 1 \"main\" \\[running\\]:\n#0 ",
        "fiber [0-9]+ \"receiver\" \\[chan receive\\]:\n#1 ",
        "fiber [0-9]+ \"locker\" \\[mutex lock\\]:\n#1 ",
        "fiber [0-9]+ \"sleeper\" \\[sleep\\]:\n#1 "}) {
    EXPECT_TRUE(Has(all, header)) << header << "\n" << all;
  }
  if (!GetParam() && !goro_test::kAsan) {
    EXPECT_TRUE(Has(out, "goro-gcore: copied the stacks of [0-9]+ fibers"))
        << out;
  }
}

INSTANTIATE_TEST_SUITE_P(LiveAndCore, GdbTest, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& p) {
                           return p.param ? "CoreFile" : "LiveProcess";
                         });

}  // namespace
