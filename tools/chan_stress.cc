// Copyright goro authors.
//
// chan_stress: a stress test of goro's channels and select, with exact
// accounting of every message.
//
// Topology (N = --channels):
//   producers --send--> a[0..N) --+--> consumers (select over a[*] and b[*])
//                                 |
//                                 +--> selectors --send--> b[0..N)
// Producer p sends on a[p % N]; each message carries (producer, sequence).
// Selectors hold up to --selector_hold messages and, in one select, both
// receive from every a[i] and send their oldest message to every b[i]
// (so a selector fiber is parked on send and receive queues at once).
// Consumers receive from every a[i] and b[i] through a goro::Selector.
//
// Shutdown: when producers finish (message count or --duration reached),
// a[*] are closed; selectors drain them and exit; then b[*] are closed;
// consumers exit when every channel is closed and drained. With
// --close_early, a closer fiber closes a[*] while producers are still
// sending: a producer whose send throws goro::ChanClosed counts that message
// as not sent and stops.
//
// Checks: every message sent was received exactly once (lost, duplicated);
// per-producer FIFO at each consumer for messages that came straight from
// a[*] (a selector may reorder); every fiber finished (a watchdog thread
// reports a hang when nothing moves for --hang_timeout, and exits 2).
// Prints a progress line each second, then
//   sent N received N lost 0 duplicated 0
// Exit status: 0 on success, 1 on loss/duplicate/order violation, 2 on hang.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "goro.h"

ABSL_FLAG(int, producers, 4,
          "Producer fibers; producer p sends on a[p % channels].");
ABSL_FLAG(int, consumers, 4,
          "Consumer fibers; each receives from every channel through one "
          "goro::Selector (fan-in).");
ABSL_FLAG(int, selectors, 2,
          "Selector fibers: each selects over receives from every a[i] and a "
          "send of its oldest held message to every b[i], in one select. 0 "
          "disables the b[*] stage.");
ABSL_FLAG(int, selector_hold, 4,
          "Messages a selector may hold before it stops receiving.");
ABSL_FLAG(int, channels, 2, "Channels per stage (a[*] and b[*]).");
ABSL_FLAG(int64_t, capacity, 0, "Capacity of every channel (0 = unbuffered).");
ABSL_FLAG(int64_t, messages, 1000000,
          "Messages per producer (ignored when --duration is set).");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "Run for this long instead of a message count (e.g. 30s, 10m).");
ABSL_FLAG(int, procs, 0, "goro procs (0: GORO_MAXPROCS or the CPU count).");
ABSL_FLAG(absl::Duration, time_slice, absl::Milliseconds(10),
          "goro time slice (100us to 10s): how long a fiber runs before "
          "preemption.");
ABSL_FLAG(bool, close_early, false,
          "Close a[*] while producers are still sending (once about half the "
          "messages, or half the duration, are done); producers stop at their "
          "first goro::ChanClosed.");
ABSL_FLAG(absl::Duration, hang_timeout, absl::Seconds(10),
          "Report a hang (exit 2) when no message moves for this long.");
ABSL_FLAG(bool, quiet, false, "No per-second progress lines.");

namespace {

struct Msg {
  std::uint32_t producer;
  std::uint32_t hops;  // 1 if it went through a selector
  std::uint64_t seq;
};

// Per-producer receive counters, in lazily allocated segments so that
// --duration runs need no upper bound.
class Counters {
 public:
  static constexpr std::uint64_t kSeg = 1 << 20;
  static constexpr std::uint64_t kMaxSegs = 1 << 14;
  Counters() : segs_(new std::atomic<std::atomic<std::uint8_t>*>[kMaxSegs]) {
    for (std::uint64_t i = 0; i < kMaxSegs; ++i) segs_[i] = nullptr;
  }
  ~Counters() {
    for (std::uint64_t i = 0; i < kMaxSegs; ++i) delete[] segs_[i].load();
  }
  // Producer side, before sending `seq`: returns false when out of room.
  bool reserve(std::uint64_t seq) {
    const std::uint64_t s = seq / kSeg;
    if (s >= kMaxSegs) return false;
    if (segs_[s].load(std::memory_order_acquire) == nullptr) {
      auto* p = new std::atomic<std::uint8_t>[kSeg];
      for (std::uint64_t i = 0; i < kSeg; ++i)
        p[i].store(0, std::memory_order_relaxed);
      segs_[s].store(p, std::memory_order_release);
    }
    return true;
  }
  // Consumer side: returns the previous count, or -1 for an impossible seq.
  int bump(std::uint64_t seq) {
    const std::uint64_t s = seq / kSeg;
    if (s >= kMaxSegs) return -1;
    std::atomic<std::uint8_t>* p = segs_[s].load(std::memory_order_acquire);
    if (p == nullptr) return -1;
    std::uint8_t old = p[seq % kSeg].load(std::memory_order_relaxed);
    while (!p[seq % kSeg].compare_exchange_weak(old, old == 255 ? 255 : old + 1,
                                                std::memory_order_relaxed)) {
    }
    return old;
  }
  int get(std::uint64_t seq) const {
    if (seq / kSeg >= kMaxSegs) return 0;
    std::atomic<std::uint8_t>* p =
        segs_[seq / kSeg].load(std::memory_order_acquire);
    return p == nullptr ? 0 : p[seq % kSeg].load(std::memory_order_relaxed);
  }

