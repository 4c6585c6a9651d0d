// Copyright goro authors.
//
// goro::trace::start/stop (diag/trace.h) and GORO_TRACE: a trace session's
// life. start opens the file, maps the rings, writes the kInit snapshot,
// starts the writer thread and publishes the session (runtime/internal/
// trace.h); stop unpublishes it, waits until no producer is inside a ring
// (T2 there), lets the writer finish the file and frees the rings.
//
// A session never outlives its runtime: start holds the runtime (SchedUse)
// while it starts one, and run's end (trace_on_run_end, before any M stops)
// stops it and marks the runtime's epoch closed, so a start racing with it
// fails instead of starting a session nobody would stop.

#include "diag/trace.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "diag/internal/diag.h"
#include "diag/internal/trace_writer.h"
#include "runtime/blocking.h"
#include "runtime/internal/scheduler_internal.h"
#include "runtime/internal/trace.h"

namespace goro::diag_internal {

using runtime_internal::Fiber;
using runtime_internal::FiberState;
using runtime_internal::M;
using runtime_internal::MutexLock;
using runtime_internal::Sched;
using runtime_internal::TraceEvent;
using runtime_internal::TraceSession;
using runtime_internal::TraceType;

namespace {

struct Active {
  Sched* sched = nullptr;
  TraceSession* session = nullptr;
  std::unique_ptr<TraceWriter> writer;
  int fd = -1;
  void* slots = nullptr;  // the rings' storage (one mapping)
  std::size_t slots_bytes = 0;
  bool from_env = false;
  std::string path;
};

// Guards the members below: start, stop and run's end take it.
std::mutex g_mu;
Active* g_active = nullptr;
// The epoch (Sched::epoch) of the runtime whose end closed tracing.
std::uint64_t g_closed_epoch = 0;
std::uint32_t g_seq = 0;  // sessions started in this process

constexpr std::size_t kMinBufferEvents = 16;
constexpr std::size_t kMaxBufferEvents = std::size_t{1} << 24;
constexpr std::size_t kMinMaxBytes = std::size_t{64} << 10;

// The counters at the start: fibers runnable, running on a P, and inside
// blocking(). Read without stopping anything.
TraceEvent snapshot(Sched* s, std::uint64_t tsc) {
  std::uint64_t runnable = 0;
  std::uint32_t running = 0;
  std::uint16_t blocking = 0;
  {
    MutexLock l(&s->free_lock);
    for (const Fiber* f = s->all_fibers; f != nullptr; f = f->all_next) {
      if (f->state.load(std::memory_order_relaxed) == FiberState::kRunnable) {
        ++runnable;
      }
    }
  }
  {
    MutexLock l(&s->lock);
    for (const auto& m : s->ms) {
      const int b = m->blocking_state.load(std::memory_order_relaxed);
      if (b == M::kInCall) {
        ++blocking;
      } else if (b == M::kNone && m->curg() != nullptr) {
        ++running;
      }
    }
  }
  TraceEvent e;
  e.tsc = tsc;
  e.type = TraceType::kInit;
  e.arg = runnable;
  e.aux32 = running;
  e.aux16 = blocking;
  return e;
}

absl::Status start_locked(Sched* s, const std::string& path,
                          const trace::Options& o, bool from_env) {
  const std::size_t n = o.buffer_events;
  if (n < kMinBufferEvents || n > kMaxBufferEvents || (n & (n - 1)) != 0) {
    return absl::InvalidArgumentError(
        "goro::trace::start: Options::buffer_events must be a power of two "
        "from 16 to 16777216, not " +
        std::to_string(n));
  }
  if (o.max_bytes < kMinMaxBytes) {
    return absl::InvalidArgumentError(
        "goro::trace::start: Options::max_bytes must be at least 65536, not " +
        std::to_string(o.max_bytes));
  }
  if (g_active != nullptr) {
    return absl::FailedPreconditionError(
        "goro::trace::start: a trace is already running (to \"" +
        g_active->path + "\")");
  }
  if (s->epoch == g_closed_epoch) {
    return absl::FailedPreconditionError(
        "goro::trace::start: the runtime is ending");
  }
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, "goro::trace::start: cannot open \"" + path + "\" for writing");
  }
  const int nrings = static_cast<int>(s->ps.size());
  // Committed as written: MAP_NORESERVE, zero pages until touched.
  const std::size_t bytes =
      (static_cast<std::size_t>(nrings) + 1) * n * sizeof(TraceEvent);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    ::close(fd);
    return absl::ResourceExhaustedError("goro::trace::start: cannot map " +
                                        std::to_string(bytes) +
                                        " bytes of event buffers");
  }
  auto* session = new TraceSession;
  session->seq = ++g_seq;
  session->nrings = nrings;
  session->rings = std::make_unique<runtime_internal::TraceRing[]>(
      static_cast<std::size_t>(nrings));
  auto* slots = static_cast<TraceEvent*>(mem);
  for (int i = 0; i < nrings; ++i) {
    session->rings[i].init(slots + static_cast<std::size_t>(i) * n,
                           static_cast<std::uint32_t>(n));
  }
  session->offp.init(slots + static_cast<std::size_t>(nrings) * n,
                     static_cast<std::uint32_t>(n));

  // The start: every event published after it has a later TSC.
  const std::int64_t t0_ns = runtime_internal::mono_now_ns();
  const std::uint64_t t0_tsc = runtime_internal::trace_now();
  std::uint64_t pos = 0;
  session->offp.reserve(1, &pos);  // an empty ring: always room
  session->offp.at(pos) = snapshot(s, t0_tsc);
  session->offp.commit(pos + 1);

  TraceWriter::Config wc;
  wc.fd = fd;
  wc.pid = static_cast<int>(::getpid());
  wc.nprocs = s->nprocs;
  wc.max_bytes = o.max_bytes;
  wc.t0_tsc = t0_tsc;
  wc.t0_ns = t0_ns;
  auto writer = std::make_unique<TraceWriter>(session, wc);
  writer->start();

  // release: the rings and the snapshot are visible to a producer that
  // loads the session (acquire).
  runtime_internal::g_trace.session.store(session, std::memory_order_release);
  runtime_internal::g_trace.on.store(true, std::memory_order_release);

  auto* a = new Active;
  a->sched = s;
  a->session = session;
  a->writer = std::move(writer);
  a->fd = fd;
  a->slots = mem;
  a->slots_bytes = bytes;
  a->from_env = from_env;
  a->path = path;
  g_active = a;
  return absl::OkStatus();
}

