// Copyright goro authors.
//
// The C++ examples of docs/net.md, compiled and run. Unlike the other doc
// tests, the examples here are checked against the page itself:
// NetMdExamplesAreTheOnesCompiledHere reads docs/net.md and this file and
// requires every ```c++ block of the page to appear, line for line
// (indentation and blank lines aside), between the markers
// "// docs/net.md block N {" and "// } docs/net.md block N" below, after the
// substitutions listed in kSubstitutions (a fixed port becomes a free one, a
// 2 s wait becomes 20 ms). So the page cannot drift from code that
// compiles: change an example there, and this test says what to change
// here. Names an example leaves undefined (`c`, `buf`, `path`) are defined
// just before its block.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;

// What a block of docs/net.md reads as here: `from` is replaced by `to`.
struct Substitution {
  int block;
  const char* from;
  const char* to;
};
constexpr Substitution kSubstitutions[] = {
    {1, "\"127.0.0.1:8080\"", "g_addr"},  // a free port, not 8080
    {2, "2s", "20ms"},                    // the test waits 20 ms, not 2 s
};

// A loopback port nobody listens on (bound, read, released: a small race
// with other programs that is harmless for a test).
std::string free_loopback_addr() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sin), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    std::perror("free_loopback_addr");
    std::abort();
  }
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(sin.sin_port));
}

// A plain-socket client for block 1's server: connects (retrying while
// the server starts), echoes a few messages, and ends the process with 0
// if every byte came back, 1 otherwise -- the server loops forever, so
// the process is its only way out.
void echo_client_then_exit(std::string addr) {
  const int port = std::atoi(addr.c_str() + addr.rfind(':') + 1);
  int fd = -1;
  for (int i = 0; i < 500 && fd < 0; ++i) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
      ::close(fd);
      fd = -1;
      std::this_thread::sleep_for(10ms);
    }
  }
  if (fd < 0) _exit(3);
  for (int i = 0; i < 100; ++i) {
    const std::string msg = "message " + std::to_string(i);
    if (::write(fd, msg.data(), msg.size()) !=
        static_cast<ssize_t>(msg.size())) {
      _exit(1);
    }
    std::string got;
    while (got.size() < msg.size()) {
      char buf[64];
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) _exit(1);
      got.append(buf, static_cast<std::size_t>(n));
    }
    if (got != msg) _exit(1);
  }
  _exit(0);
}

// Where block 1's server listens (a global: the example's lambda captures
// nothing).
std::string g_addr;

void echo_server_example() {
  // clang-format off
  // docs/net.md block 1 {
goro::run([] {
  auto ln = goro::net::listen("tcp", g_addr);
  if (!ln.ok()) { std::fprintf(stderr, "%s\n", ln.status().ToString().c_str()); return; }
  for (;;) {
    auto c = ln->accept();
    if (!c.ok()) break;
    goro::go([c = *c]() mutable {          // one fiber per connection
      char buf[4096];
      for (;;) {
        auto n = c.read(buf);
        if (!n.ok() || *n == 0) return;     // error, or the peer closed
        if (!c.write({buf, *n}).ok()) return;
      }
    });
  }
});
  // } docs/net.md block 1
  // clang-format on
}

// docs/net.md, "The model": the echo server, one fiber per connection. It
// never returns, so it runs in a child process (a death test), where a
// plain thread checks the echo and ends the process.
TEST(NetDocsExamplesDeathTest, EchoServerEchoes) {
  testing::FLAGS_gtest_death_test_style = "threadsafe";
  // The child runs this test again from the top: it picks its own port.
  g_addr = free_loopback_addr();
  EXPECT_EXIT(
      {
        std::thread(echo_client_then_exit, g_addr).detach();
        echo_server_example();
        _exit(2);  // the server ended: listen failed, or accept did
      },
      testing::ExitedWithCode(0), "");
}

