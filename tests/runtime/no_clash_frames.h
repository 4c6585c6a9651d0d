// Copyright goro authors.
//
// Functions with big frames, compiled WITHOUT -fstack-clash-protection
// (see BUILD.bazel): they move the stack pointer by the whole frame at once,
// with no probe per page, the way third-party code built without the flag
// does. Used to check what the guard region alone catches.

#ifndef GORO_TESTS_RUNTIME_NO_CLASH_FRAMES_H_
#define GORO_TESTS_RUNTIME_NO_CLASH_FRAMES_H_

#include <cstddef>

namespace goro_test {

// Each puts a local array of the named size on the stack and writes only its
// lowest byte, the way a big buffer is filled from its start.
int BigFrameNoProbe48K();
int BigFrameNoProbe60K();

}  // namespace goro_test

#endif  // GORO_TESTS_RUNTIME_NO_CLASH_FRAMES_H_
