// Copyright goro authors.

#include "runtime/internal/stack.h"

#include <cpuid.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <new>
#include <vector>

#include "runtime/internal/dcheck.h"
#include "runtime/internal/raw_msg.h"
#include "third_party/valgrind/valgrind.h"

namespace goro::runtime_internal {
namespace {

#ifndef MADV_GUARD_INSTALL
constexpr int MADV_GUARD_INSTALL = 102;  // Linux 6.13 uapi
#endif

// Chunks are ~16 MiB of address space: a million 64 KiB stacks need ~4,300
// chunks, far below vm.max_map_count, and adjacent chunks often merge.
constexpr std::size_t kChunkBytes = 16u << 20;

// ---------------------------------------------------------------------------
// The chunk registry: every chunk of every live StackAllocator, so that the
// SIGSEGV handler can tell a fault in any fiber's guard region from any
// other fault without a lock (find_guard).
//
// Invariant (REG): an entry with base != 0 describes a mapped chunk: base is
// stored (release) after bytes and slot, and cleared before munmap. Entries
// are reused; a reader that sees base change while it reads skips the entry
// (a fault report racing a new chunk at the same index misses that chunk,
// the only inexactness, and only in a crashing process).
struct ChunkEntry {
  std::atomic<std::uintptr_t> base{0};
  std::atomic<std::size_t> bytes{0};
  std::atomic<std::size_t> slot{0};  // guard + usable size of its stacks
};
// Enough for a million 1 MiB stacks (15 per chunk): 3 MiB of zeroed data,
// touched only as far as used. Beyond that, chunks are unregistered and a
// fault in their guards is still recognised for the running fiber's own
// stack (Stack::guard_contains), just not as "another fiber's guard".
constexpr std::size_t kMaxChunks = std::size_t{1} << 17;
ChunkEntry g_chunks[kMaxChunks];
std::atomic<std::size_t> g_chunks_used{0};  // entries ever used (high water)
std::mutex g_chunks_mu;                     // writers only, never the handler
std::vector<std::size_t>* g_chunks_free;    // guarded by g_chunks_mu

void register_chunk(char* base, std::size_t bytes, std::size_t slot) {
  std::lock_guard<std::mutex> l(g_chunks_mu);
  std::size_t i;
  if (g_chunks_free != nullptr && !g_chunks_free->empty()) {
    i = g_chunks_free->back();
    g_chunks_free->pop_back();
  } else {
    i = g_chunks_used.load(std::memory_order_relaxed);
    if (i == kMaxChunks) return;
  }
  g_chunks[i].bytes.store(bytes, std::memory_order_relaxed);
  g_chunks[i].slot.store(slot, std::memory_order_relaxed);
  // REG: publish base last.
  g_chunks[i].base.store(reinterpret_cast<std::uintptr_t>(base),
                         std::memory_order_release);
  if (i == g_chunks_used.load(std::memory_order_relaxed)) {
    g_chunks_used.store(i + 1, std::memory_order_release);
  }
}

void unregister_chunk(char* base) {
  std::lock_guard<std::mutex> l(g_chunks_mu);
  const auto b = reinterpret_cast<std::uintptr_t>(base);
  const std::size_t n = g_chunks_used.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i) {
    if (g_chunks[i].base.load(std::memory_order_relaxed) == b) {
      g_chunks[i].base.store(0, std::memory_order_release);  // REG
      if (g_chunks_free == nullptr) {
        g_chunks_free = new std::vector<std::size_t>;
      }
      g_chunks_free->push_back(i);
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// XSAVE layout, probed once at load time (before main), so that the SIGURG
// handler reads plain constants.
XsaveLayout probe_xsave() {
  XsaveLayout x;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return x;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  __cpuid_count(0xD, 0, a, b, c, d);
  x.mask = (std::uint64_t{hi} << 32) | lo;
  x.size = b;  // bytes for the features enabled in XCR0
  return x;
}

const XsaveLayout g_xsave = probe_xsave();

constexpr unsigned char kPaintByte = 0xD7;
// How far below kPreemptFrames the debug check paints, so that frames that
// went deeper show up as a number rather than as "at least kPreemptFrames".
constexpr std::size_t kPaintMargin = 2048;

char* paint_floor(const char* stack_lo, char* save_area) {
  // Stay clear of the lowest word (a canary stack's canary).
  char* floor = save_area - kPreemptFrames - kPaintMargin;
  if (floor < stack_lo + 64) floor = const_cast<char*>(stack_lo) + 64;
  return floor;
}

}  // namespace

const XsaveLayout& xsave_layout() { return g_xsave; }

std::size_t preempt_stack_need() {
  // red zone, return address, 16 pushes (flags + 15 registers), alignment of
  // the XSAVE area to 64, the area, the frames the trampoline calls, and
  // those that take the walk to the scheduler stack.
  return 128 + 8 + 16 * 8 + 63 + g_xsave.size + kPreemptFrames +
         kPreemptWalkEntry;
}

std::size_t min_stack_size() {
  const std::size_t need = preempt_stack_need() + kMinFrameRoom;
  const std::size_t rounded = (need + kPageSize - 1) / kPageSize * kPageSize;
  return rounded > 16 * 1024 ? rounded : 16 * 1024;
}

// Reads rsp, then fills [floor, rsp - 160) with kPaintByte: a leaf without
// calls, so nothing of its own lives below rsp but its 128-byte red zone.
// Not instrumented: it writes dead stack that ASan may still have poisoned.
__attribute__((noinline, no_sanitize_address)) void preempt_frames_paint(
    const char* stack_lo, char* save_area) {
  char* sp;
  __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
  for (volatile char* p = paint_floor(stack_lo, save_area); p < sp - 160; ++p) {
    *p = static_cast<char>(kPaintByte);
  }
}

namespace {

// Relaxed: a test sets the flag before the preemptions it measures and
// reads the maximum after they resumed (run() joins the threads).
std::atomic<bool> g_frames_measure{false};
std::atomic<std::size_t> g_frames_max_used{0};

// Out of line, so that its message buffer is not part of the check's frame:
// the check runs where the yield's frames were, and its own frame would
// overwrite the paint it reads (a RawMsg in the check made every measurement
// read 1,224 bytes, 848 of them the check's own frame).
__attribute__((noinline, cold)) void preempt_frames_report(std::size_t used) {
  RawMsg m;
  m.str("goro: the frames below an asynchronous preemption used ");
  m.u64(used).str(" bytes (at least; kPreemptFrames is ");
  m.u64(kPreemptFrames).str(")\n");
  m.write_to(STDERR_FILENO);
}

}  // namespace

// A leaf but for the cold report: its frame stays small (see above).
__attribute__((noinline, no_sanitize_address)) void preempt_frames_check(
    const char* stack_lo, char* save_area) {
  const char* p = paint_floor(stack_lo, save_area);
  while (p < save_area && static_cast<unsigned char>(*p) == kPaintByte) ++p;
  const std::size_t used = static_cast<std::size_t>(save_area - p);
  std::size_t seen = g_frames_max_used.load(std::memory_order_relaxed);
  while (used > seen && !g_frames_max_used.compare_exchange_weak(
                            seen, used, std::memory_order_relaxed)) {
  }
  if (used > kPreemptFrames) preempt_frames_report(used);
  GORO_DCHECK(used <= kPreemptFrames);
}

void preempt_frames_measure(bool on) {
  g_frames_measure.store(on, std::memory_order_relaxed);
}
bool preempt_frames_measuring() {
  return g_frames_measure.load(std::memory_order_relaxed);
}
std::size_t preempt_frames_max_used() {
  return g_frames_max_used.load(std::memory_order_relaxed);
}

bool find_guard(const void* addr, Stack* guarded) {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const std::size_t n = g_chunks_used.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uintptr_t base =
        g_chunks[i].base.load(std::memory_order_acquire);
    if (base == 0 || a < base) continue;
    const std::size_t bytes = g_chunks[i].bytes.load(std::memory_order_relaxed);
    const std::size_t slot = g_chunks[i].slot.load(std::memory_order_relaxed);
    if (g_chunks[i].base.load(std::memory_order_acquire) != base) continue;
    if (a - base >= bytes || slot <= kGuardSize) continue;
    const std::uintptr_t start = base + (a - base) / slot * slot;
    if (a - start >= kGuardSize) return false;  // in a stack, not a guard
    guarded->lo = reinterpret_cast<char*>(start + kGuardSize);
    guarded->size = slot - kGuardSize;
    guarded->guard = GuardKind::kNone;  // not recorded per stack
    return true;
  }
  return false;
}

StackAllocator::StackAllocator(GuardMode mode, std::size_t mprotect_budget)
    : mode_(mode), mprotect_budget_(mprotect_budget) {}

StackAllocator::~StackAllocator() {
  // Unmap every chunk around the kept stacks (munmap may split a mapping).
  // A kept stack's chunk is unregistered too: an overflow there (only an
  // abandoned blocking() call still runs on one) is a plain SIGSEGV.
  std::sort(kept_.begin(), kept_.end(),
            [](const Stack& a, const Stack& b) { return a.lo < b.lo; });
  for (const Chunk& c : chunks_) {
    unregister_chunk(c.base);  // REG: before the memory goes
    // Valgrind: every slot's registration goes, except the kept stacks'
    // (they stay mapped; an abandoned blocking() call may still run there).
    const std::size_t n = c.valgrind_ids.size();
    for (std::size_t i = 0; i < n; ++i) {
      char* lo = c.base + i * (c.bytes / n) + kGuardSize;
      bool kept = false;
      for (const Stack& k : kept_) kept = kept || k.lo == lo;
      if (!kept) VALGRIND_STACK_DEREGISTER(c.valgrind_ids[i]);
    }
    char* from = c.base;
    char* const end = c.base + c.bytes;
    for (const Stack& k : kept_) {
      char* const klo = k.lo - kGuardSize;
      if (klo < c.base || klo >= end) continue;
      if (klo > from) munmap(from, static_cast<std::size_t>(klo - from));
      from = k.hi();
    }
    if (end > from) munmap(from, static_cast<std::size_t>(end - from));
  }
}

void StackAllocator::keep_mapped(const Stack& s) {
  std::lock_guard<std::mutex> l(mu_);
  kept_.push_back(s);
}

GuardKind StackAllocator::guard_kind() const {
  std::lock_guard<std::mutex> l(mu_);
  return kind_;
}

GuardKind StackAllocator::guard_locked(char* guard_page) {
  if (kind_ == GuardKind::kNone) {
    kind_ = mode_ == GuardMode::kCanary     ? GuardKind::kCanary
            : mode_ == GuardMode::kMprotect ? GuardKind::kMprotect
                                            : GuardKind::kMadvise;
  }
  if (kind_ == GuardKind::kMadvise) {
    if (madvise(guard_page, kGuardSize, MADV_GUARD_INSTALL) == 0) {
      return GuardKind::kMadvise;
    }
    // EINVAL: the kernel predates guard regions. Fall back for good.
    kind_ = GuardKind::kMprotect;
  }
  if (kind_ == GuardKind::kMprotect) {
    if (mprotect_budget_ > 0 &&
        mprotect(guard_page, kGuardSize, PROT_NONE) == 0) {
      --mprotect_budget_;
      return GuardKind::kMprotect;
    }
    kind_ = GuardKind::kCanary;  // budget spent, or mappings exhausted
  }
  return GuardKind::kCanary;
}

void StackAllocator::grow_locked(std::size_t size, FreeList& list) {
  const std::size_t slot = size + kGuardSize;
  std::size_t n = kChunkBytes / slot;
  if (n == 0) n = 1;
  const std::size_t bytes = n * slot;
  void* p =
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // A huge page would commit 2 MiB for a fiber that touches 4 KiB.
  madvise(p, bytes, MADV_NOHUGEPAGE);
  char* base = static_cast<char*>(p);
  chunks_.push_back({base, bytes, {}});
  register_chunk(base, bytes, slot);
  // Tell Valgrind (when it runs us: a client request is a few no-op
  // instructions otherwise) that every slot is a stack, so that a switch
  // is not taken for a wild stack-pointer change.
  if (RUNNING_ON_VALGRIND) {
    for (std::size_t i = 0; i < n; ++i) {
      char* lo = base + i * slot + kGuardSize;
      chunks_.back().valgrind_ids.push_back(
          VALGRIND_STACK_REGISTER(lo, lo + size));
    }
  }
  // Hand out low addresses first: push in reverse so pop_back takes them.
  for (std::size_t i = n; i-- > 0;) {
    char* guard = base + i * slot;
    char* lo = guard + kGuardSize;
    list.stacks.push_back(Stack{lo, size, guard_locked(guard)});
  }
}

namespace {
void arm_canary(const Stack& s) {
  if (s.guard == GuardKind::kCanary) {
    *reinterpret_cast<std::uint64_t*>(s.lo) = kStackCanary;
  }
}
}  // namespace

void StackAllocator::allocate_batch(std::size_t size, std::size_t n,
                                    std::vector<Stack>* out, Prefer prefer) {
  std::lock_guard<std::mutex> l(mu_);
  FreeList& list = free_[size];
  std::vector<Stack>* first =
      prefer == Prefer::kWarm ? &list.warm : &list.stacks;
  std::vector<Stack>* second =
      prefer == Prefer::kWarm ? &list.stacks : &list.warm;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<Stack>* from = first;
    if (from->empty()) from = second;
    if (from->empty()) {
      grow_locked(size, list);  // fills list.stacks
      from = &list.stacks;
    }
    Stack s = from->back();
    from->pop_back();
    arm_canary(s);
    out->push_back(s);
  }
}

Stack StackAllocator::allocate(std::size_t size) {
  std::vector<Stack> one;
  allocate_batch(size, 1, &one);
  return one[0];
}

void StackAllocator::release_batch(const Stack* s, std::size_t n) {
  std::lock_guard<std::mutex> l(mu_);
  for (std::size_t i = 0; i < n; ++i) free_[s[i].size].warm.push_back(s[i]);
}

std::size_t StackAllocator::scavenge(std::size_t max) {
  std::vector<Stack> cold;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [size, list] : free_) {
      while (list.warm.size() > kWarmKeep && cold.size() < max) {
        cold.push_back(list.warm.back());
        list.warm.pop_back();
      }
    }
  }
  if (cold.empty()) return 0;
  // Outside the lock: the system calls are the slow part.
  for (const Stack& s : cold) madvise(s.lo, s.size, MADV_DONTNEED);
  std::lock_guard<std::mutex> l(mu_);
  for (const Stack& s : cold) free_[s.size].stacks.push_back(s);
  return cold.size();
}

