// Copyright goro authors.

#include "tests/runtime/no_clash_frames.h"

namespace goro_test {
namespace {

// The first write after the frame is allocated is its lowest byte, kBytes
// below the caller's stack pointer: without probes nothing touches the pages
// in between, so a guard region smaller than the frame is jumped.
template <std::size_t kBytes>
__attribute__((noinline)) int BigFrame() {
  volatile char frame[kBytes];
  frame[0] = 0x5A;
  return frame[0];
}

}  // namespace

int BigFrameNoProbe48K() { return BigFrame<48 * 1024>(); }
int BigFrameNoProbe60K() { return BigFrame<60 * 1024>(); }

}  // namespace goro_test
