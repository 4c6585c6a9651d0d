#!/usr/bin/env bash
# Builds and runs the goro demo (//tools:demo). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec bazel run --noshow_progress --ui_event_filters=-info //tools:demo -- "$@"