absl::StatusOr<trace::Result> stop_locked() {
  std::unique_ptr<Active> a(g_active);
  g_active = nullptr;
  // T2 (runtime/internal/trace.h): unpublish, then wait until no producer
  // is inside a ring.
  runtime_internal::g_trace.on.store(false, std::memory_order_relaxed);
  runtime_internal::g_trace.session.store(nullptr, std::memory_order_seq_cst);
  const bool fenced = heavy_fence();
  for (const auto& p : a->sched->ps) {
    while (p->trace_busy.load(std::memory_order_acquire)) sched_yield();
  }
  { MutexLock l(&runtime_internal::g_trace_offp_mu); }
  // Without membarrier a producer may still be about to write (its flag
  // store not yet visible): the rings are then left mapped, and the session
  // allocated, for the life of the process.
  const absl::StatusOr<TraceCounts> c = a->writer->finish();
  a->writer.reset();
  trace::Result res;
  if (c.ok()) {
    res.events = c->events;
    res.dropped_buffer_full = c->dropped_buffer_full;
    res.dropped_size_limit = c->dropped_size_limit;
    res.dropped = res.dropped_buffer_full + res.dropped_size_limit;
    res.bytes = c->bytes;
  }
  absl::StatusOr<trace::Result> r =
      c.ok() ? absl::StatusOr<trace::Result>(res) : c.status();
  if (::close(a->fd) != 0 && r.ok()) {
    r = absl::ErrnoToStatus(errno, "goro::trace::stop: closing the trace");
  }
  if (fenced) {
    ::munmap(a->slots, a->slots_bytes);
    delete a->session;
  }
  return r;
}

}  // namespace

void trace_on_create(Sched* s) {
  const std::string& path = s->debug.trace_path;
  if (path.empty()) return;
  std::lock_guard<std::mutex> l(g_mu);
  const absl::Status st = start_locked(s, path, trace::Options{}, true);
  if (!st.ok()) {
    throw std::invalid_argument("goro: invalid GORO_TRACE \"" + path +
                                "\": " + std::string(st.message()));
  }
}

void trace_on_run_end(Sched* s) {
  std::lock_guard<std::mutex> l(g_mu);
  g_closed_epoch = s->epoch;
  if (g_active == nullptr || g_active->sched != s) return;
  const bool from_env = g_active->from_env;
  const std::string path = g_active->path;
  const absl::StatusOr<trace::Result> r = stop_locked();
  // GORO_TRACE has no caller to return the result to: say what went wrong.
  if (!r.ok()) {
    std::fprintf(stderr, "goro: trace \"%s\": %s\n", path.c_str(),
                 std::string(r.status().message()).c_str());
  } else if (from_env && r->dropped != 0) {
    std::fprintf(stderr,
                 "goro: GORO_TRACE \"%s\": %llu events written, %llu dropped "
                 "(buffers full: %llu, size limit: %llu)\n",
                 path.c_str(), static_cast<unsigned long long>(r->events),
                 static_cast<unsigned long long>(r->dropped),
                 static_cast<unsigned long long>(r->dropped_buffer_full),
                 static_cast<unsigned long long>(r->dropped_size_limit));
  }
}

}  // namespace goro::diag_internal

namespace goro::trace {

absl::Status start(const std::string& path, const Options& options) {
  // On a fiber: inside blocking(), so that its P runs other fibers while
  // the file is opened and the snapshot taken.
  return goro::blocking([&]() -> absl::Status {
    runtime_internal::SchedUse use;
    if (use.get() == nullptr) {
      return absl::FailedPreconditionError(
          "goro::trace::start: no runtime is running (call it inside "
          "goro::run)");
    }
    std::lock_guard<std::mutex> l(diag_internal::g_mu);
    return diag_internal::start_locked(use.get(), path, options, false);
  });
}

absl::StatusOr<Result> stop() {
  return goro::blocking([&]() -> absl::StatusOr<Result> {
    std::lock_guard<std::mutex> l(diag_internal::g_mu);
    if (diag_internal::g_active == nullptr) {
      return absl::FailedPreconditionError(
          "goro::trace::stop: no trace is running");
    }
    return diag_internal::stop_locked();
  });
}

bool active() {
  std::lock_guard<std::mutex> l(diag_internal::g_mu);
  return diag_internal::g_active != nullptr;
}

}  // namespace goro::trace
