// Copyright goro authors.
//
// The backtrace in the stack overflow report (Hooks::fault_backtrace; the
// report itself is runtime/internal/signals.cc):
//
//   goro: fiber 5's stack, innermost frame first, as addresses in the
//   object file named before them (`addr2line -Cfie OBJECT ADDRESS...`
//   gives function, file and line):
//   	in /path/to/program:
//   	#0 0x1b2c3
//   	#1 0x1b2f0
//   	...
//   	... 2001 frames elided ...
//   	in /path/to/program:
//   	#2039 0x2a140
//
// What is safe here. The report runs in the SIGSEGV handler, on the M's
// alternate signal stack, interrupting code that may hold any lock: malloc's
// (a deep recursion that allocates), glibc's loader lock (an exception
// unwinding through dl_iterate_phdr), a goro Mutex's. So:
//   * Raw addresses, no names. Names and lines need the debug info (libdw
//     allocates, opens files, takes the loader lock in dlopen); the ELF
//     symbol tables need reading too. The addresses are printed relative
//     to their object file, which is what addr2line (or gdb) takes, and
//     what a core file of the abort keeps (and tools/goro-gdb.py reads).
//   * libunwind once it is loaded (unwinder.h), under the preemption walk's
//     rules (preempt_walk.cc, "Why
//     the walk runs in the trampoline"): every address it is asked to
//     unwind is in a segment of the code map with an FDE in a table
//     registered with libunwind (code_has_unwind_info), so it never calls
//     dl_iterate_phdr and never falls back to guessing from frame pointers.
//     Its locks (the parsed-CIE pool, the frame cache) are taken with every
//     signal blocked, so the faulting thread cannot be holding one: a fault
//     while signals are blocked kills the process without running this
//     handler. Another thread holds one for a few instructions only. The
//     pool grows with mmap, not malloc.
//   * Memory: the walk reads only the fiber's own frames. The faulting
//     frame's CFA rules name slots its prologue already wrote (a push or
//     store that faulted is not yet described by its CFI), and every frame
//     further out lies above it; a frame whose stack pointer leaves the
//     fiber's stack ends the walk.
//   * Before libunwind is loaded (the runtime's first busy period: sysmon
//     loads it, and a handler cannot), and if it cannot be loaded: the
//     frame-pointer chain, said so in the report. goro's builds keep frame
//     pointers (-fno-omit-frame-pointer, also in goro.pc's flags), so a
//     crash in the first millisecond still names the frames that made it.
//     The chain is trusted only as far as it is plausible: every frame
//     pointer 8-byte aligned, inside the fiber's stack, and strictly above
//     the previous one, so the walk reads only the fiber's stack and ends.
//     What it misses: frames of code built without frame pointers (their
//     callers are still found when that code keeps rbp untouched, as GCC
//     does), and the caller of a function that faulted in its prologue,
//     before it pushed rbp (a frame-pointer walk cannot tell).
// Rejected alternatives: symbolizing on a helper thread while the handler
// waits (starting a thread allocates, and the helper hangs if the faulting
// thread holds malloc's or the loader's lock -- a timeout would still lose
// the names); following frame pointers always (libraries and other builds
// need not keep them: libunwind's CFI walk is exact where it can run).
//
// The canary report (found at a switch, long after the overflow) has no
// backtrace: the frames that overflowed are gone and the stack below is
// damaged.

#include <string.h>
#include <sys/ucontext.h>

#include <cstdint>

#include "preempt/internal/code_map.h"
#include "preempt/internal/preempt.h"
#include "preempt/internal/unwinder.h"
#include "runtime/internal/raw_msg.h"
#include "runtime/internal/stack.h"

namespace goro::preempt_internal {
namespace {

using runtime_internal::Fiber;
using runtime_internal::RawMsg;

// The innermost frames are printed as the walk finds them, the outermost
// kept in a ring until the walk ends: a runaway recursion shows where it
// recurses and where it started.
constexpr int kHeadFrames = 32;
constexpr int kTailFrames = 16;
constexpr int kMaxFrames = 1 << 20;

struct RawFrame {
  std::uintptr_t at = 0;  // the pc to look up (a return address minus 1)
  const CodeSegment* seg = nullptr;
};

// Prints the frames either walk finds, one line each, preceded by the
// object's name when it is not the previous frame's.
class FramePrinter {
 public:
  explicit FramePrinter(int fd) : fd_(fd) {}

  // Returns the frame's segment (null: in no known object).
  const CodeSegment* add(std::uintptr_t at) {
    RawFrame fr;
    fr.at = at;
    fr.seg = code_segment(at);
    if (n_ < kHeadFrames) {
      print(n_, fr);
    } else {
      tail_[n_ % kTailFrames] = fr;
    }
    ++n_;
    return fr.seg;
  }

  int frames() const { return n_; }
  int fd() const { return fd_; }

  // The kept tail, then `stop` (why the walk ended early; may be null).
  void finish(const char* stop) {
    if (n_ > kHeadFrames) {
      const int first =
          n_ - kTailFrames > kHeadFrames ? n_ - kTailFrames : kHeadFrames;
      if (first > kHeadFrames) {
        RawMsg()
            .str("\t... ")
            .u64(static_cast<std::uint64_t>(first - kHeadFrames))
            .str(" frames elided ...\n")
            .write_to(fd_);
        object_ = nullptr;  // name it again after the gap
      }
      for (int i = first; i < n_; ++i) print(i, tail_[i % kTailFrames]);
    }
    if (stop != nullptr) RawMsg().str(stop).write_to(fd_);
    if (n_ >= kMaxFrames) {
      RawMsg().str("\t(the walk stops: too many frames)\n").write_to(fd_);
    }
  }

