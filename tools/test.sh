#!/usr/bin/env bash
# Builds and runs the whole goro test suite. Extra arguments go to
# `bazel test`, e.g. `bash tools/test.sh --config=asan`. Exit code is bazel's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec bazel test //... "$@"
