#!/usr/bin/env bash
# Start-up cost against Go's empty program. Times each program with
# `perf stat -r 100` (REPS), five rounds (ROUNDS), interleaved (so load from
# other work on the machine hits every program alike), and prints per
# program the median of the five rounds' mean wall times, its ratio to
# Go's, and the median of the per-round ratios (each round's time over Go's
# in the same round), then the same for CPU time (perf's task-clock, all
# threads: steadier on a loaded machine).
#   bash bench/startup/startup.sh [NAME=BINARY ...]
# Without arguments: builds //bench:startup_empty_run and
# //bench:startup_empty_main and Go's empty.go (golang-1.19-go), and times
# those three. See bench/README.md, "Start-up".
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-5}"
reps="${REPS:-100}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
go=/usr/lib/go-1.19/bin/go
if [[ ! -x "$go" ]]; then
  echo "startup: needs Go 1.19 (apt-get install golang-1.19-go)" >&2
  exit 1
fi
GOCACHE="$work/gocache" GOFLAGS=-mod=mod "$go" build -o "$work/go_empty" bench/startup/empty.go
progs=("go_empty=$work/go_empty")
if (($# == 0)); then
  bazel build //bench:startup_empty_run //bench:startup_empty_main >&2
  bin="$(bazel info bazel-bin 2>/dev/null)/bench"
  progs+=("cc_empty_main=$bin/startup_empty_main" "goro_empty_run=$bin/startup_empty_run")
else
  progs+=("$@")
fi
for ((r = 0; r < rounds; ++r)); do
  for p in "${progs[@]}"; do
    name="${p%%=*}"
    perf stat -r "$reps" "${p#*=}" 2>&1 >/dev/null |
      awk -v n="$name" '/msec task-clock/ {cpu = $1}
        /seconds time elapsed/ {print n, $1 * 1000, cpu}' >>"$work/times"
  done
done
python3 - "$work/times" "${progs[@]}" <<'PY'
import statistics, sys
times, cpus = {}, {}
for line in open(sys.argv[1]):
    n, ms, cpu = line.split()
    times.setdefault(n, []).append(float(ms))
    cpus.setdefault(n, []).append(float(cpu))
for title, data in (("wall", times), ("cpu", cpus)):
    go = statistics.median(data["go_empty"])
    for p in sys.argv[2:]:
        n = p.split("=", 1)[0]
        m = statistics.median(data[n])
        # Each round's ratio to Go's time in the same round, then their
        # median: steadier than the ratio of medians when the load swings.
        per = statistics.median(a / b for a, b in zip(data[n], data["go_empty"]))
        rounds = " ".join(f"{t:.2f}" for t in data[n])
        print(f"{title:4s} {n:24s} {m:7.2f} ms  {m / go:5.2f}x Go"
              f"  per-round {per:5.2f}x   (rounds: {rounds})")
PY
