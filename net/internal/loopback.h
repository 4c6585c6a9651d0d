// Copyright goro authors.
//
// In-process loopback pairs: finding, for a TCP connection whose other end
// is a socket of this same process (a client dialing a server it runs
// itself, as a test, a benchmark or an in-process proxy does), that other
// end's poll descriptor, so that bytes written on one end hand the reader
// of the other off at once, on the writer's P (poll.h, on_written), instead of
// through epoll and whichever P polls next. Internal to net/.
//
// A connection is identified by its two addresses: while both sockets are
// open no other connection on this host has the same pair, and an end sees
// the pair reversed. Each loopback TCP socket made by dial or accept
// registers (local, remote); if the reverse pair is already registered the
// two are linked (poll.h, link_peers) and the entry dropped, else the
// socket's own entry waits for its peer. An entry whose peer is in another
// process is never matched and goes when its socket is destroyed. Unix
// sockets have no such pair of names (a client's end is unnamed) and are
// not linked.
//
// Cost: nothing for connections to other hosts (one check of the remote
// address); for loopback ones, one lock and one hash-map operation at
// creation and one at destruction.

#ifndef GORO_NET_INTERNAL_LOOPBACK_H_
#define GORO_NET_INTERNAL_LOOPBACK_H_

#include <cstdint>
#include <string>

#include "net/internal/poll.h"
#include "net/net.h"

namespace goro::net_internal {

// loopback_register registers pd, a connected TCP socket's descriptor with
// those addresses, if `remote` is a loopback address. Returns the key to
// pass to loopback_forget when the descriptor is closed ("" if nothing was
// registered).
std::string loopback_register(PollDesc* pd, const net::Addr& local,
                              const net::Addr& remote);

// loopback_forget drops pd's entry (if it is still waiting for its peer).
// Call before the descriptor is recycled (pi::close).
void loopback_forget(const std::string& key, PollDesc* pd);

// For tests: connections linked so far.
std::uint64_t loopback_links();

// For tests of the poller (tests/net/netpoll*_test.cc), whose in-process
// pairs would otherwise bypass it: while off, no new pair is linked. On in
// programs.
void loopback_set_linking(bool on);

}  // namespace goro::net_internal

#endif  // GORO_NET_INTERNAL_LOOPBACK_H_
