// Copyright goro authors.
//
// The netpoller: one edge-triggered epoll instance per runtime and a poll
// descriptor per socket (Go's runtime/netpoll.go and netpoll_epoll.go).
// Internal to net/; net.cc is its only user.
//
// A socket's fd is registered once, for its lifetime, with
// EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET: steady-state I/O makes no epoll_ctl
// call. Every operation tries its system call first and waits (wait())
// only on EAGAIN; the wait ends when epoll reports the direction ready,
// when its deadline passes, or when the socket is closed (evict()).
//
// The wait slots (PollDesc::rg, wg) are Go's pdNil / pdReady / pdWait / G:
//   kNil    nobody waits, no readiness recorded
//   kReady  readiness arrived while nobody waited: the next wait returns at
//           once (and the caller retries its system call)
//   kWait   a fiber is about to park (set by the waiter itself)
//   Fiber*  that fiber is parked (set by the park commit, CAS kWait -> it)
// Transitions (each a CAS; the one that moves a Fiber* out owns its ready):
//   waiter:  kReady -> kNil (consume), kNil -> kWait, then in the park
//            commit kWait -> Fiber*; after the park it exchanges the slot
//            back to kNil
//   poller:  kNil|kWait -> kReady, Fiber* -> kReady (and readies it)
//   closer, deadline: kWait|Fiber* -> kNil (and readies it)
// No lost wake-up between EAGAIN and the park: readiness that arrives after
// the failed system call finds kNil (-> kReady: the waiter's CAS
// kNil -> kWait fails and it retries at once), kWait (-> kReady: the
// commit's CAS fails, the fiber is not parked) or the Fiber* (readied).
// Closing and deadlines are the other direction of the same race: the
// closer stores `closing` (or rd = -1) and then loads the slot; the waiter
// stores kWait and then loads `closing`/rd. Both pairs are seq_cst (a
// store-load Dekker pattern), so at least one side sees the other: the
// waiter does not park, or the closer finds it to wake.
//
// Memory ordering, summarised: every slot CAS is acq_rel or stronger, so
// what the waker wrote before its CAS is visible to the waiter after its
// own; `closing`, rd, wd and the slot loads in the two Dekker pairs are
// seq_cst. ready() adds its own release/acquire for the resumed fiber.
//
// Descriptors come from a type-stable pool: a PollDesc is never freed, only
// recycled, so a late event or timer for a closed socket touches valid
// memory. The epoll data word is the descriptor's address with its
// sequence number (bumped on each recycle) in the top 16 bits; the poller
// drops an event whose number is stale. A stale event that races the check
// can at worst mark a recycled descriptor ready spuriously, which its next
// user survives (it retries its system call and waits again).
//
// Locks: PollDesc::lock (a runtime Mutex, so async preemption is off while
// it is held) guards the deadlines' timers and the descriptor's life
// (init/recycle); the pool's lock guards its free list. Neither is held
// across a park or a system call except the non-blocking epoll_ctl at
// registration.

#ifndef GORO_NET_INTERNAL_POLL_H_
#define GORO_NET_INTERNAL_POLL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/internal/mutex.h"
#include "runtime/internal/park.h"

namespace goro::net_internal {

inline constexpr std::uintptr_t kNil = 0;
inline constexpr std::uintptr_t kReady = 1;
inline constexpr std::uintptr_t kWait = 2;

enum class Mode { kRead, kWrite };

// What a wait ended with.
enum class PollErr {
  kNone,      // the direction may be ready: retry the system call
  kClosing,   // the socket was closed by this program
  kTimeout,   // the direction's deadline passed
  kNoRuntime  // the socket's runtime has ended (or none runs)
};

struct alignas(64) PollDesc {
  // Wait slots, see the top of this file.
  std::atomic<std::uintptr_t> rg{kNil};
  std::atomic<std::uintptr_t> wg{kNil};
  // Set once by evict (seq_cst, see the top); cleared when recycled.
  std::atomic<bool> closing{false};
  // Deadlines, CLOCK_MONOTONIC ns: 0 none, > 0 pending, -1 passed. Written
  // under `lock` (and by the timers, under it too); read by waiters without
  // it (seq_cst, see the top).
  std::atomic<std::int64_t> rd{0};
  std::atomic<std::int64_t> wd{0};
  // Bumped (under `lock`) when the descriptor is recycled; read by the
  // poller without the lock. Its low 16 bits ride in the epoll data word.
  std::atomic<std::uint32_t> seq{0};

  // The descriptor of this socket's other end when both ends are in this
  // process (loopback.h), or null; peer_seq is the peer's seq when linked,
  // so a peer recycled since no longer matches. Written by link_peers
  // (peer_seq first, then peer, seq_cst) and close; read by on_written and
  // the poller (acquire).
  std::atomic<PollDesc*> peer{nullptr};
  std::atomic<std::uint32_t> peer_seq{0};
  // Bytes written on this socket by Conn::write, and read from it by
  // Conn::read, since it was opened (each has one writer at a time: the
  // Conn's write or read lock). The poller compares an end's `received`
  // with its peer's `sent` to drop stale events (on_written).
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> received{0};

