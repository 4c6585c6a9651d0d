#!/usr/bin/env python3
"""Echo benchmark: goro (tools/echo_load --serve) vs Go 1.19 (peers/go, -bench=echo)
vs the hand-written C epoll loop (peers/c/echo_epoll.c), in one table.

Each configuration (connections) runs the three programs in turn, --rounds
times, interleaved so that the machine's load hits all three alike; the
table shows medians. Besides round trips per second (what the targets are
stated in) it shows round trips per CPU-second (user + system): on a shared,
loaded machine a program's throughput follows the CPU share it wins, and
the per-CPU figure is the one that says how much work each round trip costs.

  python3 bench/echo_compare.py                      # builds everything
  python3 bench/echo_compare.py --conns=64 --rounds=5 --duration=5
  python3 bench/echo_compare.py --no-build --goro old=/tmp/a --goro new=/tmp/b
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(args):
    subprocess.run(["bazel", "build", "-c", "opt", "//tools:echo_load"],
                   cwd=ROOT, check=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off")
    env.pop("GOTOOLCHAIN", None)
    subprocess.run([args.go, "build", "-o", "/tmp/goro-peer", "."],
                   cwd=os.path.join(ROOT, "bench/peers/go"), env=env, check=True)
    subprocess.run(["gcc", "-O2", "-o", "/tmp/echo_epoll",
                    os.path.join(ROOT, "bench/peers/c/echo_epoll.c"),
                    "-lpthread"], check=True)


def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout, cpu


def parse_line(text):
    m = dict(re.findall(r"(\w+)=([\d.]+)", text))
    return {k: float(m[k]) for k in ("rt_per_s", "p50_us", "p99_us", "round_trips")}


def parse_go(text):
    r = {}
    for line in text.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            r[j["metric"]] = j["value"]
    return r


def one(kind, conns, args):
    d = args.duration
    if kind in args.goro_bins:
        out, cpu = run([args.goro_bins[kind], "--serve",
                        f"--procs={args.procs}", f"--conns={conns}", f"--size={args.size}",
                        f"--duration={d}s"])
        r = parse_line(out)
    elif kind == "go":
        out, cpu = run(["/tmp/goro-peer", "-bench=echo", f"-procs={args.procs}",
                        f"-echo_conns={conns}", f"-echo_size={args.size}",
                        f"-echo_duration={d}s"])
        r = parse_go(out)
        r["round_trips"] = r["rt_per_s"] * d
    else:
        out, cpu = run(["/tmp/echo_epoll", f"--threads={args.procs}", f"--conns={conns}",
                        f"--size={args.size}", f"--duration={d}"])
        r = parse_line(out)
    # The whole run's CPU includes the 0.5 s warm-up: count its round trips too.
    r["rt_per_cpu_s"] = r["rt_per_s"] * (d + 0.5) / cpu if cpu > 0 else 0
    return r


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", default="64,1,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--go", default="/usr/lib/go-1.19/bin/go")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--goro", action="append", default=[], metavar="NAME=PATH",
                    help="echo_load binaries to compare (default: "
                         "goro=bazel-bin/tools/echo_load); each gets its ratios")
    args = ap.parse_args()
    args.goro_bins = dict(g.split("=", 1) for g in args.goro) or {
        "goro": os.path.join(ROOT, "bazel-bin/tools/echo_load")}
    if not args.no_build:
        build(args)
    print(f"load average at start: {loadavg()}")
    print("| conns | program | rt/s (median) | rt per CPU-s | p50 us | p99 us | runs (rt/s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for conns in [int(c) for c in args.conns.split(",")]:
        kinds = list(args.goro_bins) + ["go", "c"]
        res = {k: [] for k in kinds}
        for rnd in range(args.rounds):
            # Rotate the order each round, so that no program always runs
            # right after the same one (or first, on a cooled machine).
            r = rnd % len(kinds)
            for k in kinds[r:] + kinds[:r]:
                res[k].append(one(k, conns, args))
        for k, rs in res.items():
            med = lambda key: statistics.median(r[key] for r in rs)
            runs = " ".join(f"{r['rt_per_s'] / 1000:.0f}K" for r in rs)
            print(f"| {conns} | {k} | {med('rt_per_s'):.0f} | {med('rt_per_cpu_s'):.0f} | "
                  f"{med('p50_us'):.0f} | {med('p99_us'):.0f} | {runs} |", flush=True)
        # Ratios within each round (the three ran back to back, under about
        # the same load), then their median: steadier than a ratio of medians.
        for mine in args.goro_bins:
            row = [conns, mine]
            for other in ("go", "c"):
                for key in ("rt_per_s", "rt_per_cpu_s", "p99_us"):
                    row.append(statistics.median(
                        g[key] / o[key] if o[key] > 0 else 0
                        for g, o in zip(res[mine], res[other])))
            ratios.append(row)
    print(f"load average at end: {loadavg()}")
    print()
    print("Per-round ratios, goro / peer (median over rounds):")
    print()
    print("| conns | goro | rt/s vs Go | rt per CPU-s vs Go | p99 vs Go | rt/s vs C | rt per CPU-s vs C | p99 vs C |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in ratios:
        print(f"| {row[0]} | {row[1]} | " + " | ".join(f"{v:.2f}" for v in row[2:]) + " |")


if __name__ == "__main__":
    main()
