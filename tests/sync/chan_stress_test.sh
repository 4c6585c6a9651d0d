#!/bin/bash
# Short runs of tools/chan_stress over its main modes. Fails on any loss,
# duplicate, FIFO violation (exit 1) or hang (exit 2, via --hang_timeout).
set -u
bin="$1"
# Messages per run; .bazelrc lowers it for --config=asan and --config=tsan
# (--test_env), which run about ten times slower.
n="${CHAN_STRESS_MESSAGES:-20000}"
echo "chan_stress_test: $n messages per run"
fail=0
run() {
  echo "== chan_stress $*"
  out=$(timeout 120 "$bin" --quiet --hang_timeout=20s "$@" 2>&1)
  rc=$?
  echo "$out" | tail -3
  if [[ $rc -ne 0 ]]; then
    echo "FAILED (exit $rc): chan_stress $*"
    fail=1
  elif ! grep -q "lost 0 duplicated 0" <<<"$out"; then
    echo "FAILED (no clean summary): chan_stress $*"
    fail=1
  fi
}
run --producers=4 --consumers=4 --selectors=2 --capacity=0 --messages="$n" --procs=2
run --producers=4 --consumers=3 --selectors=3 --capacity=8 --messages="$n" --procs=4
run --producers=3 --consumers=2 --selectors=0 --capacity=64 --messages="$n" --procs=1
run --producers=6 --consumers=4 --selectors=2 --capacity=0 --channels=3 --messages="$n" --procs=2 --close_early
run --producers=4 --consumers=4 --selectors=4 --capacity=1 --messages="$n" --procs=2 --time_slice=100us --close_early
run --producers=2 --consumers=2 --selectors=2 --capacity=0 --duration=1s --procs=2
# Buffered rings of odd capacity (lock-free paths racing parks and close).
run --producers=5 --consumers=3 --selectors=3 --capacity=3 --channels=2 --messages="$n" --procs=2 --close_early
run --producers=4 --consumers=4 --selectors=0 --capacity=1024 --messages="$n" --procs=2
exit $fail