// docs/net.md, "Deadlines" (20 ms for the page's 2 s).
TEST(NetDocsExamples, ReadDeadline) {
  goro::run([] {
    absl::StatusOr<goro::net::Listener> ln =
        goro::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln.ok()) << ln.status();
    absl::StatusOr<goro::net::Conn> peer = goro::net::dial("tcp", ln->addr());
    ASSERT_TRUE(peer.ok()) << peer.status();
    absl::StatusOr<goro::net::Conn> accepted = ln->accept();
    ASSERT_TRUE(accepted.ok()) << accepted.status();
    goro::net::Conn c = *accepted;
    char buf[64];
    bool timed_out = false;
    const auto t0 = std::chrono::steady_clock::now();
    // clang-format off
    // docs/net.md block 2 {
c.set_read_deadline(std::chrono::steady_clock::now() + 20ms);
auto n = c.read(buf);
if (!n.ok() && goro::net::is_timeout(n.status())) { /* nothing for 2 s */ }
c.set_read_deadline({});   // time_point{} clears it
    // } docs/net.md block 2
    // clang-format on
    timed_out = !n.ok() && goro::net::is_timeout(n.status());
    EXPECT_TRUE(timed_out) << n.status();
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
    // Cleared: the next read waits for data again, and gets it.
    ASSERT_TRUE(peer->write("x").ok());
    n = c.read(buf);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 1u);
  });
}

// docs/net.md, "Blocking work": a file read inside goro::blocking.
TEST(NetDocsExamples, BlockingFileRead) {
  const std::string path = ::testing::TempDir() + "/net_examples_test.txt";
  {
    std::ofstream out(path);
    out << "hello from a file\n";
  }
  std::string got;
  goro::run([&] {
    // clang-format off
    // docs/net.md block 3 {
std::string text = goro::blocking([&] {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
});
    // } docs/net.md block 3
    // clang-format on
    got = text;
  });
  EXPECT_EQ(got, "hello from a file\n");
  std::remove(path.c_str());
}

// --- The page and this file agree -------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Lines without their indentation, blank lines dropped.
std::vector<std::string> normalized_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos) continue;
    const std::size_t e = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(b, e - b + 1));
  }
  return out;
}

// The ```c++ blocks of a markdown page, in order.
std::vector<std::string> cpp_blocks(const std::string& md) {
  std::vector<std::string> blocks;
  std::istringstream in(md);
  std::string line, cur;
  bool in_block = false;
  while (std::getline(in, line)) {
    if (!in_block && line.rfind("```c++", 0) == 0) {
      in_block = true;
      cur.clear();
    } else if (in_block && line.rfind("```", 0) == 0) {
      in_block = false;
      blocks.push_back(cur);
    } else if (in_block) {
      cur += line + "\n";
    }
  }
  return blocks;
}

std::string substituted(int block, std::string text) {
  for (const Substitution& s : kSubstitutions) {
    if (s.block != block) continue;
    const std::string from = s.from;
    for (std::size_t at = text.find(from); at != std::string::npos;
         at = text.find(from, at + std::string(s.to).size())) {
      text.replace(at, from.size(), s.to);
    }
  }
  return text;
}

TEST(NetDocsExamples, NetMdExamplesAreTheOnesCompiledHere) {
  const std::vector<std::string> blocks = cpp_blocks(read_file("docs/net.md"));
  const std::string self = read_file("tests/docs/net_examples_test.cc");
  ASSERT_EQ(blocks.size(), 3u)
      << "docs/net.md has a different number of ```c++ blocks: compile each "
         "here, between block markers";
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const int n = static_cast<int>(i) + 1;
    const std::string begin =
        "// docs/net.md block " + std::to_string(n) + " {\n";
    const std::string end = "// } docs/net.md block " + std::to_string(n);
    const std::size_t b = self.find(begin);
    const std::size_t e = self.find(end, b == std::string::npos ? 0 : b);
    ASSERT_TRUE(b != std::string::npos && e != std::string::npos)
        << "no markers for block " << n;
    const std::string here =
        self.substr(b + begin.size(), e - b - begin.size());
    const std::vector<std::string> want =
        normalized_lines(substituted(n, blocks[i]));
    const std::vector<std::string> got = normalized_lines(here);
    std::size_t k = 0;
    while (k < want.size() && k < got.size() && want[k] == got[k]) ++k;
    EXPECT_TRUE(k == want.size() && k == got.size())
        << "docs/net.md block " << n << " differs from the code compiled "
        << "here (after kSubstitutions), at its line " << k + 1
        << " (blank lines not counted):\n  page: "
        << (k < want.size() ? want[k] : "(ends)")
        << "\n  here: " << (k < got.size() ? got[k] : "(ends)");
  }
}

}  // namespace
