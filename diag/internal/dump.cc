// Copyright goro authors.
//
// The fiber dump (diag/dump.h): collect, pin, unwind, symbolize, print.
//
// Pinning. A parked or runnable fiber can be readied and run by another M at
// any moment, which would rewrite the stack being read. The dump pins it
// instead of stopping the world, with an asymmetric Dekker handshake:
//   M (enter_fiber, switch.cc):  state = kRunning; compiler barrier;
//                                if (g_dump_pins && f->dump_pin) wait
//   dump:                        g_dump_pins++; f->dump_pin = true;
//                                membarrier(PRIVATE_EXPEDITED); read state
// membarrier runs a full barrier on every thread of the process that is on a
// CPU, so either the dump sees kRunning (and leaves the fiber alone: "stack
// unavailable") or the M's load sees the pin (and waits until the dump has
// unwound that fiber). The M's side costs one predictable branch; the dump
// pays one membarrier per batch of fibers. Without membarrier (an old kernel,
// a seccomp filter) nothing is pinned and every fiber other than the caller
// prints "stack unavailable (cannot pin)", except in a deadlock report,
// where no M can run anything.
//
// Only raw program counters are taken while a fiber is pinned (libunwind
// over its saved registers: microseconds); names and lines come afterwards.
// libunwind is loaded on the first dump if sysmon has not loaded it yet
// (preempt/internal/unwinder.h), always on a thread with a full-size stack:
// the helper thread, sysmon's (SIGQUIT), an M's scheduler stack (a deadlock
// report) or run's thread. The caller's own registers are taken before, with
// glibc's getcontext, whose ucontext_t is libunwind's unw_context_t on
// x86-64 (libunwind's unw_getcontext would need the library loaded on the
// caller's, possibly small, fiber stack).
//
// The uncaught-exception message (runtime/internal/fiber.cc) uses the same
// walk and format for the one failing fiber (fiber_backtrace): the fiber's
// frames are intact when std::terminate runs, and the fiber's thread waits
// in it while a helper thread walks and symbolizes them.

#include "diag/dump.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "diag/internal/diag.h"
#include "diag/internal/symbolize.h"
#include "preempt/internal/unwinder.h"
#include "runtime/blocking.h"
#include "runtime/internal/context_x86_64.h"
#include "runtime/internal/scheduler_internal.h"

extern "C" void goro_async_preempt();

