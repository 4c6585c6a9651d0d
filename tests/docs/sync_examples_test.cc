// Copyright goro authors.
//
// The examples of docs/sync.md, docs/preemption.md and the public headers'
// comments, compiled and run as written (names the snippets leave
// undefined -- use(), run(), handle() -- are small local stand-ins), so
// that the documentation cannot drift from the API. When an example
// changes, change it here too.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "goro.h"
#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace {

using namespace std::chrono_literals;

// docs/sync.md, "Channels" (and sync/chan.h's header example).
TEST(DocsExamples, SyncChannels) {
  std::vector<int> seen;
  goro::run([&] {
    auto use = [&](int v) { seen.push_back(v); };
    goro::Chan<int> ch(16);  // capacity 16; Chan<int>(0) is unbuffered
    goro::go([ch] {          // capture by value: copies share the channel
      for (int i = 0; i < 100; ++i) ch.send(i);
      ch.close();
    });
    for (int v : ch) use(v);           // ends when closed and drained
    std::optional<int> v = ch.recv();  // empty optional once closed and drained
    EXPECT_FALSE(v.has_value());
    goro::Chan<int> other(1);
    bool ok = other.try_send(1);  // never parks; false if it would
    EXPECT_TRUE(ok);
  });
  ASSERT_EQ(seen.size(), 100u);
  EXPECT_EQ(seen.back(), 99);
}

struct Job {
  int id;
};

// docs/sync.md, "select" (sync/select.h has the same shape).
TEST(DocsExamples, SyncSelect) {
  goro::run([] {
    goro::Chan<Job> jobs(1);
    goro::Chan<int> out(1);
    int result = 7, sent = 0, ran = 0;
    bool done = false, timed_out = false;
    auto run = [&](const Job&) { ++ran; };
    jobs.send(Job{1});
    std::size_t i = goro::select(
        goro::recv_case(jobs,
                        [&](std::optional<Job> j) {
                          if (j)
                            run(*j);
                          else
                            done = true;
                        }),
        goro::send_case(out, result, [&] { ++sent; }),
        goro::recv_case(goro::after(std::chrono::milliseconds(1)),
                        [&] { timed_out = true; }),
        goro::default_case([&] { /* nothing ready: do not park */ }));
    EXPECT_TRUE(i == 0 || i == 1);
    EXPECT_EQ(ran + sent, 1);
    EXPECT_FALSE(done);
    // The example's timeout is 1 s; here 1 ms, left to fire before run
    // returns (a timer still armed then is never freed).
    goro::sleep_for(std::chrono::milliseconds(5));
    EXPECT_FALSE(timed_out);
  });
}

struct Msg {
  int v;
};

// docs/sync.md, goro::Selector (and sync/select.h's fan-in example).
TEST(DocsExamples, SyncSelector) {
  goro::run([] {
    std::vector<goro::Chan<Msg>> inputs;
    for (int k = 0; k < 4; ++k) inputs.emplace_back(1);
    int handled = 0;
    auto handle = [&](std::size_t, const std::optional<Msg>& m) {
      if (m) ++handled;
    };
    goro::Selector sel;
    for (std::size_t k = 0; k < inputs.size(); ++k)
      sel.add(goro::recv_case(inputs[k],
                              [&, k](std::optional<Msg> m) { handle(k, m); }));
    for (auto& c : inputs) c.send(Msg{1});
    bool running = true;
    int rounds = 0;
    while (running) {
      sel.select();  // no allocation per select
      running = ++rounds < 4;
    }
    sel.enable(3, false);  // a disabled case behaves like a nil channel
    EXPECT_EQ(handled, 4);
  });
}

// docs/sync.md, "Context" (sync/context.h has the same shape).
TEST(DocsExamples, SyncContext) {
  goro::run([] {
    goro::Chan<int> work(1);
    bool cancelled = false;
    auto handle = [](std::optional<int>) {};
    auto [ctx, cancel] = goro::with_timeout(goro::Context::background(), 2s);
    cancel();  // (here: before the select, so that it returns at once)
    goro::select(goro::recv_case(ctx.done(),
                                 [&] {
                                   cancelled = true; /* ctx.err() says why */
                                 }),
                 goro::recv_case(work, handle));
    EXPECT_TRUE(cancelled);
    EXPECT_TRUE(absl::IsCancelled(ctx.err()));
  });
}

// sync/timer.h: a timeout in select, and a Ticker.
TEST(DocsExamples, TimerHeader) {
  goro::run([] {
    goro::Chan<int> replies(0);
    bool timed_out = false;
    auto use = [](std::optional<int>) {};
    goro::select(goro::recv_case(replies, [&](auto r) { use(r); }),
                 goro::recv_case(goro::after(std::chrono::milliseconds(50)),
                                 [&] { timed_out = true; }));
    EXPECT_TRUE(timed_out);
    int reports = 0;
    goro::Ticker tick(std::chrono::milliseconds(1));
    for (int i = 0; i < 3; ++i) {
      tick.c().recv();
      ++reports;
    }
    EXPECT_EQ(reports, 3);
  });
}

