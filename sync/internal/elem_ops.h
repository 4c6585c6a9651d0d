// Copyright goro authors.
//
// ElemOps: how sync/'s type-erased structures (ChanCore, Ring, select) move
// and destroy elements of one type. Internal to sync/.

#ifndef GORO_SYNC_INTERNAL_ELEM_OPS_H_
#define GORO_SYNC_INTERNAL_ELEM_OPS_H_

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace goro::sync_internal {

struct ElemOps {
  std::size_t size;
  std::size_t stride;  // size rounded up to the alignment
  std::size_t align;
  bool trivial;  // memcpy moves, destroy is a no-op
  void (*move_construct)(void* dst, void* src);  // dst is raw storage
  void (*destroy)(void* p);

  // move moves *src into the raw storage dst (src stays constructed).
  // GCC, inlining this where dst or src is a local of known size, warns
  // about the cases for other sizes, which `size` rules out at run time.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#ifndef __clang__  // Clang has no -Wstringop-overflow (and would warn)
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
  void move(void* dst, void* src) const {
    if (trivial) {
      // Word-sized values (the common case: ints, pointers, small structs)
      // are copied inline; a call into libc's memcpy would cost more than
      // the rest of an uncontended send.
      switch (size) {
        case 4:
          __builtin_memcpy(dst, src, 4);
          return;
        case 8:
          __builtin_memcpy(dst, src, 8);
          return;
        case 16:
          __builtin_memcpy(dst, src, 16);
          return;
        default:
          std::memcpy(dst, src, size);
          return;
      }
    }
    move_construct(dst, src);
  }
#pragma GCC diagnostic pop
  void destroy_elem(void* p) const {
    if (!trivial) destroy(p);
  }
};

template <typename T>
inline constexpr ElemOps kElemOps = {
    sizeof(T),
    (sizeof(T) + alignof(T) - 1) / alignof(T) * alignof(T),
    alignof(T),
    std::is_trivially_copyable_v<T>&& std::is_trivially_destructible_v<T>,
    [](void* dst, void* src) {
      ::new (dst) T(std::move(*static_cast<T*>(src)));
    },
    [](void* p) { static_cast<T*>(p)->~T(); },
};

}  // namespace goro::sync_internal

#endif  // GORO_SYNC_INTERNAL_ELEM_OPS_H_