 private:
  std::unique_ptr<std::atomic<std::atomic<std::uint8_t>*>[]> segs_;
};

struct State {
  int producers, consumers, selectors, channels, hold;
  std::uint64_t per_producer;  // 0: duration mode
  bool close_early;
  std::vector<goro::Chan<Msg>> a, b;
  std::vector<Counters> counts;
  std::vector<std::uint64_t> sent_by;  // written by each producer at its end
  std::atomic<std::uint64_t> sent{0}, received{0}, forwarded{0};
  std::atomic<std::uint64_t> order_violations{0}, impossible{0};
  std::atomic<bool> stop{false};
  std::atomic<int> live_producers{0}, live_selectors{0}, live_consumers{0};
  std::atomic<bool> finished{false};
  std::atomic<bool> a_closed{false};
  goro::WaitGroup all;
};

void close_a(State& st) {
  if (st.a_closed.exchange(true)) return;
  for (auto& c : st.a) c.close();
}

void producer(State& st, int p) {
  goro::Chan<Msg> ch = st.a[p % st.channels];
  std::uint64_t seq = 0;
  try {
    for (;; ++seq) {
      if (st.per_producer != 0 ? seq >= st.per_producer
                               : st.stop.load(std::memory_order_relaxed)) {
        break;
      }
      if (!st.counts[p].reserve(seq)) break;
      ch.send(Msg{static_cast<std::uint32_t>(p), 0, seq});
      st.sent.fetch_add(1, std::memory_order_relaxed);
    }
  } catch (const goro::ChanClosed&) {
    // Closed under us (--close_early): message `seq` was not delivered.
  }
  st.sent_by[p] = seq;
}

void selector(State& st) {
  const int n = st.channels;
  std::deque<Msg> held;
  std::vector<bool> a_open(n, true);
  int open = n;
  goro::Selector sel;
  std::vector<std::size_t> recv_idx(n), send_idx(n);
  for (int i = 0; i < n; ++i) {
    recv_idx[i] =
        sel.add(goro::recv_case(st.a[i], [&, i](std::optional<Msg> m) {
          if (!m) {
            a_open[i] = false;
            --open;
            return;
          }
          held.push_back(*m);
        }));
  }
  for (int i = 0; i < n; ++i) {
    send_idx[i] = sel.add(goro::send_case(st.b[i], Msg{}, [&] {
      held.pop_front();
      st.forwarded.fetch_add(1, std::memory_order_relaxed);
    }));
  }
  while (open > 0 || !held.empty()) {
    const bool can_recv = static_cast<int>(held.size()) < st.hold;
    for (int i = 0; i < n; ++i) sel.enable(recv_idx[i], can_recv && a_open[i]);
    for (int i = 0; i < n; ++i) {
      sel.enable(send_idx[i], !held.empty());
      if (!held.empty()) {
        Msg m = held.front();
        m.hops = 1;
        sel.set_send_value(send_idx[i], m);
      }
    }
    sel.select();
  }
}

void consumer(State& st) {
  std::vector<std::uint64_t> next_direct(st.producers, 0);  // FIFO check
  std::vector<bool> have(st.producers, false);
  int open = 0;
  goro::Selector sel;
  std::vector<std::size_t> idx;
  auto on_msg = [&](std::optional<Msg> m, std::size_t my_index) {
    if (!m) {
      sel.enable(my_index, false);
      --open;
      return;
    }
    if (m->producer >= static_cast<std::uint32_t>(st.producers)) {
      st.impossible.fetch_add(1);
      return;
    }
    int prev = st.counts[m->producer].bump(m->seq);
    if (prev < 0) st.impossible.fetch_add(1);
    if (m->hops == 0) {
      if (have[m->producer] && m->seq < next_direct[m->producer]) {
        st.order_violations.fetch_add(1);
      }
      have[m->producer] = true;
      next_direct[m->producer] = m->seq + 1;
    }
    st.received.fetch_add(1, std::memory_order_relaxed);
  };
  auto add = [&](goro::Chan<Msg>& c) {
    std::size_t k = sel.size();
    sel.add(goro::recv_case(c, [&, k](std::optional<Msg> m) { on_msg(m, k); }));
    ++open;
  };
  for (auto& c : st.a) add(c);
  if (st.selectors > 0) {
    for (auto& c : st.b) add(c);
  }
  while (open > 0) sel.select();
}

int run_stress() {
  State st;
  st.producers = std::max(1, absl::GetFlag(FLAGS_producers));
  st.consumers = std::max(1, absl::GetFlag(FLAGS_consumers));
  st.selectors = std::max(0, absl::GetFlag(FLAGS_selectors));
  st.channels = std::max(1, absl::GetFlag(FLAGS_channels));
  st.hold = std::max(1, absl::GetFlag(FLAGS_selector_hold));
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  st.per_producer = duration > absl::ZeroDuration()
                        ? 0
                        : static_cast<std::uint64_t>(std::max<std::int64_t>(
                              0, absl::GetFlag(FLAGS_messages)));
  st.close_early = absl::GetFlag(FLAGS_close_early);
  st.counts = std::vector<Counters>(st.producers);
  st.sent_by.assign(st.producers, 0);
  const std::int64_t cap = absl::GetFlag(FLAGS_capacity);

  goro::Options opts;
  opts.procs = absl::GetFlag(FLAGS_procs);
  opts.time_slice = std::chrono::microseconds(
      absl::ToInt64Microseconds(absl::GetFlag(FLAGS_time_slice)));
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const absl::Duration hang_timeout = absl::GetFlag(FLAGS_hang_timeout);

  std::printf(
      "chan_stress: producers %d consumers %d selectors %d channels %d "
      "capacity %" PRId64 " %s procs %d time_slice %s%s\n",
      st.producers, st.consumers, st.selectors, st.channels, cap,
      duration > absl::ZeroDuration()
          ? ("duration " + absl::FormatDuration(duration)).c_str()
          : ("messages/producer " + std::to_string(st.per_producer)).c_str(),
      opts.procs, absl::FormatDuration(absl::GetFlag(FLAGS_time_slice)).c_str(),
      st.close_early ? " close_early" : "");
  std::fflush(stdout);

  // Watchdog and progress, on a plain thread so that it works even if the
  // runtime wedges.
  const auto t0 = std::chrono::steady_clock::now();
  std::thread watchdog([&] {
    std::uint64_t last_moved = 0;
    auto last_change = std::chrono::steady_clock::now();
    while (!st.finished.load()) {
      for (int i = 0; i < 10 && !st.finished.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (st.finished.load()) break;
      const auto now = std::chrono::steady_clock::now();
      const std::uint64_t s = st.sent.load(), r = st.received.load(),
                          f = st.forwarded.load();
      const std::uint64_t moved = s + r + f;
      if (!quiet) {
        std::printf("[%6.1fs] sent %" PRIu64 " received %" PRIu64
                    " forwarded %" PRIu64
                    " live: producers %d selectors %d consumers %d\n",
                    std::chrono::duration<double>(now - t0).count(), s, r, f,
                    st.live_producers.load(), st.live_selectors.load(),
                    st.live_consumers.load());
        std::fflush(stdout);
      }
      if (moved != last_moved) {
        last_moved = moved;
        last_change = now;
      } else if (now - last_change > absl::ToChronoNanoseconds(hang_timeout)) {
        std::printf("HANG: nothing moved for %s; sent %" PRIu64
                    " received %" PRIu64
                    "; still running: producers %d selectors %d consumers %d\n",
                    absl::FormatDuration(hang_timeout).c_str(), s, r,
                    st.live_producers.load(), st.live_selectors.load(),
                    st.live_consumers.load());
        std::fflush(stdout);
        _exit(2);
      }
    }
  });

  goro::run(opts, [&] {
    st.a.reserve(st.channels);
    for (int i = 0; i < st.channels; ++i) st.a.emplace_back(cap);
    if (st.selectors > 0) {
      for (int i = 0; i < st.channels; ++i) st.b.emplace_back(cap);
    }
    goro::WaitGroup producers_done, selectors_done, consumers_done;
    producers_done.add(st.producers);
    selectors_done.add(st.selectors);
    consumers_done.add(st.consumers);
    st.live_producers = st.producers;
    st.live_selectors = st.selectors;
    st.live_consumers = st.consumers;
    for (int c = 0; c < st.consumers; ++c) {
      goro::go([&] {
        consumer(st);
        st.live_consumers.fetch_sub(1);
        consumers_done.done();
      });
    }
    for (int s = 0; s < st.selectors; ++s) {
      goro::go([&] {
        selector(st);
        st.live_selectors.fetch_sub(1);
        selectors_done.done();
      });
    }
    for (int p = 0; p < st.producers; ++p) {
      goro::go([&, p] {
        producer(st, p);
        st.live_producers.fetch_sub(1);
        producers_done.done();
      });
    }
    if (duration > absl::ZeroDuration()) {
      const auto d = absl::ToChronoNanoseconds(duration);
      if (st.close_early) {
        goro::sleep_for(d / 2);
        close_a(st);
      } else {
        goro::sleep_for(d);
      }
      st.stop = true;
    } else if (st.close_early) {
      const std::uint64_t half = st.per_producer * st.producers / 2;
      while (st.sent.load(std::memory_order_relaxed) < half &&
             st.live_producers.load() > 0) {
        goro::sleep_for(std::chrono::microseconds(200));
      }
      close_a(st);
    }
    producers_done.wait();
    close_a(st);
    selectors_done.wait();
    for (auto& c : st.b) c.close();
    consumers_done.wait();
  });
  const auto t_end = std::chrono::steady_clock::now();
  st.finished = true;
  watchdog.join();

  // Accounting.
  std::uint64_t sent = 0, lost = 0, dup = 0;
  for (int p = 0; p < st.producers; ++p) {
    sent += st.sent_by[p];
    for (std::uint64_t s = 0; s < st.sent_by[p]; ++s) {
      const int c = st.counts[p].get(s);
      if (c == 0) ++lost;
      if (c > 1) dup += c - 1;
    }
    // The send that threw (--close_early) must not have been delivered.
    dup += st.counts[p].get(st.sent_by[p]);
  }
  const std::uint64_t received = st.received.load();
  const double secs = std::chrono::duration<double>(t_end - t0).count();
  std::printf("elapsed %.2fs (%.0f msg/s), forwarded by selectors %" PRIu64
              ", fifo violations %" PRIu64 ", impossible messages %" PRIu64
              "\n",
              secs, received / secs, st.forwarded.load(),
              st.order_violations.load(), st.impossible.load());
  std::printf("sent %" PRIu64 " received %" PRIu64 " lost %" PRIu64
              " duplicated %" PRIu64 "\n",
              sent, received, lost, dup);
  const bool ok = lost == 0 && dup == 0 && received == sent &&
                  st.order_violations.load() == 0 && st.impossible.load() == 0;
  if (!ok) std::printf("FAIL\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Stress test of goro channels and select with exact accounting.\n"
      "Producers send (producer, sequence) messages on channels a[*]; "
      "selector\n"
      "fibers receive from a[*] and send to b[*] within one select; consumers\n"
      "fan in from every channel. Checks that every message sent is received\n"
      "exactly once, per-producer FIFO on direct paths, and that no fiber is\n"
      "left parked (a watchdog reports hangs). Ends with\n"
      "  sent N received N lost 0 duplicated 0\n"
      "Exit status: 0 ok, 1 loss/duplicate/order violation, 2 hang.\n"
      "Example: chan_stress --producers=8 --consumers=8 --selectors=4 "
      "--capacity=0 --duration=60s --procs=2 --close_early");
  absl::ParseCommandLine(argc, argv);
  return run_stress();
}
