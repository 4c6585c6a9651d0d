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
//   * libunwind, under the preemption walk's rules (preempt_walk.cc, "Why
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
// Rejected alternatives: symbolizing on a helper thread while the handler
// waits (starting a thread allocates, and the helper hangs if the faulting
// thread holds malloc's or the loader's lock -- a timeout would still lose
// the names); following frame pointers (goro's default build keeps them,
// but libraries and other builds need not, and a wrong chain reads
// anywhere).
//
// The canary report (found at a switch, long after the overflow) has no
// backtrace: the frames that overflowed are gone and the stack below is
// damaged.

#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <string.h>
#include <sys/ucontext.h>

#include <cstdint>

#include "preempt/internal/code_map.h"
#include "preempt/internal/preempt.h"
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

// One line per frame, preceded by the object's name when it is not the
// previous frame's (*object: the last one named).
void print_frame(int fd, int n, const RawFrame& fr, const char** object) {
  RawMsg m;
  if (fr.seg != nullptr && code_segment_object(fr.seg) != *object) {
    *object = code_segment_object(fr.seg);
    m.str("\tin ").str(*object).str(":\n");
  }
  m.str("\t#").u64(static_cast<std::uint64_t>(n)).str(" ");
  if (fr.seg != nullptr) {
    m.hex(fr.at - code_segment_base(fr.seg));
  } else {
    m.hex(fr.at).str(" (in no known object)");
  }
  m.str("\n").write_to(fd);
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
  // unw_init_local2 takes a non-const context; the signal frame's stays as
  // the kernel wrote it.
  ucontext_t uc;
  memcpy(&uc, ucontext, sizeof(uc));
  unw_cursor_t c;
  if (unw_init_local2(&c, &uc, UNW_INIT_SIGNAL_FRAME) < 0) {
    RawMsg().str("\t(no backtrace: libunwind cannot start)\n").write_to(fd);
    return;
  }
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  const auto hi = reinterpret_cast<std::uintptr_t>(f->stack.hi());
  RawFrame tail[kTailFrames];
  const char* object = nullptr;
  int n = 0;
  bool use_prev_instr = false;  // the faulting pc is not a return address
  const char* stop = nullptr;
  for (; n < kMaxFrames; ++n) {
    unw_word_t ip = 0, sp = 0;
    if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || ip == 0 ||
        unw_get_reg(&c, UNW_REG_SP, &sp) < 0) {
      break;
    }
    // The faulting frame's sp may be in the guard region (or, for a frame
    // that jumped it, below); every frame further out is on the stack.
    if (sp > hi || (n > 0 && sp < lo)) break;
    RawFrame fr;
    fr.at = use_prev_instr ? ip - 1 : ip;
    fr.seg = code_segment(fr.at);
    if (n < kHeadFrames) {
      print_frame(fd, n, fr, &object);
    } else {
      tail[n % kTailFrames] = fr;
    }
    if (fr.seg == nullptr || !code_has_unwind_info(fr.seg, fr.at)) {
      stop = "\t(the walk stops: no unwind information for that address)\n";
      ++n;
      break;
    }
    // A signal frame's caller (the preemption trampoline's) resumes at its
    // pc; every other caller after a call.
    use_prev_instr = unw_is_signal_frame(&c) <= 0;
    if (unw_step(&c) <= 0) {
      ++n;
      break;
    }
  }
  if (n > kHeadFrames) {
    const int first =
        n - kTailFrames > kHeadFrames ? n - kTailFrames : kHeadFrames;
    if (first > kHeadFrames) {
      RawMsg()
          .str("\t... ")
          .u64(static_cast<std::uint64_t>(first - kHeadFrames))
          .str(" frames elided ...\n")
          .write_to(fd);
      object = nullptr;  // name it again after the gap
    }
    for (int i = first; i < n; ++i) {
      print_frame(fd, i, tail[i % kTailFrames], &object);
    }
  }
  if (stop != nullptr) RawMsg().str(stop).write_to(fd);
  if (n >= kMaxFrames) {
    RawMsg().str("\t(the walk stops: too many frames)\n").write_to(fd);
  }
}

}  // namespace goro::preempt_internal
