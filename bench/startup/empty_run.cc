// Copyright goro authors.
//
// Start-up cost: the smallest goro program, an empty goro::run. Timed
// against Go's empty program (empty.go) and an empty C++ main
// (empty_main.cc) by bench/startup/startup.sh.

#include "goro.h"

int main() {
  return goro::run([] { return 0; });
}
