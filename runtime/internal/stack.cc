// Copyright goro authors.

#include "runtime/internal/stack.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <new>

namespace goro::runtime_internal {
namespace {

#ifndef MADV_GUARD_INSTALL
constexpr int MADV_GUARD_INSTALL = 102;  // Linux 6.13 uapi
#endif

// Chunks are ~16 MiB of address space: a million 64 KiB stacks need ~4,300
// chunks, far below vm.max_map_count, and adjacent chunks often merge.
constexpr std::size_t kChunkBytes = 16u << 20;

}  // namespace

StackAllocator::StackAllocator(GuardMode mode, std::size_t mprotect_budget)
    : mode_(mode), mprotect_budget_(mprotect_budget) {}

StackAllocator::~StackAllocator() {
  // Unmap every chunk around the kept stacks (munmap may split a mapping).
  std::sort(kept_.begin(), kept_.end(),
            [](const Stack& a, const Stack& b) { return a.lo < b.lo; });
  for (const Chunk& c : chunks_) {
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
  chunks_.push_back({base, bytes});
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
                                    std::vector<Stack>* out) {
  std::lock_guard<std::mutex> l(mu_);
  FreeList& list = free_[size];
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<Stack>* from = &list.warm;
    if (from->empty()) {
      if (list.stacks.empty()) grow_locked(size, list);
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

Stack StackCache::get(StackAllocator& a, std::size_t size,
                      std::size_t default_size) {
  if (size != default_size) return a.allocate(size);
  if (cache_.empty()) a.allocate_batch(size, kCap / 2, &cache_);
  Stack s = cache_.back();
  cache_.pop_back();
  arm_canary(s);
  return s;
}

void StackCache::put(StackAllocator& a, Stack s, std::size_t default_size) {
  if (s.size != default_size) {
    a.release(s);
    return;
  }
  if (cache_.size() >= kCap) {
    const std::size_t half = kCap / 2;
    a.release_batch(cache_.data() + cache_.size() - half, half);
    cache_.resize(cache_.size() - half);
  }
  cache_.push_back(s);
}

}  // namespace goro::runtime_internal
