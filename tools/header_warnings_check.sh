#!/usr/bin/env bash
# The public headers compile warning-free under a user's strict flags: builds
# tools/header_check.cc (goro.h with every public template instantiated) with
# GCC and Clang, -Wall -Wextra -Wpedantic -Werror, at -O0 and -O2 (some GCC
# warnings only come from the optimizer). Run by
# //tools:header_warnings_test, or by hand from the workspace root:
#   bash tools/header_warnings_check.sh
set -euo pipefail
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  cd "$TEST_SRCDIR/${TEST_WORKSPACE:-goro}"
else
  cd "$(dirname "$0")/.."
fi
out="${TEST_TMPDIR:-$(mktemp -d)}"
status=0
ran=0
for cxx in g++ clang++; do
  if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "header_warnings_check: $cxx not found (bash tools/setup.sh installs it)" >&2
    status=1
    continue
  fi
  for opt in -O0 -O2; do
    ran=$((ran + 1))
    if ! msg=$("$cxx" -std=c++20 "$opt" -Wall -Wextra -Wpedantic -Werror \
        -fstack-clash-protection -fno-omit-frame-pointer -I. \
        -c tools/header_check.cc -o "$out/header_check.o" 2>&1); then
      echo "=== $cxx $opt: warnings or errors in goro's public headers:" >&2
      echo "$msg" >&2
      status=1
    fi
  done
done
echo "header_warnings_check: $ran compiles, $([[ $status == 0 ]] && echo clean || echo FAILED)"
exit "$status"