// sync/mutex.h, sync/rw_mutex.h, sync/cond.h, sync/once.h,
// sync/semaphore.h, sync/wait_group.h.
TEST(DocsExamples, SyncPrimitiveHeaders) {
  goro::run([] {
    goro::WaitGroup all;
    // mutex.h
    goro::Mutex mu;
    int counter = 0;
    all.add(1);
    goro::go([&] {
      std::lock_guard<goro::Mutex> l(mu);  // or std::unique_lock, scoped_lock
      ++counter;
      all.done();
    });
    // rw_mutex.h
    goro::RWMutex rw;
    std::vector<int> table = {1};
    {
      std::shared_lock<goro::RWMutex> r(rw);
      EXPECT_EQ(table[0], 1);
    }
    {
      std::lock_guard<goro::RWMutex> w(rw);
      table[0] = 2;
    }
    // cond.h
    goro::Mutex qmu;
    goro::Cond cv;
    std::deque<Job> q;
    all.add(1);
    goro::go([&] {  // consumer
      std::unique_lock<goro::Mutex> l(qmu);
      cv.wait(l, [&] { return !q.empty(); });
      Job j = std::move(q.front());
      q.pop_front();
      EXPECT_EQ(j.id, 5);
      all.done();
    });
    {
      std::lock_guard<goro::Mutex> l(qmu);
      q.push_back(Job{5});
    }  // producer
    cv.signal();
    // once.h
    goro::Once once;
    int* config = nullptr;
    static int loaded = 42;
    auto use = [&] {
      once.call([&] { config = &loaded; });
      EXPECT_EQ(*config, 42);
    };
    use();
    use();
    // semaphore.h
    goro::Semaphore slots(8);  // at most 8 downloads at once
    all.add(1);
    goro::go([&] {
      slots.acquire();
      slots.release();
      all.done();
    });
    // wait_group.h
    goro::WaitGroup wg;
    std::vector<int> items = {1, 2, 3};
    std::atomic<int> processed{0};
    for (auto& item : items) {
      wg.add(1);
      goro::go([&wg, &item, &processed] {
        processed += item;
        wg.done();
      });
    }
    wg.wait();  // parks this fiber until every done() has happened
    EXPECT_EQ(processed.load(), 6);
    all.wait();
    EXPECT_EQ(counter, 1);
  });
}

// runtime/run.h, runtime/go.h, runtime/blocking.h, preempt/no_preempt.h
// (and docs/preemption.md's NoPreempt scope).
TEST(DocsExamples, RuntimeHeaders) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  const int rc = goro::run([&] {
    goro::WaitGroup wg;
    for (int i = 0; i < 10; ++i) {
      wg.add(1);
      goro::go([&wg, i] {
        std::printf("fiber %d\n", i);
        wg.done();
      });
    }
    wg.wait();
    bool parsed = false;
    goro::WaitGroup p;
    p.add(1);
    goro::go({.stack_size = 1 << 20, .name = "parser"}, [&] {
      parsed = goro::this_fiber::name() == "parser";
      p.done();
    });
    p.wait();
    EXPECT_TRUE(parsed);
    char buf[1];
    const int fd = fds[0];
    const std::size_t len = 1;
    ssize_t n = goro::blocking([&] { return ::read(fd, buf, len); });
    EXPECT_EQ(n, 1);
    {
      goro::NoPreempt np;  // nests; belongs to the fiber, not to the thread
    }                      // a preemption requested meanwhile happens here
    return 3;
  });
  EXPECT_EQ(rc, 3);
  ::close(fds[0]);
  ::close(fds[1]);
}

// docs/sync.md, "Channels" (try_recv_status) and "Evaluation order: the
// Cases{...} form" (sync/select.h's header example is the same shape).
TEST(DocsExamples, SyncTryRecvStatusAndOrderedSelect) {
  goro::run([] {
    std::vector<int> seen;
    auto use = [&](int v) { seen.push_back(v); };
    goro::Chan<int> ch(1);
    ch.send(5);
    goro::RecvAttempt<int> r = ch.try_recv_status();  // never parks
    if (r.received())
      use(*r.value);  // else r.empty(): open, nothing yet;
                      //      r.closed(): closed and drained
    EXPECT_EQ(seen, std::vector<int>{5});
    EXPECT_TRUE(ch.try_recv_status().empty());

    std::vector<std::string> calls;
    goro::Chan<int> in(1), out(1);
    in.send(1);
    auto next_input = [&] {
      calls.push_back("next_input");
      return in;
    };
    auto next_output = [&] {
      calls.push_back("next_output");
      return out;
    };
    auto compute = [&] {
      calls.push_back("compute");
      return 2;
    };
    std::optional<int> got;
    int sent = 0;
    bool idle = false;
    std::size_t i = goro::select(goro::Cases{
        goro::RecvCase{next_input(), [&](std::optional<int> v) { got = v; }},
        goro::SendCase{next_output(), compute(), [&] { ++sent; }},
        goro::DefaultCase{[&] { idle = true; }}});
    EXPECT_EQ(calls, (std::vector<std::string>{"next_input", "next_output",
                                               "compute"}));
    EXPECT_LT(i, 2u);  // both ready: either is taken
    EXPECT_FALSE(idle);
    EXPECT_EQ(got.has_value() + sent, 1);
  });
}

}  // namespace