namespace goro::diag_internal {

using preempt_internal::Unwinder;
using runtime_internal::Fiber;
using runtime_internal::FiberState;
using runtime_internal::M;
using runtime_internal::MutexLock;
using runtime_internal::Sched;
using runtime_internal::SchedUse;
using runtime_internal::SwitchFrame;

namespace {

constexpr int kMaxFrames = 100;
constexpr std::size_t kPinBatch = 256;

// Serialises dumps: the symbolizer is single-threaded, and one pin round at
// a time keeps the waits of Ms short.
std::mutex g_dump_mu;

struct RawFrame {
  std::uint64_t pc;
  bool is_return;  // a return address (look up pc - 1)
};

enum class Where {
  kSaved,       // parked or runnable: unwound from its saved registers
  kSelf,        // the fiber that called dump_fibers
  kNotStarted,  // runnable, never ran: no frames
  kElsewhere,   // running on another thread
  kBlocking,    // inside goro::blocking() on another thread
  kUnpinnable,  // could not be pinned (no membarrier)
};

struct FiberInfo {
  Fiber* f = nullptr;
  std::uint64_t id = 0;
  std::string name;
  Where where = Where::kSaved;
  FiberState state = FiberState::kRunnable;
  runtime_internal::WaitReason reason = runtime_internal::WaitReason::kNone;
  std::int64_t wait_since = 0;
  const char* created_function = nullptr;
  const char* created_file = nullptr;
  std::uint32_t created_line = 0;
  std::uint64_t parent_id = 0;
  bool preempted = false;
  std::vector<RawFrame> frames;
};

// Walks from the cursor's frame outwards while the stack pointer stays in
// [lo, hi] (no bounds when lo == 0).
void walk(const Unwinder& u, unw_cursor_t* c, std::uintptr_t lo,
          std::uintptr_t hi, bool first_is_return, std::vector<RawFrame>* out,
          bool* preempted) {
  bool is_return = first_is_return;
  for (int i = 0; i < kMaxFrames; ++i) {
    unw_word_t ip = 0, sp = 0;
    if (u.get_reg(c, UNW_REG_IP, &ip) < 0 || ip == 0) break;
    if (u.get_reg(c, UNW_REG_SP, &sp) < 0) break;
    if (lo != 0 && (sp < lo || sp > hi)) break;
    out->push_back({ip, is_return});
    unw_proc_info_t pi;
    const bool trampoline =
        u.get_proc_info(c, &pi) == 0 &&
        pi.start_ip == reinterpret_cast<unw_word_t>(&goro_async_preempt);
    if (trampoline && preempted != nullptr) *preempted = true;
    // Above the preemption trampoline is the interrupted pc itself.
    is_return = !trampoline && u.is_signal_frame(c) <= 0;
    if (u.step(c) <= 0) break;
  }
}

// A switched-out fiber: its callee-saved registers and return address are
// the SwitchFrame at f->sp (context_x86_64.h). Caller holds the pin.
void unwind_saved(const Unwinder& u, Fiber* f, FiberInfo* info) {
  const auto* fr = static_cast<const SwitchFrame*>(f->sp);
  ucontext_t uc;
  std::memset(&uc, 0, sizeof(uc));
  greg_t* g = uc.uc_mcontext.gregs;
  g[REG_RIP] = static_cast<greg_t>(fr->ret);
  g[REG_RSP] = reinterpret_cast<greg_t>(fr + 1);  // after `ret` pops it
  g[REG_RBP] = static_cast<greg_t>(fr->rbp);
  g[REG_RBX] = static_cast<greg_t>(fr->rbx);
  g[REG_R12] = static_cast<greg_t>(fr->r12);
  g[REG_R13] = static_cast<greg_t>(fr->r13);
  g[REG_R14] = static_cast<greg_t>(fr->r14);
  g[REG_R15] = static_cast<greg_t>(fr->r15);
  unw_cursor_t c;
  if (u.init_local(&c, &uc) < 0) return;
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  walk(u, &c, lo, lo + f->stack.size, true, &info->frames, &info->preempted);
}

bool starts_with(const std::string& s, const char* p) {
  return s.compare(0, std::strlen(p), p) == 0;
}

// The runtime's own frames, left out at the top (the switch, park) and the
// bottom (the fiber's entry, go()'s and run()'s thunks, std::invoke) of a
// stack: by the file their line is in or, without one, by name.
bool runtime_name(const std::string& fn);
bool runtime_frame(const Frame& f) {
  if (f.file.empty()) return runtime_name(f.function);
  for (const char* dir : {"runtime/", "preempt/", "diag/", "/usr/"}) {
    if (starts_with(f.file, dir)) return true;
  }
  return false;
}

bool runtime_name(const std::string& fn) {
  for (const char* p :
       {"goro::runtime_internal::", "goro::preempt_internal::",
        "goro::diag_internal::", "goro_", "goro::dump_fibers", "goro::go<",
        "goro::run<", "goro::blocking<", "std::__invoke", "std::invoke",
        "std::thread::_", "std::execute_native_thread_routine", "start_thread",
        "clone"}) {
    if (starts_with(fn, p)) return true;
  }
  return false;
}

void copy_parked(Fiber* f, FiberInfo* info) {
  info->name = f->name;
  info->reason = f->wait_reason.load(std::memory_order_relaxed);
  info->created_function = f->created_function;
  info->created_file = f->created_file;
  info->created_line = f->created_line;
  info->parent_id = f->parent_id;
}

std::string state_text(const FiberInfo& in) {
  std::string st;
  switch (in.where) {
    case Where::kBlocking:
      st = "blocking call";
      break;
    case Where::kSelf:
    case Where::kElsewhere:
      st = "running";
      break;
    default:
      if (in.state == FiberState::kWaiting) {
        st = runtime_internal::wait_reason_name(in.reason);
      } else {
        st = in.preempted ? "preempted" : "runnable";
      }
  }
  const bool waits =
      in.where == Where::kBlocking ||
      (in.state == FiberState::kWaiting && in.where != Where::kElsewhere);
  const std::int64_t now =
      runtime_internal::g_coarse_now_ns.load(std::memory_order_relaxed);
  if (waits && in.wait_since != 0 && now > in.wait_since) {
    const std::int64_t minutes = (now - in.wait_since) / 60'000'000'000;
    if (minutes >= 1) {
      st += ", " + std::to_string(minutes) +
            (minutes == 1 ? " minute" : " minutes");
    }
  }
  return st;
}

// The C++ runtime's function that starts an uncaught exception's search
// (or that calls std::terminate for a noexcept function): on a stack taken
// in std::terminate, the frames above it are the terminate machinery
// (some without a symbol), the frames below it the program's.
bool throw_entry(const Frame& f) {
  for (const char* fn :
       {"__cxa_throw", "__cxa_rethrow", "std::rethrow_exception",
        "__cxa_call_terminate", "_Unwind_RaiseException",
        "_Unwind_Resume_or_Rethrow"}) {
    if (f.function == fn) return true;
  }
  return false;
}

// thrown: the fiber's own stack taken in std::terminate (the throw and
// terminate machinery at the top left out too).
void print_fiber(const FiberInfo& in, Symbolizer* sym, std::string* out,
                 bool thrown = false) {
  *out += "fiber " + std::to_string(in.id);
  if (!in.name.empty()) *out += " \"" + in.name + "\"";
  *out += " [" + state_text(in) + "]:\n";
  std::vector<Frame> frames;
  for (const RawFrame& r : in.frames) {
    for (Frame& f : sym->symbolize(r.pc, r.is_return)) {
      frames.push_back(std::move(f));
    }
  }
  std::size_t b = 0, e = frames.size();
  if (thrown) {
    for (std::size_t i = 0; i < std::min<std::size_t>(e, 16); ++i) {
      if (throw_entry(frames[i])) b = i + 1;
    }
  }
  while (b < e && runtime_frame(frames[b])) ++b;
  while (e > b && runtime_frame(frames[e - 1])) --e;
  char off[32];
  for (std::size_t i = b; i < e; ++i) {
    const Frame& f = frames[i];
    std::snprintf(off, sizeof(off), " +0x%llx",
                  static_cast<unsigned long long>(f.offset));
    *out += f.function + "(...)\n\t" + (f.file.empty() ? "?" : f.file) + ":" +
            std::to_string(f.line) + off + "\n";
  }
  switch (in.where) {
    case Where::kElsewhere:
    case Where::kBlocking:
      *out += "\tfiber running on other thread; stack unavailable\n";
      break;
    case Where::kUnpinnable:
      *out += "\tstack unavailable (cannot pin: no membarrier)\n";
      break;
    default:
      break;
  }
  if (in.created_function != nullptr) {
    *out += "created by " + strip_parameters(in.created_function);
    if (in.parent_id != 0) *out += " in fiber " + std::to_string(in.parent_id);
    *out += "\n\t" + std::string(in.created_file ? in.created_file : "?") +
            ":" + std::to_string(in.created_line) + "\n";
  }
  *out += "\n";
}

// The symbolizer, kept for the process's life (the debug info is read once).
// Caller holds g_dump_mu, like every use.
Symbolizer* shared_symbolizer() {
  static Symbolizer* sym = new Symbolizer;
  static bool fresh = true;
  if (!fresh) sym->refresh();
  fresh = false;
  return sym;
}

// The calling fiber's own block (in->f), from a context taken on it (a
// ucontext_t): its stack cannot move while we read it. No frames without
// libunwind (u null).
void read_self(const Unwinder* u, const void* self_ctx, FiberInfo* in) {
  in->where = Where::kSelf;
  in->id = in->f->id;
  copy_parked(in->f, in);
  in->reason = runtime_internal::WaitReason::kNone;
  if (u == nullptr) return;
  unw_cursor_t c;
  unw_context_t ctx;
  std::memcpy(&ctx, self_ctx, sizeof(ctx));
  if (u->init_local(&c, &ctx) == 0) {
    walk(*u, &c, 0, 0, false, &in->frames, nullptr);
  }
}

// The dump's first line when it can have no frames.
constexpr char kNoUnwinder[] =
    "goro: no stacks in this dump: libunwind could not be loaded\n";

}  // namespace

std::string backtrace_string(const void* self_ctx, const Fiber* self) {
  std::lock_guard<std::mutex> dump_lock(g_dump_mu);
  const Unwinder* u = preempt_internal::unwinder_load();
  FiberInfo in;
  in.f = const_cast<Fiber*>(self);
  in.state = FiberState::kRunning;
  read_self(u, self_ctx, &in);
  std::string out = u == nullptr ? kNoUnwinder : "";
  print_fiber(in, shared_symbolizer(), &out, /*thrown=*/true);
  return out;
}

bool heavy_fence() {
  static const bool registered =
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0,
              0) == 0;
  return registered &&
         syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
}

