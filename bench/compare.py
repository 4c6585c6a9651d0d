#!/usr/bin/env python3
"""Side-by-side comparison of goro's benchmarks with the Go 1.19 peer.

Builds the Go peer (bench/peers/go) into a temporary directory, builds
goro's Google Benchmark binaries with `bazel build -c opt //bench:all`,
runs every goro benchmark in a process of its own and the Go peer for the
same workload right after it, and prints a table:

    workload | procs | metric | goro | Go | goro/Go | target | verdict

Usage:
    python3 bench/compare.py                  # everything, plain-text table
    python3 bench/compare.py --markdown       # markdown table for bench/README.md
    python3 bench/compare.py --only='chan|select'
    python3 bench/compare.py --no-goro        # Go figures only
    python3 bench/compare.py --goro-json=out.json   # goro figures from a saved
                                              # Google Benchmark JSON (testing)

A goro binary that does not exist yet (or fails to build) is skipped with a
note; its rows still show the Go figures. Progress goes to stderr, the table
to stdout. Exit status 1 if a benchmark process failed.

Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GO_PEER_DIR = REPO / "bench" / "peers" / "go"
GO_DEFAULT = "/usr/lib/go-1.19/bin/go"

# goro benchmark binaries: short name -> bazel label. The binary is expected
# at <bazel-bin>/bench/<short name>.
GORO_BINARIES = {
    "runtime_bench": "//bench:runtime_bench",
    "preempt_bench": "//bench:preempt_bench",
    "chan_bench": "//bench:chan_bench",
}

# ---------------------------------------------------------------------------
# Targets. le/ge compare the goro value with a constant, ratio_* compare
# goro/Go, between is an inclusive range on the goro value.
Target = namedtuple("Target", "kind a b")


def le(x):
    return Target("le", x, None)


def ratio_le(x):
    return Target("ratio_le", x, None)


def ratio_ge(x):
    return Target("ratio_ge", x, None)


def between(a, b):
    return Target("between", a, b)


# ---------------------------------------------------------------------------
# The mapping. One row per line of the output table; edit here when a
# benchmark name, counter or target changes.
#
#   workload     label in the table (what --only matches, with the names below)
#   procs        shown in the table; also -procs= for the Go peer
#   metric       shown in the table
#   goro_bin     key of GORO_BINARIES, or None (no goro side)
#   goro_bench   Google Benchmark name, without /iterations:, /real_time, ...
#   goro_counter counter key of the JSON entry; "real_time" means the
#                entry's real_time converted to ns
#   go_bench     -bench= of the Go peer, or None (no Go peer)
#   go_name      "name" field of the Go peer's JSON line
#   go_metric    "metric" field of the Go peer's JSON line
#   go_args      extra Go peer flags (e.g. "-n=100000")
#   reps         --benchmark_repetitions for the goro run (median is used);
#                --repetitions overrides
#   target       a Target, or None
Row = namedtuple(
    "Row",
    "workload procs metric goro_bin goro_bench goro_counter "
    "go_bench go_name go_metric go_args reps target",
)


def row(workload, procs, metric, goro_bin, goro_bench, goro_counter,
        go_bench, go_name=None, go_metric=None, go_args=(), reps=1, target=None):
    return Row(workload, procs, metric, goro_bin, goro_bench, goro_counter,
               go_bench, go_name or go_bench, go_metric or metric,
               tuple(go_args), reps, target)


def _build_rows():
    R = []
    # --- runtime_bench ---
    R.append(row("yield", 1, "ns_per_switch", "runtime_bench", "BM_Yield",
                 "real_time", "yield", reps=5, target=le(25)))
    for p in (1, 2):
        R.append(row("spawn_join", p, "ns_per_fiber", "runtime_bench",
                     f"BM_SpawnJoin/procs:{p}", "ns_per_fiber", "spawn_join",
                     reps=5, target=le(250) if p == 2 else None))
    for p in (1, 2):
        # goro's skynet uses a WaitGroup: like for like is Go's skynet_wg.
        R.append(row("skynet_wg", p, "ms", "runtime_bench", f"BM_Skynet/procs:{p}",
                     "ms", "skynet_wg", target=ratio_le(0.5)))
        R.append(row("skynet_wg", p, "peak_rss_mb", "runtime_bench",
                     f"BM_Skynet/procs:{p}", "peak_rss_mb", "skynet_wg",
                     target=ratio_le(1.0)))
    for p in (1, 2):
        # Go's original skynet (channels), for reference.
        R.append(row("skynet (Go: chan)", p, "ms", "runtime_bench",
                     f"BM_Skynet/procs:{p}", "ms", "skynet"))
        R.append(row("skynet (Go: chan)", p, "peak_rss_mb", "runtime_bench",
                     f"BM_Skynet/procs:{p}", "peak_rss_mb", "skynet"))
    R.append(row("parked", 1, "bytes_per_fiber", "runtime_bench", "BM_ParkedFibers",
                 "bytes_per_fiber", "parked", target=le(5120)))
    for us in (10, 100, 1000):
        for m in ("p50_us", "p99_us", "max_us"):
            R.append(row(f"sleep_lateness/{us}us", 2, m, "runtime_bench",
                         f"BM_SleepLateness/sleep_us:{us}", m, "sleep_lateness",
                         go_name=f"sleep_lateness/sleep_us:{us}",
                         target=le(200) if (m == "p99_us" and us < 1000) else None))
    # --- preempt_bench ---
    # Go has one fixed 10 ms slice: every goro slice is compared with it.
    for slice_us, p99 in ((10000, 12000), (1000, 2000), (100, 500)):
        for m in ("p50_us", "p99_us", "max_us"):
            R.append(row(f"preempt_lateness/slice_{slice_us}us", 1, m, "preempt_bench",
                         f"BM_PreemptLateness/slice_us:{slice_us}", m,
                         "preempt_lateness",
                         target=le(p99) if m == "p99_us" else None))
    for m in ("share_a_pct", "share_b_pct"):
        R.append(row("preempt_fairness", 1, m, "preempt_bench", "BM_PreemptFairness",
                     m, "preempt_fairness", target=between(45, 55)))
    R.append(row("preempt_cost", 1, "ns_per_preemption", "preempt_bench",
                 "BM_PreemptCost", "ns_per_preemption", None))
    for slice_us, lost in ((10000, 0.5), (1000, 2)):
        R.append(row(f"preempt_overhead/slice_{slice_us}us", 1, "lost_pct",
                     "preempt_bench", f"BM_PreemptOverhead/slice_us:{slice_us}",
                     "lost_pct", None, target=le(lost)))
    # --- chan_bench ---
    for p in (1, 2):
        R.append(row("chan_pingpong", p, "ns_per_roundtrip", "chan_bench",
                     f"BM_Chan_PingPong/procs:{p}", "ns_per_roundtrip",
                     "chan_pingpong", reps=3, target=le(150)))
    R.append(row("chan_buffered_mpmc", 2, "msgs_per_sec", "chan_bench",
                 "BM_Chan_BufferedMPMC", "msgs_per_sec", "chan_buffered_mpmc",
                 reps=3, target=ratio_ge(2)))
    R.append(row("chan_uncontended", 1, "ns_per_pair", "chan_bench",
                 "BM_Chan_Uncontended", "ns_per_pair", "chan_uncontended",
                 reps=3, target=le(25)))
    R.append(row("select_fanin", 2, "ns_per_msg", "chan_bench", "BM_Select_FanIn",
                 "ns_per_msg", "select_fanin", reps=3, target=ratio_le(1.0)))
    R.append(row("mutex", 2, "ns_per_lock", "chan_bench", "BM_Mutex_Contended",
                 "ns_per_lock", "mutex", reps=3, target=ratio_le(1.0)))
    return R


ROWS = _build_rows()

# ---------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# Suffixes Google Benchmark appends to a benchmark's name.
_GB_SUFFIX = (r"(/(iterations|repeats|threads|min_time|min_warmup_time):[0-9.sx]+"
              r"|/real_time|/manual_time|/process_time)*")


def gb_filter(name):
    """--benchmark_filter for exactly `name` (POSIX ERE, as GB uses), allowing
    the suffixes GB appends (/iterations:N, /real_time, ...)."""
    esc = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)
    return f"^{esc}{_GB_SUFFIX}$"


def gb_base_name(entry):
    """The benchmark name of a GB JSON entry without aggregate or GB suffixes."""
    name = entry.get("run_name")
    if name is None:
        name = entry.get("name", "")
        agg = entry.get("aggregate_name")
        if entry.get("run_type") == "aggregate" and agg and name.endswith("_" + agg):
            name = name[: -len(agg) - 1]
    return re.sub(_GB_SUFFIX + "$", "", name)


_TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def gb_value(entry, counter):
    if counter == "real_time":
        v = entry.get("real_time")
        if v is None:
            return None
        return float(v) * _TIME_UNIT_NS.get(entry.get("time_unit", "ns"), 1.0)
    v = entry.get(counter)
    return float(v) if isinstance(v, (int, float)) else None


def gb_lookup(entries, bench, counter):
    """Value of `counter` for benchmark `bench` in GB JSON entries: the
    "median" aggregate if present, else the single run (or the median of
    the runs if there are several)."""
    mine = [e for e in entries if gb_base_name(e) == bench and "error_occurred" not in e]
    if not mine:
        errs = [e for e in entries if gb_base_name(e) == bench]
        if errs:
            raise LookupError("error: " + str(errs[0].get("error_message", "?")))
        return None
    medians = [e for e in mine if e.get("aggregate_name") == "median"]
    if medians:
        return gb_value(medians[0], counter)
    runs = [e for e in mine if e.get("run_type", "iteration") == "iteration"]
    vals = [v for v in (gb_value(e, counter) for e in runs) if v is not None]
    if not vals:
        return None
    return statistics.median(vals)


def parse_gb_json(text):
    """The "benchmarks" list of a GB JSON document; tolerates other output
    around the document."""
    try:
        return json.loads(text).get("benchmarks", [])
    except ValueError:
        pass
    start = text.find("{\n")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON document in output")
    return json.loads(text[start:end + 1]).get("benchmarks", [])


# ---------------------------------------------------------------------------
# goro side


class Goro:
    def __init__(self, args):
        self.args = args
        self.bins = {}          # short name -> path or None
        self.notes = []         # shown under the table
        self.cache = {}         # (bin, bench, reps) -> entries or Exception
        self.failed = False
        self.fixed_entries = None
        if args.goro_json:
            self.fixed_entries = []
            for f in args.goro_json:
                self.fixed_entries += parse_gb_json(Path(f).read_text())
            log(f"goro: using {len(self.fixed_entries)} entries from {', '.join(args.goro_json)}")
            self.notes.append("goro figures from " + ", ".join(args.goro_json))
        elif not args.no_goro:
            self._build()

    def _bazel_build(self, labels):
        log("goro: bazel build -c opt " + " ".join(labels))
        try:
            p = subprocess.run(["bazel", "build", "-c", "opt", *labels], cwd=REPO,
                               capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            log("goro: bazel build timed out")
            return False
        if p.returncode != 0:
            log("\n".join(p.stderr.splitlines()[-15:]))
        return p.returncode == 0

    def _bazel_bin(self):
        try:
            out = subprocess.run(["bazel", "info", "-c", "opt", "bazel-bin"], cwd=REPO,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
        return REPO / "bazel-bin"

    def _build(self):
        needed = sorted({r.goro_bin for r in self.args.rows if r.goro_bin})
        if not needed:
            return
        if self.args.goro_bin_dir:
            bindir = Path(self.args.goro_bin_dir)
        else:
            if not self.args.no_build:
                if shutil.which("bazel") is None:
                    self.notes.append("bazel not found: goro benchmarks not built")
                elif not self._bazel_build(["//bench:all"]):
                    log("goro: //bench:all failed to build; building targets one by one")
                    for b in needed:
                        if not self._bazel_build([GORO_BINARIES[b]]):
                            self.bins[b] = None
                            self.notes.append(
                                f"{GORO_BINARIES[b]} failed to build or does not exist "
                                "yet: goro figures skipped")
            bindir = self._bazel_bin() / "bench"
        for b in needed:
            if b in self.bins:      # failed to build: do not run a stale binary
                continue
            p = bindir / b
            if p.is_file() and os.access(p, os.X_OK):
                self.bins[b] = p
            else:
                self.bins[b] = None
                msg = f"{GORO_BINARIES[b]} not found ({p}): goro figures skipped"
                log("goro: " + msg)
                self.notes.append(msg)

    def value(self, r):
        """goro value for row r: float, None (not available) or an error string."""
        if not r.goro_bin:
            return None
        reps = self.args.repetitions or r.reps
        if self.fixed_entries is not None:
            entries = self.fixed_entries
        else:
            if self.args.no_goro or self.bins.get(r.goro_bin) is None:
                return None
            key = (r.goro_bin, r.goro_bench, reps)
            if key not in self.cache:
                self.cache[key] = self._run(self.bins[r.goro_bin], r.goro_bench, reps)
            entries = self.cache[key]
            if isinstance(entries, Exception):
                return "error"
        try:
            v = gb_lookup(entries, r.goro_bench, r.goro_counter)
        except LookupError:
            return "error"
        return "missing" if v is None else v

    def _run(self, binary, bench, reps):
        with tempfile.TemporaryDirectory(prefix="goro-gb-") as td:
            outfile = Path(td) / "out.json"
            cmd = [str(binary), f"--benchmark_filter={gb_filter(bench)}",
                   "--benchmark_format=json",
                   f"--benchmark_out={outfile}", "--benchmark_out_format=json"]
            if reps > 1:
                cmd.append(f"--benchmark_repetitions={reps}")
            log(f"goro: {binary.name} {bench} (repetitions={reps})")
            try:
                p = subprocess.run(cmd, capture_output=True, text=True,
                                   timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                log(f"goro: {bench}: timed out after {self.args.timeout} s")
                self.failed = True
                return TimeoutError(bench)
            if p.returncode != 0:
                log(f"goro: {bench}: exit status {p.returncode}\n{p.stderr[-2000:]}")
                self.failed = True
            try:
                text = outfile.read_text() if outfile.is_file() and outfile.stat().st_size else p.stdout
                entries = parse_gb_json(text)
            except ValueError as e:
                log(f"goro: {bench}: cannot parse output: {e}")
                self.failed = True
                return e
            if not any(gb_base_name(e) == bench for e in entries):
                log(f"goro: {bench}: not in the binary's output")
            return entries


# ---------------------------------------------------------------------------
# Go side


class GoPeer:
    def __init__(self, args):
        self.args = args
        self.cache = {}     # (bench, procs, args) -> {(name, metric): value} or Exception
        self.failed = False
        self.binary = None
        self.tmp = None
        if args.no_go:
            return
        if args.go_peer:
            self.binary = Path(args.go_peer)
            return
        go = args.go or os.environ.get("GO") or (GO_DEFAULT if os.path.exists(GO_DEFAULT)
                                                  else shutil.which("go"))
        if not go:
            raise SystemExit("compare.py: no Go toolchain (use --go=PATH or --no-go)")
        self.tmp = tempfile.TemporaryDirectory(prefix="goro-peer-")
        self.binary = Path(self.tmp.name) / "goro-peer"
        env = dict(os.environ)
        env.pop("GOTOOLCHAIN", None)
        env["GOFLAGS"] = "-mod=mod"
        env["GOPROXY"] = "off"
        log(f"go: {go} build -o {self.binary}")
        p = subprocess.run([go, "build", "-o", str(self.binary), "."], cwd=GO_PEER_DIR,
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"compare.py: building the Go peer failed:\n{p.stderr}")

    def value(self, r):
        if not r.go_bench or self.binary is None:
            return None
        key = (r.go_bench, r.procs, r.go_args)
        if key not in self.cache:
            self.cache[key] = self._run(*key)
        res = self.cache[key]
        if isinstance(res, Exception):
            return "error"
        v = res.get((r.go_name, r.go_metric))
        return "missing" if v is None else v

    def _run(self, bench, procs, extra):
        cmd = [str(self.binary), f"-bench={bench}", f"-procs={procs}", *extra]
        log("go: " + " ".join(cmd[1:]))
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            log(f"go: {bench}: timed out")
            self.failed = True
            return TimeoutError(bench)
        res = {}
        for line in p.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d.get("value"), (int, float)):
                res[(d["name"], d["metric"])] = float(d["value"])
        if p.returncode != 0:
            log(f"go: {bench}: exit status {p.returncode}\n{p.stderr[-2000:]}")
            self.failed = True
            return RuntimeError(bench)
        return res


# ---------------------------------------------------------------------------
# table


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_target(t):
    if t is None:
        return "-"
    if t.kind == "le":
        return f"≤ {t.a:g}"
    if t.kind == "ratio_le":
        return "≤ Go" if t.a == 1 else f"≤ {t.a:g}× Go"
    if t.kind == "ratio_ge":
        return "≥ Go" if t.a == 1 else f"≥ {t.a:g}× Go"
    if t.kind == "between":
        return f"{t.a:g}–{t.b:g}"
    return "?"


def verdict(t, g, o):
    """'ok', 'MISS' or '' (cannot tell) for target t, goro value g, Go value o."""
    if t is None or not isinstance(g, float):
        return ""
    if t.kind == "le":
        return "ok" if g <= t.a else "MISS"
    if t.kind == "between":
        return "ok" if t.a <= g <= t.b else "MISS"
    if not isinstance(o, float) or o == 0:
        return ""
    ratio = g / o
    if t.kind == "ratio_le":
        return "ok" if ratio <= t.a else "MISS"
    if t.kind == "ratio_ge":
        return "ok" if ratio >= t.a else "MISS"
    return ""


HEADER = ["workload", "procs", "metric", "goro", "Go 1.19", "goro/Go", "target", "verdict"]


def render(lines, markdown):
    out = []
    if markdown:
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "|".join(["---", "--:", "---", "--:", "--:", "--:", "---", "---"]) + "|")
        for l in lines:
            out.append("| " + " | ".join(l) + " |")
        return "\n".join(out)
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(HEADER)]
    right = {1, 3, 4, 5}

    def one(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out.append(one(HEADER))
    out.append("  ".join("-" * w for w in widths).rstrip())
    for l in lines:
        out.append(one(l))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", metavar="REGEX",
                    help="rows whose workload, goro benchmark or Go benchmark name matches")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--repetitions", type=int, default=0,
                    help="--benchmark_repetitions for every goro benchmark (default: per row)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run bazel; use the goro binaries already in bazel-bin")
    ap.add_argument("--goro-bin-dir", metavar="DIR",
                    help="directory holding runtime_bench, preempt_bench, chan_bench")
    ap.add_argument("--goro-json", metavar="FILE", action="append",
                    help="take goro figures from this Google Benchmark JSON file "
                         "instead of running goro (repeatable; for testing)")
    ap.add_argument("--no-goro", action="store_true", help="Go figures only")
    ap.add_argument("--no-go", action="store_true", help="goro figures only")
    ap.add_argument("--go", metavar="PATH", help=f"Go toolchain (default {GO_DEFAULT})")
    ap.add_argument("--go-peer", metavar="PATH", help="prebuilt Go peer binary")
    ap.add_argument("--timeout", type=int, default=600,
                    help="seconds allowed for one benchmark process (default 600)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    args = ap.parse_args(argv)

    rows = ROWS
    if args.only:
        rx = re.compile(args.only)
        rows = [r for r in rows if any(rx.search(s) for s in
                                       (r.workload, r.goro_bench or "", r.go_bench or ""))]
    args.rows = rows
    if args.list:
        for r in rows:
            print(f"{r.workload:36} procs={r.procs} {r.metric:18} "
                  f"goro={r.goro_bin}:{r.goro_bench}[{r.goro_counter}] "
                  f"go={r.go_bench}:{r.go_name}[{r.go_metric}] target={fmt_target(r.target)}")
        return 0
    if not rows:
        log("compare.py: --only matched no workload")
        return 2

    go = GoPeer(args)
    goro = Goro(args)
    lines = []
    try:
        for r in rows:
            g = goro.value(r)
            o = go.value(r)
            ratio = g / o if isinstance(g, float) and isinstance(o, float) and o else None
            lines.append([r.workload, str(r.procs), r.metric, fmt(g),
                          fmt(o) if r.go_bench else "-",
                          f"{ratio:.2f}" if ratio is not None else "-",
                          fmt_target(r.target), verdict(r.target, g, o)])
    finally:
        if go.tmp:
            go.tmp.cleanup()
    print(render(lines, args.markdown))
    if goro.notes:
        print()
    for n in goro.notes:
        print(("* " if args.markdown else "note: ") + n)
    return 1 if (go.failed or goro.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