void StackAllocator::release(Stack s) {
  madvise(s.lo, s.size, MADV_DONTNEED);
  std::lock_guard<std::mutex> l(mu_);
  free_[s.size].stacks.push_back(s);
}

Stack StackCache::reserve(StackAllocator& a, std::size_t size,
                          std::size_t default_size) {
  if (size != default_size) return a.allocate(size);
  if (cold_.empty()) {
    a.allocate_batch(size, kCap / 2, &cold_, StackAllocator::Prefer::kCold);
  }
  Stack s = cold_.back();
  cold_.pop_back();
  arm_canary(s);
  return s;
}

void StackCache::swap_for_warm(StackAllocator& a, Stack* s,
                               std::size_t default_size) {
  if (s->size != default_size || warm_.empty()) return;
  Stack w = warm_.back();
  warm_.pop_back();
  arm_canary(w);
  push_bounded(a, &cold_, *s);
  *s = w;
}

void StackCache::put(StackAllocator& a, Stack s, std::size_t default_size) {
  if (s.size != default_size) {
    a.release(s);
    return;
  }
  push_bounded(a, &warm_, s);
}

void StackCache::push_bounded(StackAllocator& a, std::vector<Stack>* list,
                              Stack s) {
  if (list->size() >= kCap) {
    // The oldest half: for warm_ the coldest of the warm ones.
    const std::size_t half = kCap / 2;
    a.release_batch(list->data(), half);
    list->erase(list->begin(), list->begin() + static_cast<long>(half));
  }
  list->push_back(s);
}

}  // namespace goro::runtime_internal