 private:
  void print(int n, const RawFrame& fr) {
    RawMsg m;
    if (fr.seg != nullptr && code_segment_object(fr.seg) != object_) {
      object_ = code_segment_object(fr.seg);
      m.str("\tin ").str(object_).str(":\n");
    }
    m.str("\t#").u64(static_cast<std::uint64_t>(n)).str(" ");
    if (fr.seg != nullptr) {
      m.hex(fr.at - code_segment_base(fr.seg));
    } else {
      m.hex(fr.at).str(" (in no known object)");
    }
    m.str("\n").write_to(fd_);
  }

  int fd_;
  int n_ = 0;
  const char* object_ = nullptr;  // the last one named
  RawFrame tail_[kTailFrames];
};

// libunwind's CFI walk (see the top for why it is safe here).
void unwind_walk(const Unwinder& u, const Fiber* f, const void* ucontext,
                 FramePrinter* out) {
  // unw_init_local2 takes a non-const context; the signal frame's stays as
  // the kernel wrote it.
  ucontext_t uc;
  memcpy(&uc, ucontext, sizeof(uc));
  unw_cursor_t c;
  if (u.init_local2(&c, &uc, UNW_INIT_SIGNAL_FRAME) < 0) {
    out->finish("\t(no backtrace: libunwind cannot start)\n");
    return;
  }
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  bool use_prev_instr = false;  // the faulting pc is not a return address
  const char* stop = nullptr;
  while (out->frames() < kMaxFrames) {
    unw_word_t ip = 0, sp = 0;
    if (u.get_reg(&c, UNW_REG_IP, &ip) < 0 || ip == 0 ||
        u.get_reg(&c, UNW_REG_SP, &sp) < 0) {
      break;
    }
    // The faulting frame's sp may be in the guard region (or, for a frame
    // that jumped it, below); every frame further out is on the stack.
    if (sp > hi || (out->frames() > 0 && sp < lo)) break;
    const std::uintptr_t at = use_prev_instr ? ip - 1 : ip;
    const CodeSegment* seg = out->add(at);
    if (seg == nullptr || !code_has_unwind_info(seg, at)) {
      stop = "\t(the walk stops: no unwind information for that address)\n";
      break;
    }
    // A signal frame's caller (the preemption trampoline's) resumes at its
    // pc; every other caller after a call.
    use_prev_instr = u.is_signal_frame(&c) <= 0;
    if (u.step(&c) <= 0) break;
  }
  out->finish(stop);
}

// The frame-pointer chain (see the top: before libunwind is loaded). Not
// instrumented by ASan: it reads the fiber's frames, dead ones included.
__attribute__((no_sanitize_address)) void frame_pointer_walk(
    const Fiber* f, const void* ucontext, FramePrinter* out) {
  RawMsg()
      .str(
          "\t(a frame-pointer walk: libunwind is not loaded yet; frames of "
          "code built without frame pointers are missing)\n")
      .write_to(out->fd());
  const greg_t* g = static_cast<const ucontext_t*>(ucontext)->uc_mcontext.gregs;
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  // The faulting pc is an instruction, not a return address.
  if (out->add(static_cast<std::uintptr_t>(g[REG_RIP])) == nullptr) {
    out->finish(nullptr);
    return;
  }
  auto fp = static_cast<std::uintptr_t>(g[REG_RBP]);
  std::uintptr_t prev = 0;  // the frame pointer below, 0 for the first
  const char* stop = nullptr;
  while (out->frames() < kMaxFrames) {
    // [fp] is the caller's frame pointer, [fp + 8] the return address.
    if ((fp & 7) != 0 || fp < lo || fp > hi - 16 || fp <= prev) {
      // 0 is how the chain ends (goro_context_trampoline clears rbp).
      if (fp != 0) stop = "\t(the walk stops: implausible frame pointer)\n";
      break;
    }
    const auto* frame = reinterpret_cast<const std::uintptr_t*>(fp);
    const std::uintptr_t ret = frame[1];
    if (ret == 0) break;
    // A return address points after the call: look up the call itself.
    if (out->add(ret - 1) == nullptr) break;
    prev = fp;
    fp = frame[0];
  }
  out->finish(stop);
}

}  // namespace

void fault_backtrace(const Fiber* f, const void* ucontext, int fd) {
  {
    RawMsg m;
    m.str("goro: fiber ").u64(f->id);
    m.str(
        "'s stack, innermost frame first, as addresses in the object file "
        "named before them (`addr2line -Cfie OBJECT ADDRESS...` gives "
        "function, file and line):\n");
    m.write_to(fd);
  }
  FramePrinter out(fd);
  // libunwind only with the code map's tables registered: without them it
  // would search with dl_iterate_phdr (code_map.cc CM3).
  const Unwinder* u = unwinder();
  if (u != nullptr && code_map_registered() > 0) {
    unwind_walk(*u, f, ucontext, &out);
  } else {
    frame_pointer_walk(f, ucontext, &out);
  }
}

}  // namespace goro::preempt_internal