std::string dump_string(const void* self_ctx, const Fiber* self) {
  std::lock_guard<std::mutex> dump_lock(g_dump_mu);
  SchedUse use;
  Sched* s = use.get();
  if (s == nullptr) return "goro: no runtime is running\n";
  const Unwinder* u = preempt_internal::unwinder_load();

  std::vector<FiberInfo> infos;
  {
    MutexLock l(&s->free_lock);
    for (Fiber* f = s->all_fibers; f != nullptr; f = f->all_next) {
      const FiberState st = f->state.load(std::memory_order_acquire);
      if (st == FiberState::kFree || st == FiberState::kDead) continue;
      FiberInfo in;
      in.f = f;
      infos.push_back(std::move(in));
    }
  }
  // Which fibers are on a thread, and which of those are in blocking().
  std::unordered_map<const Fiber*, bool> on_thread;  // -> in blocking()
  {
    MutexLock l(&s->lock);
    for (const auto& m : s->ms) {
      if (const Fiber* c = m->curg()) on_thread[c] = m->blocking_p != nullptr;
    }
  }

  runtime_internal::g_dump_pins.fetch_add(1, std::memory_order_seq_cst);
  for (std::size_t b = 0; b < infos.size(); b += kPinBatch) {
    const std::size_t e = std::min(infos.size(), b + kPinBatch);
    for (std::size_t i = b; i < e; ++i) {
      if (infos[i].f != self) {
        infos[i].f->dump_pin.store(true, std::memory_order_relaxed);
      }
    }
    const bool pinned = heavy_fence();
    for (std::size_t i = b; i < e; ++i) {
      FiberInfo& in = infos[i];
      Fiber* f = in.f;
      in.state = f->state.load(std::memory_order_acquire);
      in.wait_since = f->wait_since.load(std::memory_order_relaxed);
      if (f == self) {
        read_self(u, self_ctx, &in);
        continue;
      }
      if (in.state == FiberState::kRunning) {
        // Not pinnable: it runs. Only its id, read before it can exit and
        // be recycled only approximately (a dump is a snapshot).
        in.id = std::atomic_ref<std::uint64_t>(f->id).load(
            std::memory_order_relaxed);
        auto it = on_thread.find(f);
        in.where = it != on_thread.end() && it->second ? Where::kBlocking
                                                       : Where::kElsewhere;
      } else if (in.state == FiberState::kWaiting ||
                 in.state == FiberState::kRunnable) {
        in.id = f->id;
        if (!pinned) {
          in.where = Where::kUnpinnable;
        } else {
          copy_parked(f, &in);
          if (f->sp == nullptr) {
            in.where = Where::kNotStarted;
          } else if (u != nullptr) {
            unwind_saved(*u, f, &in);
          }
        }
      } else {
        in.id = 0;  // exited meanwhile
      }
      f->dump_pin.store(false, std::memory_order_release);
    }
  }
  runtime_internal::g_dump_pins.fetch_sub(1, std::memory_order_seq_cst);

  infos.erase(std::remove_if(infos.begin(), infos.end(),
                             [](const FiberInfo& in) { return in.id == 0; }),
              infos.end());
  std::sort(infos.begin(), infos.end(),
            [](const FiberInfo& a, const FiberInfo& b) { return a.id < b.id; });
  Symbolizer* sym = shared_symbolizer();
  std::string out = u == nullptr ? kNoUnwinder : "";
  for (const FiberInfo& in : infos) print_fiber(in, sym, &out);
  return out;
}

