// Copyright goro authors.
//
// The echo service shared by tools/echo_server and tools/echo_load
// (--serve): one fiber per connection, echoing what it reads. accept's
// temporary errors (EMFILE, ENFILE, ...) are retried after a back-off that
// doubles from 5 ms to 1 s, as Go's http.Server does.

#ifndef GORO_TOOLS_ECHO_H_
#define GORO_TOOLS_ECHO_H_

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "goro.h"

namespace goro_tools {

// Echoes one connection until end of stream or an error.
inline void echo_conn(goro::net::Conn c) {
  char buf[16384];
  for (;;) {
    absl::StatusOr<std::size_t> n = c.read(buf);
    if (!n.ok() || *n == 0) break;
    if (!c.write(std::string_view(buf, *n)).ok()) break;
  }
  (void)c.close();
}

// Accepts until the listener is closed (or a permanent error).
inline void serve_echo(goro::net::Listener ln) {
  std::chrono::milliseconds delay{0};
  for (;;) {
    absl::StatusOr<goro::net::Conn> c = ln.accept();
    if (!c.ok()) {
      if (goro::net::is_closed(c.status())) return;
      if (goro::net::is_temporary(c.status())) {
        delay = delay.count() == 0 ? std::chrono::milliseconds(5)
                                   : std::min<std::chrono::milliseconds>(
                                         delay * 2, std::chrono::seconds(1));
        std::fprintf(stderr, "echo: accept: %s; retrying in %lld ms\n",
                     std::string(c.status().message()).c_str(),
                     static_cast<long long>(delay.count()));
        goro::sleep_for(delay);
        continue;
      }
      std::fprintf(stderr, "echo: accept: %s\n",
                   std::string(c.status().message()).c_str());
      return;
    }
    delay = std::chrono::milliseconds(0);
    goro::go([c = *c] { echo_conn(c); });
  }
}

// Loopback only: these tools are load generators, not for other hosts.
inline bool is_loopback(std::string_view addr) {
  return addr.rfind("127.", 0) == 0 || addr.rfind("[::1]:", 0) == 0 ||
         addr.rfind("localhost:", 0) == 0;
}

}  // namespace goro_tools

#endif  // GORO_TOOLS_ECHO_H_
