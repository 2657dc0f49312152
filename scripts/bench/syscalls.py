#!/usr/bin/env python3
"""System calls per proxied request, ours next to nginx (issue 21's syscall comparison).

Each system runs as the matrix's pinned mode runs it (1 worker on core 0, the upstream and the
load on core 1, the same configs through matrix.py). A fixed number of keep-alive requests
(`credentialflow bench -n N -c C`, 128 B responses) is counted twice:
- `perf stat` on the syscall tracepoints of the system's whole process tree: the count per
  request, at a cost low enough not to change how the ring batches;
- with --strace, `strace -c -f` over a second run of N: which calls they are. strace slows the
  traced process several times over, which lets more completions gather per io_uring_enter, so
  its totals per request are a lower bound for an io_uring system; the perf figure is the one to
  quote.

Usage: scripts/bench/syscalls.py [--bin PATH] [--requests N] [--conns C] [--systems nginx,ours-uring]
       [--kind plain|keys] [--strace]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matrix  # noqa: E402  (the matrix's configs, processes and pinning)


def bench_argv(env, port, n, conns, kind):
    argv = [env.bin, "bench", "-c", str(conns), "-n", str(n), "--timeout", "10s"]
    if kind == "keys":
        argv += ["-H", f"x-api-key: {env.keys[0]}"]
    return matrix.launch_prefix("1") + argv + [f"http://127.0.0.1:{port}/x"]


def run_load(env, port, n, conns, kind):
    out = subprocess.run(bench_argv(env, port, n, conns, kind), capture_output=True, text=True,
                         env=env.env(), timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"bench failed: {out.stdout[-400:]} {out.stderr[-400:]}")
    return out.stdout


# What perf counts: every system call, the io_uring enters among them, and the ring's own work
# (operations submitted, those that found no data and armed a poll, task-work items queued and
# runs of task work), which is where an io_uring system's per-request cost is.
EVENTS = {
    "raw_syscalls:sys_enter": "syscalls",
    "syscalls:sys_enter_io_uring_enter": "io_uring_enter",
    "io_uring:io_uring_submit_req": "ring ops",
    "io_uring:io_uring_poll_arm": "poll arms",
    "io_uring:io_uring_task_add": "task-work adds",
    "io_uring:io_uring_task_work_run": "task-work runs",
}


def perf_count(env, pids, port, n, conns, kind):
    """Each of EVENTS counted over `pids`' threads while N requests run."""
    # Every thread by its id: a worker is a thread of the gateway's process.
    tids = [t for p in pids for t in os.listdir(f"/proc/{p}/task")]
    perf = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-t", ",".join(tids)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # perf attaches before the first request
    run_load(env, port, n, conns, kind)
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=30)
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            counts[EVENTS[fields[2]]] = int(fields[0]) if fields[0].isdigit() else 0
    return counts


def strace_count(env, pid, port, n, conns, kind):
    """strace -c -f's table (calls per syscall) over N requests."""
    out_file = env.work / f"strace-{pid}.txt"
    st = subprocess.Popen(["strace", "-c", "-f", "-o", str(out_file), "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    run_load(env, port, n, conns, kind)
    st.send_signal(signal.SIGINT)
    st.wait(timeout=30)
    calls = {}
    for line in out_file.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(matrix.ROOT / "target" / "release" / "credentialflow"))
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--systems", default="nginx,ours-uring")
    ap.add_argument("--kind", default="plain", choices=["plain", "keys"])
    ap.add_argument("--strace", action="store_true")
    args = ap.parse_args()
    # Env wants the matrix's own options; the defaults are the matrix's.
    margs = argparse.Namespace(bin=args.bin, litellm=None)
    matrix.NICE = -10 if matrix.os.geteuid() == 0 else 0
    env = matrix.Env(margs)
    if args.kind == "keys":
        env.create_keys()
    mode = matrix.Mode("pinned")
    up, up_port = matrix.start_upstream(env, mode, "fixed", 128)
    try:
        for system in args.systems.split(","):
            sut = matrix.System(env, mode, system, args.kind, up_port)
            try:
                run_load(env, sut.port, min(args.requests, 50000), args.conns, args.kind)  # warm
                counts = perf_count(env, sut.tree(), sut.port, args.requests, args.conns,
                                    args.kind)
                n = args.requests
                per = ", ".join(f"{name} {counts.get(name, 0) / n:.2f}" for name in EVENTS.values())
                print(f"{system}, per request over {n} ({args.conns} conns): {per}", flush=True)
                if args.strace:
                    worker = sut.tree()[-1]  # nginx: its one worker; ours: the process
                    pid = sut.proc.pid if system.startswith("ours") else worker
                    calls = strace_count(env, pid, sut.port, n, args.conns, args.kind)
                    top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
                    print(f"  strace -c -f: " + ", ".join(f"{k} {v / n:.2f}" for k, v in top),
                          flush=True)
            finally:
                sut.stop()
    finally:
        up.stop()
        for proc in matrix.Proc.started:
            proc.stop()
        matrix.shutil.rmtree(env.work, ignore_errors=True)


if __name__ == "__main__":
    main()
