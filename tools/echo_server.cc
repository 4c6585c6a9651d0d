// Copyright goro authors.
//
// echo_server: a TCP echo server on goro::net, one fiber per connection.
//
//   bazel run //tools:echo_server -- --listen=127.0.0.1:7000 --procs=2
//
// Loopback addresses only. Runs until interrupted (or --duration passes).

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "goro.h"
#include "tools/echo.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7000",
          "Address to listen on (loopback only: 127.x.x.x, [::1] or "
          "localhost).");
ABSL_FLAG(int, procs, 0, "goro procs (0: GORO_MAXPROCS or the CPU count).");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "Stop after this long (0: run until interrupted).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "TCP echo server on goro::net (loopback only).\n"
      "  echo_server --listen=127.0.0.1:7000 --procs=2");
  absl::ParseCommandLine(argc, argv);
  const std::string addr = absl::GetFlag(FLAGS_listen);
  if (!goro_tools::is_loopback(addr)) {
    std::fprintf(stderr, "echo_server: --listen must be a loopback address\n");
    return 2;
  }
  goro::Options o;
  o.procs = absl::GetFlag(FLAGS_procs);
  int rc = 0;
  goro::run(o, [&] {
    absl::StatusOr<goro::net::Listener> ln = goro::net::listen("tcp", addr);
    if (!ln.ok()) {
      std::fprintf(stderr, "echo_server: %s\n",
                   std::string(ln.status().message()).c_str());
      rc = 1;
      return;
    }
    std::printf("echo_server: listening on %s\n", ln->addr().c_str());
    std::fflush(stdout);
    const absl::Duration d = absl::GetFlag(FLAGS_duration);
    if (d > absl::ZeroDuration()) {
      goro::go([ln = *ln, d]() mutable {
        goro::sleep_for(absl::ToChronoNanoseconds(d));
        (void)ln.close();
      });
    }
    goro_tools::serve_echo(*ln);
  });
  return rc;
}
