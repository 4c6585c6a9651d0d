#!/usr/bin/env bash
# Builds goro with CMake, installs it into a temporary prefix, and builds and
# runs examples/consumer against the installed copy both ways a non-Bazel
# project would:
#   find_package  cmake -S examples/consumer -DCMAKE_PREFIX_PATH=<prefix>
#   pkg-config    c++ main.cc $(pkg-config --cflags --libs goro)
# plus two controls that must FAIL: the same program linked against
# libgoro.a without --whole-archive (the linker then drops the preemption
# hooks, and the consumer reports that a spinning fiber was not preempted),
# and linked without goro's linker script (libstdc++'s static code is then
# not marked; goro says so and refuses preemption in the whole program,
# rather than allow it inside libstdc++). Without the controls, a consumer
# check that passed whatever was linked would prove nothing.
#
# Prints one line per case ("example: <case>: ok" or "... FAILED") and, last,
# "examples: N passed, M failed". Exit status non-zero if any case failed.
#   bash examples/build_both_ways.sh [BUILD_DIR]
# BUILD_DIR (default: a temporary directory) keeps the CMake build of goro.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
build="${1:-$work/build}"
prefix="$work/prefix"
jobs="$(nproc 2>/dev/null || echo 2)"
passed=0
failed=0
result() {  # result NAME STATUS(0=ok) LOG
  if [[ "$2" == 0 ]]; then
    echo "example: $1: ok"
    passed=$((passed + 1))
  else
    echo "example: $1: FAILED"
    sed 's/^/    /' "$3" | tail -30
    failed=$((failed + 1))
  fi
}

log="$work/goro.log"
{
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build "$build" -j "$jobs" &&
    cmake --install "$build" --prefix "$prefix"
} >"$log" 2>&1
st=$?
result "cmake build and install of goro" "$st" "$log"
if ((st != 0)); then
  echo "examples: $passed passed, $((failed + 4)) failed"
  exit 1
fi
for f in lib/libgoro.a lib/cmake/goro/goroConfig.cmake lib/pkgconfig/goro.pc include/goro/goro.h; do
  [[ -e "$prefix/$f" ]] || { echo "example: install: $f missing"; failed=$((failed + 1)); }
done

log="$work/find_package.log"
{
  cmake -S examples/consumer -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$work/consumer" &&
    "$work/consumer/consumer" &&
    # Bound at start-up (-z now, from goro's link flags): see CMakeLists.txt.
    readelf -d "$work/consumer/consumer" | grep -q "FLAGS.*NOW"
} >"$log" 2>&1
result "find_package(goro) consumer" $? "$log"

log="$work/pkg-config.log"
{
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  # shellcheck disable=SC2046  # word splitting is the point
  c++ -O2 -o "$work/consumer_pc" examples/consumer/main.cc \
    $(pkg-config --cflags --libs goro) &&
    "$work/consumer_pc" &&
    readelf -d "$work/consumer_pc" | grep -q "FLAGS.*NOW"
} >"$log" 2>&1
result "pkg-config goro consumer" $? "$log"

# The control: no --whole-archive. Must build and then fail its check.
log="$work/control.log"
{
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  libs="$(pkg-config --libs goro)"
  libs="${libs/-Wl,--whole-archive -lgoro -Wl,--no-whole-archive/-lgoro}"
  # shellcheck disable=SC2046,SC2086
  c++ -O2 -o "$work/consumer_plain" examples/consumer/main.cc \
    $(pkg-config --cflags goro) $libs &&
    ! "$work/consumer_plain" &&
    grep -q "was not preempted" "$log"
} >"$log" 2>&1
result "control: plain static link (no --whole-archive) is caught" $? "$log"

# The control for the linker script: without it, the program must say why
# preemption is off, and the spinner must not be preempted.
log="$work/control_lds.log"
{
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  libs="$(pkg-config --libs goro)"
  libs="${libs/ -Wl,-T,*denied_text.lds/}"
  [[ "$libs" != *denied_text* ]] &&
    # shellcheck disable=SC2046,SC2086
    c++ -O2 -o "$work/consumer_nolds" examples/consumer/main.cc \
      $(pkg-config --cflags goro) $libs &&
    ! "$work/consumer_nolds" 2>&1 &&
    grep -q "was not preempted" "$log" &&
    grep -q "linked without goro's linker flags" "$log"
} >"$log" 2>&1
result "control: link without goro's linker script is caught" $? "$log"

echo "examples: $passed passed, $failed failed"
((failed == 0))
