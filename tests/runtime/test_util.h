// Copyright goro authors.
//
// Kept so that branches in flight that include it still build: the helpers
// live in tests/common/test_util.h now (one style for every test directory);
// include that instead.

#ifndef GORO_TESTS_RUNTIME_TEST_UTIL_H_
#define GORO_TESTS_RUNTIME_TEST_UTIL_H_

#include "tests/common/test_util.h"

#endif  // GORO_TESTS_RUNTIME_TEST_UTIL_H_
