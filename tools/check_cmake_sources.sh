#!/usr/bin/env bash
# Checks that CMakeLists.txt builds what Bazel's //:goro builds: the files in
# its GORO_SOURCES, GORO_HEADERS and GORO_LINK_SCRIPTS lists must be exactly the source files of
# goro's own packages that //:goro depends on (bazel query), so that neither
# build rots when a file is added, removed or renamed. Also checks that its
# GORO_ABSL_COMPONENTS are third_party/BUILD.bazel's Abseil archives, in
# order. Run by .ci/run; by hand from anywhere:
#   bash tools/check_cmake_sources.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# //pkg:path -> pkg/path; //:goro.h -> goro.h; external repositories dropped.
bazel query 'kind("source file", deps(//:goro))' 2>/dev/null |
  grep -v '^@' | sed -e 's|^//:||' -e 's|^//\([^:]*\):|\1/|' | sort >"$work/bazel"
cmake_list() {  # the entries of set(NAME ...) in CMakeLists.txt
  awk -v name="$1" '
    $0 ~ "^set\\(" name "$" { on = 1; next }
    on && /^\)/ { on = 0 }
    on { print $1 }' CMakeLists.txt
}
{
  cmake_list GORO_SOURCES
  cmake_list GORO_HEADERS
  cmake_list GORO_LINK_SCRIPTS
} | sort >"$work/cmake"
status=0
if ! diff -u --label bazel --label CMakeLists.txt "$work/bazel" "$work/cmake"; then
  echo "check_cmake_sources: CMakeLists.txt's GORO_SOURCES/GORO_HEADERS/GORO_LINK_SCRIPTS differ from //:goro's sources (above: - only in Bazel, + only in CMake)" >&2
  status=1
fi
grep -o '"-l:libabsl_[a-z0-9_]*\.a"' third_party/BUILD.bazel |
  sed 's/"-l:libabsl_\(.*\)\.a"/\1/' >"$work/bazel_absl"
cmake_list GORO_ABSL_COMPONENTS >"$work/cmake_absl"
if ! diff -u --label third_party/BUILD.bazel --label CMakeLists.txt "$work/bazel_absl" "$work/cmake_absl"; then
  echo "check_cmake_sources: GORO_ABSL_COMPONENTS differs from //third_party:absl" >&2
  status=1
fi
n=$(wc -l <"$work/bazel")
if [[ "$status" == 0 ]]; then
  echo "check_cmake_sources: $n files and $(wc -l <"$work/cmake_absl") Abseil libraries, same in both builds"
fi
exit "$status"
