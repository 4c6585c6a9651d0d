#!/usr/bin/env bash
# Compile time of goro::select: generates a translation unit with N selects
# (a mix of 2-, 3- and 4-case selects, recv/send/default, each with its own
# lambdas, as real code has) and times g++ -O2 with the Bazel build's flags.
#   bash bench/select_compile_time.sh [N=200] [compiler=g++]
# Prints the compiler's CPU seconds (user + sys: steadier than wall time on a
# shared machine) for the file, for a file that only includes goro.h, and
# their difference per select.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200}"
cxx="${2:-g++}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  echo '#include "goro.h"'
  echo 'int sink;'
  for ((i = 0; i < n; ++i)); do
    echo "void f$i(const goro::Chan<int>& a, const goro::Chan<long>& b, const goro::Chan<int>& c) {"
    case $((i % 3)) in
      0) echo "  goro::select(goro::recv_case(a, [](std::optional<int> v) { sink += v.value_or($i); }),"
         echo "               goro::send_case(b, $i, [] { sink += $i; }));" ;;
      1) echo "  goro::select(goro::recv_case(a, [](std::optional<int> v) { sink += v.value_or($i); }),"
         echo "               goro::recv_case(c, [] { sink -= $i; }),"
         echo "               goro::default_case([] { sink ^= $i; }));" ;;
      2) echo "  goro::select(goro::recv_case(a, [](std::optional<int> v) { sink += v.value_or($i); }),"
         echo "               goro::send_case(b, $i, [] { sink += $i; }),"
         echo "               goro::recv_case(c, [](std::optional<int> v) { sink -= v.value_or(0); }),"
         echo "               goro::default_case([] { sink ^= $i; }));" ;;
    esac
    echo "}"
  done
} >"$work/many.cc"
echo '#include "goro.h"' >"$work/empty.cc"
flags=(-std=c++20 -O2 -g -fno-omit-frame-pointer -fstack-clash-protection -I. -c)
t() {
  local TIMEFORMAT='%U + %S'
  { time "$cxx" "${flags[@]}" "$1" -o "$work/out.o" 2>/dev/null; } 2>&1 | bc
}
base=$(t "$work/empty.cc")
many=$(t "$work/many.cc")
printf '%s: %d selects: %.2f s; goro.h alone: %.2f s; per select: %.1f ms\n' \
  "$cxx" "$n" "$many" "$base" "$(echo "($many - $base) * 1000 / $n" | bc -l)"
