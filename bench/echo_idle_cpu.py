#!/usr/bin/env python3
"""CPU an echo server burns at low load: goro's tools/echo_server against
Go 1.19's (bench/peers/go, -bench=echo_server), 2 procs each.

One client connection (this script, plain blocking sockets) sends a
64-byte message every 10 ms -- 100 messages per second, on an absolute
schedule -- and reads each echo back. After a 1 s warm-up, the server's
user + system CPU time is read from /proc/PID/stat over --seconds (10 by
default) -- and, to the nanosecond, from every thread's
/proc/PID/task/TID/schedstat. Between messages every server thread has nothing to do: the
figure is what waiting costs (the netpoller's poll spin, thread wake-ups),
not what echoing costs. The programs run in turn, --rounds times,
interleaved; the table shows medians.

  python3 bench/echo_idle_cpu.py                 # builds both servers
  python3 bench/echo_idle_cpu.py --no-build --rounds=5 --rate=1000
  python3 bench/echo_idle_cpu.py --no-build --goro old=/tmp/a --goro new=/tmp/b
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def build(args):
    subprocess.run(["bazel", "build", "-c", "opt", "//tools:echo_server"],
                   cwd=ROOT, check=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off")
    env.pop("GOTOOLCHAIN", None)
    subprocess.run([args.go, "build", "-o", "/tmp/goro-peer", "."],
                   cwd=os.path.join(ROOT, "bench/peers/go"), env=env, check=True)


def cpu_seconds(pid):
    """User + system CPU of the whole process (all threads), in seconds,
    from /proc/PID/stat (utime + stime: clock ticks, 10 ms here)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_seconds(pid):
    """The same to the nanosecond: the sum of every thread's time on a CPU
    (/proc/PID/task/*/schedstat). Threads that exited are not counted; the
    servers' threads live as long as they do."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def start(kind, args):
    if kind != "go":
        cmd = [args.goro_bins[kind], "--listen=127.0.0.1:0", f"--procs={args.procs}"]
    else:
        cmd = ["/tmp/goro-peer", "-bench=echo_server", f"-procs={args.procs}",
               "-echo_listen=127.0.0.1:0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()  # "... listening on 127.0.0.1:PORT"
    addr = line.strip().rsplit(" ", 1)[-1]
    host, port = addr.rsplit(":", 1)
    return p, (host, int(port))


def one(kind, args):
    p, addr = start(kind, args)
    try:
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 64
        period = 1.0 / args.rate

        def exchange(until):
            n = 0
            next_t = time.monotonic()
            while next_t < until:
                s.sendall(msg)
                got = 0
                while got < len(msg):
                    chunk = s.recv(len(msg) - got)
                    if not chunk:
                        sys.exit(f"{kind}: connection closed")
                    got += len(chunk)
                n += 1
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            return n

        exchange(time.monotonic() + 1.0)  # warm-up
        c0, r0, t0 = cpu_seconds(p.pid), run_seconds(p.pid), time.monotonic()
        n = exchange(t0 + args.seconds)
        c1, r1, t1 = cpu_seconds(p.pid), run_seconds(p.pid), time.monotonic()
        s.close()
    finally:
        p.kill()
        p.wait()
    wall = t1 - t0
    return {"cpu_pct": 100 * (c1 - c0) / wall, "msgs": n / wall,
            "run_pct": 100 * (r1 - r0) / wall,
            "us_per_msg": 1e6 * (r1 - r0) / n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=float, default=100, help="messages per second")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--go", default="/usr/lib/go-1.19/bin/go")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--goro", action="append", default=[], metavar="NAME=PATH",
                    help="compare these echo_server binaries (default: "
                         "goro=bazel-bin/tools/echo_server)")
    args = ap.parse_args()
    args.goro_bins = dict(g.split("=", 1) for g in args.goro) or {
        "goro": os.path.join(ROOT, "bazel-bin/tools/echo_server")}
    if not args.no_build:
        build(args)
    with open("/proc/loadavg") as f:
        print("load average at start:", " ".join(f.read().split()[:3]))
    kinds = list(args.goro_bins) + ["go"]
    res = {k: [] for k in kinds}
    for rnd in range(args.rounds):
        # Rotated each round, so that no server always runs first.
        for k in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
            res[k].append(one(k, args))
    with open("/proc/loadavg") as f:
        print("load average at end:", " ".join(f.read().split()[:3]))
    print("| server | msgs/s | CPU % of a core, utime+stime (median) | "
          "CPU % of a core, schedstat | CPU us per message | runs (schedstat %) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, rs in res.items():
        med = lambda key: statistics.median(r[key] for r in rs)
        runs = " ".join(f"{r['run_pct']:.2f}" for r in rs)
        print(f"| {k} | {med('msgs'):.0f} | {med('cpu_pct'):.2f} | "
              f"{med('run_pct'):.2f} | {med('us_per_msg'):.1f} | {runs} |")


if __name__ == "__main__":
    main()