  runtime_internal::Mutex lock;
  int fd = -1;                    // guarded by lock (stable while in use)
  std::uint64_t epoch = 0;        // the runtime it is registered with; likewise
  runtime_internal::Timer rt;     // read deadline; guarded by lock
  runtime_internal::Timer wt;     // write deadline; guarded by lock
  PollDesc* next_free = nullptr;  // the pool's free list (its lock)
};

// open registers fd (non-blocking) with the current runtime's epoll
// instance, creating the instance on first use. kFailedPrecondition when no
// runtime runs; errno failures as absl::ErrnoToStatus.
absl::StatusOr<PollDesc*> open(int fd);
// close recycles pd (it must be evicted and no operation may use it any
// more). Does not close the fd.
void close(PollDesc* pd);
// evict marks pd closing and wakes both waiters (they return kClosing).
void evict(PollDesc* pd);

// link_peers records that a and b are the two ends of one connection
// (both open; loopback.cc, under its lock): a just made, not yet returned to
// its user; b possibly in use. After it, bytes written on either are handed
// off to the other's reader (on_written).
void link_peers(PollDesc* a, PollDesc* b);

// on_written is called after n > 0 bytes were written on pd's socket;
// on_read after n > 0 bytes were read from it.
//
// The hand-off. If the socket's other end is in this process and a fiber is
// parked reading it, on_written readies that reader now, as the poller
// would once epoll reported the bytes -- without waiting for a poll, and on
// the writer's P, so that a connection's two fibers stay on one CPU. It runs
// next (runnext) for one round trip per turn (two behind a long ring), then
// behind the fibers queued on this P (ready_handoff, park.h). A reader about to
// park, or still running, finds readiness recorded instead (the poller's
// kReady). It is a hint: a reader woken before the bytes reach its queue (the
// kernel delivers loopback bytes within the sender's system call, unless it
// defers them to ksoftirqd) retries its read, finds nothing, and waits for
// epoll's event.
//
// Stale events. epoll still reports those bytes, later, to whoever polls;
// the reader may be parked again by then, waiting for the next message, and
// waking it would cost a read that finds nothing and a park. So the poller
// drops an EPOLLIN event (without EPOLLRDHUP, EPOLLHUP or EPOLLERR) of a
// linked end whose `received` equals its peer's `sent`: every byte the peer
// wrote has been read. Never a lost wake-up: bytes the poller does not count
// yet (the writer has not added them) are followed by the writer's own
// hand-off, which comes after its addition and is never skipped while the
// peer is open. (Bytes written on the fd other than through Conn::write
// would not be counted; goro::net gives no access to the fd.)
//
// Cost: a load and a store each; with a peer, the hand-off's CAS.
void on_written(PollDesc* pd, std::size_t n);
inline void on_read(PollDesc* pd, std::size_t n) {
  pd->received.store(pd->received.load(std::memory_order_relaxed) + n,
                     std::memory_order_relaxed);
}

// check returns why an operation in `mode` may not proceed (kNone if it
// may): closed, deadline passed, or the runtime gone.
PollErr check(PollDesc* pd, Mode mode);

// wait blocks the caller until `mode` may be ready (kNone), or returns the
// reason it may not proceed. A fiber parks; a plain thread (or a fiber
// inside goro::blocking) sleeps in poll(2) on the fd, in slices of at most
// kThreadPollSlice so that a close or deadline is noticed.
PollErr wait(PollDesc* pd, Mode mode);
inline constexpr std::int64_t kThreadPollSlice = 20'000'000;  // 20 ms

// set_deadline sets the read and/or write deadline (0: none; in the past:
// expired now, waking a parked waiter). Absolute CLOCK_MONOTONIC ns.
void set_deadline(PollDesc* pd, std::int64_t when, bool read, bool write);

// Hooks for the scheduler (runtime/internal/scheduler.h, Hooks): installed
// by a static initializer in poll.cc.
int netpoll(std::int64_t until_ns, runtime_internal::Fiber** out, int cap);

// For tests only: when set, wait() calls it on a fiber's way to park, after
// the fiber found the slot empty and just before it stores kWait -- the
// window in which a close or an expiry finds nobody to wake, so the waiter
// must see it in its re-check (tests/net/netpoll_test.cc forces a close
// there). Null in programs; one relaxed load per park.
extern std::atomic<void (*)(PollDesc* pd, Mode mode)> g_test_before_wait;

// Statistics for tests: epoll_ctl calls made so far (registrations).
std::uint64_t epoll_ctl_calls();

}  // namespace goro::net_internal

#endif  // GORO_NET_INTERNAL_POLL_H_