__attribute__((noinline)) std::string fiber_backtrace() {
  ucontext_t ctx;
  getcontext(&ctx);
  runtime_internal::M* m = runtime_internal::current_m();
  const Fiber* self = m != nullptr ? m->curg() : nullptr;
  if (self == nullptr) return "";
  // On a helper thread: libdw recurses, and the fiber's stack may be small
  // (or nearly used up). This thread waits here, so the frames the helper
  // reads hold still.
  std::string text;
  std::thread t([&] { text = backtrace_string(&ctx, self); });
  t.join();
  return text;
}

}  // namespace goro::diag_internal

namespace goro {

__attribute__((noinline)) void dump_fibers(std::ostream& out) {
  ucontext_t ctx;
  getcontext(&ctx);
  runtime_internal::Fiber* self = runtime_internal::current_fiber();
  std::string text;
  if (runtime_internal::current_m() == nullptr) {
    // A plain thread: its own stack is deep enough.
    text = diag_internal::dump_string(nullptr, nullptr);
  } else {
    // An M's thread, maybe on a fiber's small stack: a helper thread does
    // the work (libdw recurses), while this fiber is in blocking() so that
    // its P runs other fibers. Its frames stay put until we return.
    goro::blocking([&] {
      std::thread t([&] {
        runtime_internal::own_thread_register_for_life();
        text = diag_internal::dump_string(&ctx, self);
      });
      t.join();
    });
  }
  out << text;
}

}  // namespace goro
