// The README's and docs/runtime.md's examples, compiled and run, so that the
// documentation stays true to the code.

#include <chrono>
#include <cstdio>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"

namespace {

TEST(DocsExamples, ReadmeChannelExample) {
  std::vector<int> got;
  int rc = goro::run([&] {
    goro::Chan<int> ch(0);  // unbuffered, as in Go
    goro::go([ch] {
      for (int i = 0; i < 3; ++i) ch.send(i);
      ch.close();
    });
    for (int v : ch) got.push_back(v);  // ends when closed
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
}

TEST(DocsExamples, RuntimeDocExample) {
  int rc = goro::run([] {
    goro::WaitGroup wg;
    for (int i = 0; i < 1000; ++i) {
      wg.add(1);
      goro::go([&wg, i] {
        goro::sleep_for(std::chrono::milliseconds(i % 10));
        wg.done();
      });
    }
    wg.wait();
    return 0;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(goro::stats().fibers_created, 1001u);
}

}  // namespace
