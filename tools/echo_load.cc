// Copyright goro authors.
//
// echo_load: a load generator for an echo server: --conns connections,
// each doing --size-byte request/response round trips back to back, every
// echoed byte checked. Prints round trips per second and the latency
// quantiles of the round trips.
//
//   bazel run //tools:echo_load -- --addr=127.0.0.1:7000 --conns=64 --size=64
//   bazel run //tools:echo_load -- --serve --procs=2   # server in-process
//
// With --serve, a goro echo server (tools/echo.h) runs in the same process
// and runtime: the benchmark of bench/README.md ("Echo"). Loopback only;
// bounded (at most 20,000 connections and 120 s).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "goro.h"
#include "tools/echo.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:7000",
          "Echo server address (loopback only); ignored with --serve.");
ABSL_FLAG(bool, serve, false,
          "Run a goro echo server in this process and load it.");
ABSL_FLAG(int, conns, 64, "Concurrent connections.");
ABSL_FLAG(int, size, 64, "Bytes per request (echoed back).");
ABSL_FLAG(int64_t, rounds, 0,
          "Round trips per connection (0: run for --duration).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5),
          "How long to run when --rounds is 0.");
ABSL_FLAG(absl::Duration, warmup, absl::Milliseconds(500),
          "Round trips in this first period are not counted.");
ABSL_FLAG(int, procs, 2, "goro procs (0: GORO_MAXPROCS or the CPU count).");

namespace {

using Clock = std::chrono::steady_clock;

double quantile_us(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return 0;
  std::size_t i = static_cast<std::size_t>(q * static_cast<double>(v.size()));
  if (i >= v.size()) i = v.size() - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i),
                   v.end());
  return static_cast<double>(v[i]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Load an echo server with request/response round trips (loopback "
      "only).\n  echo_load --addr=127.0.0.1:7000 --conns=64 --size=64 "
      "--duration=5s\n  echo_load --serve --procs=2");
  absl::ParseCommandLine(argc, argv);
  const int conns = absl::GetFlag(FLAGS_conns);
  const int size = absl::GetFlag(FLAGS_size);
  const std::int64_t rounds = absl::GetFlag(FLAGS_rounds);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const bool serve = absl::GetFlag(FLAGS_serve);
  std::string addr = absl::GetFlag(FLAGS_addr);
  if (conns < 1 || conns > 20000 || size < 1 || size > (1 << 20) ||
      rounds < 0 || duration > absl::Seconds(120)) {
    std::fprintf(stderr,
                 "echo_load: --conns in [1, 20000], --size in [1, 1 MiB], "
                 "--duration at most 120 s\n");
    return 2;
  }
  if (!serve && !goro_tools::is_loopback(addr)) {
    std::fprintf(stderr, "echo_load: --addr must be a loopback address\n");
    return 2;
  }
  goro::Options o;
  o.procs = absl::GetFlag(FLAGS_procs);
  int rc = 0;
  goro::run(o, [&] {
    goro::net::Listener ln;
    if (serve) {
      absl::StatusOr<goro::net::Listener> l =
          goro::net::listen("tcp", "127.0.0.1:0");
      if (!l.ok()) {
        std::fprintf(stderr, "echo_load: %s\n",
                     std::string(l.status().message()).c_str());
        rc = 1;
        return;
      }
      ln = *l;
      addr = ln.addr();
      goro::go([ln] { goro_tools::serve_echo(ln); });
    }
    std::vector<goro::net::Conn> cs(static_cast<std::size_t>(conns));
    for (int i = 0; i < conns; ++i) {
      absl::StatusOr<goro::net::Conn> c = goro::net::dial("tcp", addr);
      if (!c.ok()) {
        std::fprintf(stderr, "echo_load: %s\n",
                     std::string(c.status().message()).c_str());
        rc = 1;
        return;
      }
      cs[static_cast<std::size_t>(i)] = *c;
    }
    std::atomic<bool> stop{false}, counting{rounds > 0};
    std::atomic<std::int64_t> bad{0}, errors{0};
    std::vector<std::vector<std::int64_t>> lat(static_cast<std::size_t>(conns));
    goro::WaitGroup wg;
    wg.add(conns);
    for (int i = 0; i < conns; ++i) {
      goro::go([&, i] {
        goro::net::Conn& c = cs[static_cast<std::size_t>(i)];
        std::vector<std::int64_t>& mine = lat[static_cast<std::size_t>(i)];
        mine.reserve(rounds > 0 ? static_cast<std::size_t>(rounds) : 1 << 16);
        std::string req(static_cast<std::size_t>(size), '\0');
        std::string resp(static_cast<std::size_t>(size), '\0');
        for (std::int64_t r = 0; rounds == 0 || r < rounds; ++r) {
          if (stop.load(std::memory_order_relaxed)) break;
          for (int k = 0; k < size; ++k) {
            req[static_cast<std::size_t>(k)] =
                static_cast<char>((i * 31 + r * 7 + k) & 0xff);
          }
          const auto t0 = Clock::now();
          goro::net::IoResult w = c.write(req);
          goro::net::IoResult rd =
              w.ok() ? c.read_full(std::span<char>(resp.data(), resp.size()))
                     : w;
          const auto t1 = Clock::now();
          if (!rd.ok()) {
            std::fprintf(stderr, "echo_load: conn %d: %s\n", i,
                         std::string(rd.status.message()).c_str());
            errors.fetch_add(1);
            break;
          }
          if (std::memcmp(req.data(), resp.data(), req.size()) != 0) {
            bad.fetch_add(1);
          }
          if (counting.load(std::memory_order_relaxed)) {
            mine.push_back(
                std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0)
                    .count());
          }
        }
        (void)c.close();
        wg.done();
      });
    }
    Clock::time_point start = Clock::now();
    if (rounds == 0) {
      goro::sleep_for(absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_warmup)));
      counting = true;
      start = Clock::now();
      goro::sleep_for(absl::ToChronoNanoseconds(duration));
      stop = true;
    }
    wg.wait();
    const double secs =
        std::chrono::duration<double>(Clock::now() - start).count();
    std::vector<std::int64_t> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    const double n = static_cast<double>(all.size());
    std::printf(
        "echo_load: conns=%d size=%d procs=%d round_trips=%.0f "
        "rt_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f bad=%lld "
        "errors=%lld\n",
        conns, size, o.procs, n, n / secs, quantile_us(all, 0.5),
        quantile_us(all, 0.99), quantile_us(all, 0.999),
        static_cast<long long>(bad.load()),
        static_cast<long long>(errors.load()));
    if (bad.load() != 0 || errors.load() != 0) rc = 1;
    if (serve) (void)ln.close();
  });
  return rc;
}
