// Copyright goro authors.
//
// RawMsg: a message built in a fixed buffer and written to a file
// descriptor with one write(2), for the places that may not allocate or
// take a lock -- signal handlers, and checks that run on a fiber's last
// bytes of stack. Async-signal-safe; a message longer than the buffer is
// cut short, never overflows it.

#ifndef GORO_RUNTIME_INTERNAL_RAW_MSG_H_
#define GORO_RUNTIME_INTERNAL_RAW_MSG_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace goro::runtime_internal {

class RawMsg {
 public:
  RawMsg() = default;
  RawMsg(const RawMsg&) = delete;
  RawMsg& operator=(const RawMsg&) = delete;

  RawMsg& str(const char* s) {
    while (*s != '\0' && pos_ < sizeof(buf_)) buf_[pos_++] = *s++;
    return *this;
  }
  RawMsg& bytes(const char* p, std::size_t n) {
    for (std::size_t i = 0; i < n && pos_ < sizeof(buf_); ++i) {
      buf_[pos_++] = p[i];
    }
    return *this;
  }
  RawMsg& u64(std::uint64_t v) { return digits(v, 10, "0123456789"); }
  RawMsg& hex(std::uintptr_t v) {
    return str("0x").digits(v, 16, "0123456789abcdef");
  }
  void write_to(int fd) const {
    ssize_t unused = write(fd, buf_, pos_);
    (void)unused;
  }

 private:
  RawMsg& digits(std::uint64_t v, unsigned base, const char* alphabet) {
    char tmp[24];  // 2^64 has 20 decimal digits, 16 hex
    int n = 0;
    do {
      tmp[n++] = alphabet[v % base];
      v /= base;
    } while (v != 0);
    while (n > 0 && pos_ < sizeof(buf_)) buf_[pos_++] = tmp[--n];
    return *this;
  }

  char buf_[768];
  std::size_t pos_ = 0;
};

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_RAW_MSG_H_
