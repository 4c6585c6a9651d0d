#!/usr/bin/env bash
# Installs the Debian 12 packages goro needs to build and test, but only the
# ones that are missing. Silent when everything is already installed.
# Works offline as long as Debian's package mirror is reachable.
set -euo pipefail

# cmake and pkg-config: the non-Bazel build that CI checks
# (examples/build_both_ways.sh); valgrind and libdw1: the memcheck pass and
# the fiber dumps' file:line; gdb: tests/diag:gdb_test runs tools/goro-gdb.py
# in it.
packages=(bazel-bootstrap libunwind-dev libabsl-dev libgtest-dev libbenchmark-dev python3 clang
  cmake pkg-config valgrind libdw1 gdb)

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
for c in bazel python3; do
  if ! command -v "$c" >/dev/null 2>&1; then
    case "$c" in
      bazel) p=bazel-bootstrap ;;
      *) p="$c" ;;
    esac
    [[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p")
  fi
done

((${#missing[@]} == 0)) && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq </dev/null
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
