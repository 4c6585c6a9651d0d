#!/usr/bin/env bash
# Clang's -Wthread-safety analysis over goro's library sources: checks the
# ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations that GCC, which
# builds everything else, ignores. Syntax-only (no code generation), so it
# costs seconds. Run by //tools:thread_safety_test, or by hand from the
# workspace root:
#   bash tools/thread_safety_check.sh [FILE.cc ...]
# Exits non-zero on any thread-safety warning or compile error.
set -euo pipefail
# Under `bazel test` the sources are runfiles of the test; by hand, the tree.
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  cd "$TEST_SRCDIR/${TEST_WORKSPACE:-goro}"
else
  cd "$(dirname "$0")/.."
fi
clang=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$clang" ]]; then
  echo "thread_safety_check: clang++ not found (bash tools/setup.sh installs it)" >&2
  exit 1
fi
if [[ $# -gt 0 ]]; then
  files=("$@")
else
  mapfile -t files < <(find runtime preempt sync net diag -name '*.cc' 2>/dev/null | sort)
fi
status=0
for f in "${files[@]}"; do
  if ! out=$("$clang" -std=c++20 -fsyntax-only -I. -Wthread-safety \
      -Wthread-safety-beta -Werror=thread-safety -Werror=thread-safety-beta \
      -Wno-unknown-attributes "$f" 2>&1); then
    echo "$out" >&2
    status=1
  elif [[ -n "$out" ]]; then
    echo "$out" >&2
  fi
done
echo "thread_safety_check: ${#files[@]} files, $([[ $status == 0 ]] && echo clean || echo FAILED)"
exit "$status"
