// Copyright goro authors.
//
// Fiber stacks: fixed-size reservations carved from large MAP_NORESERVE
// chunks, so a million stacks cost a few thousand mappings, committed lazily
// by the kernel page by page.
//
// Each stack has one guard page below its lowest usable byte. Guards are
// installed with madvise(MADV_GUARD_INSTALL) (Linux >= 6.13), which marks the
// page inside the mapping without splitting it. Older kernels get a documented
// fallback: mprotect(PROT_NONE) guards while a budget lasts (each one splits a
// mapping, and vm.max_map_count is ~65530), then a canary word at the lowest
// usable address, checked every time the fiber switches out. Either way an
// overflow is reported and aborts; it never corrupts silently (as long as no
// single frame skips more than the guard page, which -fstack-clash-protection
// prevents).
//
// Threading: StackAllocator is shared by all Ps; its lock guards the chunk
// list and the free lists. The per-P StackCache is owner-only.

#ifndef GORO_RUNTIME_INTERNAL_STACK_H_
#define GORO_RUNTIME_INTERNAL_STACK_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace goro::runtime_internal {

inline constexpr std::size_t kPageSize = 4096;
inline constexpr std::size_t kGuardSize = kPageSize;
inline constexpr std::uint64_t kStackCanary = 0x676f726f5f636e72ULL;

enum class GuardKind : std::uint8_t { kNone, kMadvise, kMprotect, kCanary };

struct Stack {
  char* lo = nullptr;  // lowest usable byte; the guard is [lo - kGuardSize, lo)
  std::size_t size = 0;  // usable bytes
  GuardKind guard = GuardKind::kNone;

  char* hi() const { return lo + size; }
  bool empty() const { return lo == nullptr; }
  // True when a fault at `addr` is an overflow of this stack.
  bool guard_contains(const void* addr) const {
    const char* a = static_cast<const char*>(addr);
    return lo != nullptr && a >= lo - kGuardSize && a < lo;
  }
  bool canary_intact() const {
    return guard != GuardKind::kCanary ||
           *reinterpret_cast<const std::uint64_t*>(lo) == kStackCanary;
  }
};

// How guards are made; kAuto probes the kernel. The others exist so tests can
// exercise the fallbacks on a kernel that has MADV_GUARD_INSTALL.
enum class GuardMode { kAuto, kMprotect, kCanary };

class StackAllocator {
 public:
  explicit StackAllocator(GuardMode mode = GuardMode::kAuto,
                          std::size_t mprotect_budget = 16384);
  ~StackAllocator();  // unmaps every chunk: all stacks die with it
  StackAllocator(const StackAllocator&) = delete;
  StackAllocator& operator=(const StackAllocator&) = delete;

  // allocate returns a stack of `size` usable bytes (a multiple of kPageSize).
  // Throws std::bad_alloc when the address space is exhausted.
  Stack allocate(std::size_t size);

  // release returns a stack for reuse. Its memory is given back to the kernel
  // (MADV_DONTNEED) first; the reservation and the guard stay.
  void release(Stack s);

  // Batch forms, one lock round trip for many stacks (the per-P caches
  // exchange stacks with the allocator half a cache at a time).
  // release_batch keeps the stacks as they are ("warm": their touched pages
  // stay committed, so the next fiber does not fault them in again, and no
  // TLB shootdown interrupts the other threads); scavenge() returns the
  // memory later, like Go's background scavenger.
  void allocate_batch(std::size_t size, std::size_t n, std::vector<Stack>* out);
  void release_batch(const Stack* s, std::size_t n);

  // scavenge gives the memory of warm stacks beyond kWarmKeep per size (at
  // most `max` of them per call) back to the kernel. Called periodically by
  // sysmon; returns how many stacks it released.
  std::size_t scavenge(std::size_t max);

  // Warm stacks a size keeps through scavenging. A stack's warm pages are
  // usually one or two (what its fiber touched).
  static constexpr std::size_t kWarmKeep = 1024;

  // The kind of guard new stacks get (after probing).
  GuardKind guard_kind() const;

  // keep_mapped leaves `s` (and its guard) mapped when the allocator is
  // destroyed: a runtime that ends while something may still use a fiber's
  // stack (a thread inside goro::blocking(), a sync object pointing at a
  // parked fiber's waiter) hands that stack's ownership to someone else.
  void keep_mapped(const Stack& s);

 private:
  struct FreeList {
    std::vector<Stack> warm;    // memory possibly committed
    std::vector<Stack> stacks;  // memory returned to the kernel
  };
  void grow_locked(std::size_t size, FreeList& list);
  GuardKind guard_locked(char* guard_page);

  mutable std::mutex mu_;
  // Guarded by mu_:
  GuardMode mode_;
  GuardKind kind_ = GuardKind::kNone;  // kNone until probed
  std::size_t mprotect_budget_;
  std::map<std::size_t, FreeList> free_;  // by usable size
  struct Chunk {
    char* base;
    std::size_t bytes;
  };
  std::vector<Chunk> chunks_;
  std::vector<Stack> kept_;  // see keep_mapped
};

// A P's private cache of default-size stacks, kept committed ("warm"). Above
// kCap the excess goes back to the allocator (and the kernel).
class StackCache {
 public:
  static constexpr std::size_t kCap = 128;

  // get returns a stack of `size`; default-size stacks come from the cache,
  // refilled kCap/2 at a time.
  Stack get(StackAllocator& a, std::size_t size, std::size_t default_size);
  Stack get(StackAllocator& a, std::size_t size) { return get(a, size, size); }
  // put caches a default-size stack; a full cache gives half back.
  void put(StackAllocator& a, Stack s, std::size_t default_size);
  void drain() { cache_.clear(); }  // the allocator is about to unmap them

 private:
  std::vector<Stack> cache_;  // all of the default size
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_STACK_H_
