#!/bin/bash
# A/B comparison of benchmark binaries on a noisy machine: runs one
# benchmark in each binary in turn, REPS rounds (interleaved, so slow phases
# of the machine hit every binary alike), and prints the median, min and max
# of one counter per binary.
#
#   bench/ab.sh FILTER COUNTER REPS BINARY...
#   # e.g. the uncontended channel pair before and after a change:
#   cp bazel-bin/bench/chan_bench /tmp/before   # build, copy, change, build
#   bazel build -c opt //bench:chan_bench && cp bazel-bin/bench/chan_bench /tmp/after
#   bench/ab.sh BM_Chan_Uncontended ns_per_pair 7 /tmp/before /tmp/after
#
# FILTER is a --benchmark_filter regex that should select one benchmark;
# COUNTER is one of its counters (ns_per_pair, msgs_per_sec, ...). Binaries
# are told apart by file name.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
filter=$1 counter=$2 reps=$3
shift 3
for ((r = 0; r < reps; ++r)); do
  for bin in "$@"; do
    v=$("$bin" --benchmark_filter="$filter" 2>&1 |
      grep -oE "$counter=[0-9.]+[kMG]?" | head -1 | cut -d= -f2)
    echo "$(basename "$bin") ${v:-nan}"
  done
done | python3 -c '
import collections, sys
scale = {"k": 1e3, "M": 1e6, "G": 1e9}
runs = collections.OrderedDict()
for line in sys.stdin:
    name, v = line.split()
    m = 1.0
    if v[-1] in scale:
        m, v = scale[v[-1]], v[:-1]
    runs.setdefault(name, []).append(float(v) * m)
for name, xs in runs.items():
    xs.sort()
    print("%-20s median %.4g  min %.4g  max %.4g  (n=%d)" %
          (name, xs[len(xs) // 2], xs[0], xs[-1], len(xs)))
'
