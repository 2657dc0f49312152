#!/usr/bin/env python3
"""The side-by-side benchmark matrix (issue 7): credentialflow (io_uring and epoll drivers) next
to nginx, HAProxy and LiteLLM on one machine, one markdown table per scenario.

Run it through scripts/bench-matrix.sh, which installs the peers, raises limits and builds the
release binary. This file only measures; it never installs anything.

Method, per scenario, mode and system:
- pinned mode: the system under test gets 1 worker and core 0 (taskset); the load generator and
  the upstream share core 1, whose utilisation is printed (a saturated generator core marks the
  figure as generator-bound). unpinned mode: 2 workers, nothing pinned, all share both cores.
- each figure is the median over --runs runs (each metric separately); a short warm-up run
  precedes them and is not recorded.
- CPU per request: utime+stime of the system's whole process tree from /proc/PID/stat before and
  after each run, divided by the requests wrk completed. Peak RSS: VmHWM summed over the tree.
- wrk is closed-loop: its latencies carry coordinated omission. The open-loop comparison at an
  equal offered rate needs `credentialflow bench --rate`; it is skipped with a note until that
  exists.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
ADMIN_TOKEN = "bench-matrix-admin"
FAKE_PROVIDER_KEY = "sk-bench-fake"
LITELLM_MASTER_KEY = "sk-bench-master"
KEY_RPS = 1000000  # per-key limit high enough never to trip: we measure the cost of the check
KEY_COUNT = 50
MIB = 1024 * 1024
CHAT_BODY = '{"model":"mock-gpt","max_tokens":64,"messages":[{"role":"user","content":"lorem 32"}]}'
STREAM_BODY = (
    '{"model":"mock-gpt","max_tokens":64,"stream":true,'
    '"messages":[{"role":"user","content":"lorem 32"}]}'
)


# ---------------------------------------------------------------------------------------------
# Small helpers: ports, processes, /proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_status(port, path="/", method="GET", headers=None, body=None, timeout=10.0):
    """One request on a fresh connection; returns (status, body bytes) or (None, error)."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data
    except OSError as e:
        return None, str(e).encode()


def children_of(pid):
    """pid and all its descendants, from the ppid field of /proc/*/stat."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over pids (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total


def status_kib(pids, field):
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_times():
    """{cpu name: (busy, total)} from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *vals = line.split()
            vals = [int(v) for v in vals]
            idle = vals[3] + vals[4]
            out[name] = (sum(vals) - idle, sum(vals))
    return out


def softnet_dropped():
    """Packets dropped because a CPU's input backlog (netdev_max_backlog) was full."""
    try:
        text = Path("/proc/net/softnet_stat").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1], 16) for line in text if line.strip())


def busy_percent(before, after, name):
    b0, t0 = before[name]
    b1, t1 = after[name]
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


NICE = 0  # set from --nice: every process of the run gets it, so other tenants weigh less


def launch_prefix(cpus):
    """nice (when set) and taskset (when pinned) in front of a command of this run."""
    out = ["nice", "-n", str(NICE)] if NICE else []
    return out + (["taskset", "-c", cpus] if cpus is not None else [])


class Proc:
    """A process this script started, in its own process group (stopped by that group's id)."""

    started = []  # every Proc, so a failed scenario cannot leave one running

    def __init__(self, name, argv, log_dir, cpus=None, env=None, cwd=None, stdin=None):
        Proc.started.append(self)
        self.name = name
        argv = launch_prefix(cpus) + argv
        self.argv = argv
        self.err_path = Path(log_dir) / f"{name}.err"
        self.out_path = Path(log_dir) / f"{name}.out"
        self.proc = subprocess.Popen(
            argv,
            stdout=open(self.out_path, "wb"),
            stderr=open(self.err_path, "wb"),
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        LOG.command(argv)

    @property
    def pid(self):
        return self.proc.pid

    def tree(self):
        return children_of(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Log:
    """Everything RESULTS.md needs besides the tables: commands, notes, skips."""

    def __init__(self):
        self.commands = []
        self.notes = []
        self.skips = []
        self.work = None

    def command(self, argv):
        """Records a command once, in a general form: the run's temporary folder as $WORK,
        ports as PORT (they are picked free at run time)."""
        line = " ".join(shlex.quote(a) for a in argv)
        if self.work:
            line = line.replace(f"{self.work}/credentialflow", "credentialflow")
            line = line.replace(str(self.work), "$WORK")
        line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
        line = re.sub(r"--port \d+", "--port PORT", line)
        line = re.sub(r"-(\d{4,5})\.(toml|conf|cfg)", r"-PORT.\2", line)
        if line not in self.commands:
            self.commands.append(line)

    def skip(self, what, why):
        msg = f"{what}: skipped, {why}"
        self.skips.append(msg)
        print(f"  SKIP {msg}", flush=True)

    def note(self, msg):
        self.notes.append(msg)
        print(f"  NOTE {msg}", flush=True)


LOG = Log()


# ---------------------------------------------------------------------------------------------
# Configs for each system


def fill(template, **values):
    text = (HERE / template).read_text() if not template.startswith("\n") else template
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise ValueError(f"{template}: unfilled {left}")
    return text


class Env:
    """The run's shared state: binary, work dir, keys, capabilities of the tools found."""

    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="cf-matrix-"))
        # nginx workers drop to an unprivileged user when started as root: let them read it
        self.work.chmod(0o755)
        # a private copy: a rebuild during the run (shared machine) must not change the binary
        self.bin_source = Path(args.bin).resolve()
        self.bin = str(self.work / "credentialflow")
        shutil.copy2(self.bin_source, self.bin)
        LOG.work = self.work
        self.data_dir = self.work / "ours-data"
        self.keys = []
        self.have = {
            "nginx": shutil.which("nginx") is not None,
            "haproxy": shutil.which("haproxy") is not None,
            "wrk": shutil.which("wrk") is not None,
            "nginx_lua": Path("/usr/lib/nginx/modules/ngx_http_lua_module.so").exists(),
            "litellm": Path(args.litellm).exists() if args.litellm else False,
        }
        upstream_help = subprocess.run(
            [self.bin, "bench-upstream", "--help"], capture_output=True, text=True
        ).stdout
        self.have["upstream_sse"] = "--sse" in upstream_help
        bench_help = subprocess.run([self.bin, "bench", "--help"], capture_output=True, text=True)
        self.have["bench_rate"] = bench_help.returncode == 0 and "--rate" in bench_help.stdout
        self.drivers_seen = {}
        self.upstream = None  # the running upstream, whose CPU counts as the generator's
        self.max_rps = {}  # scenario 1's closed-loop maxima, for the open-loop rate
        self.softnet_start = softnet_dropped()

    def softnet_drops(self):
        return softnet_dropped() - self.softnet_start

    def env(self, **extra):
        e = dict(os.environ)
        e["CF_ADMIN_TOKEN"] = ADMIN_TOKEN
        e["CF_BENCH_FAKE_KEY"] = FAKE_PROVIDER_KEY
        e["CF_LOG"] = "warn"
        e.update(extra)
        return e

    def create_keys(self):
        """KEY_COUNT virtual keys in the shared data dir; nginx and HAProxy get the same list."""
        cfg = self.work / "keys.toml"
        # `keys create` works on an existing store folder only (serve creates it, and has not run)
        self.data_dir.mkdir(exist_ok=True)
        cfg.write_text(
            f'[server]\nlisten = ["127.0.0.1:0"]\nadmin_listen = "127.0.0.1:0"\n'
            f'data_dir = "{self.data_dir}"\naccess_log = ""\n'
        )
        for i in range(KEY_COUNT):
            argv = [self.bin, "keys", "create", "--config", str(cfg), "--name", f"bench-{i}",
                    "--rps", str(KEY_RPS), "--json"]
            if i == 0:
                LOG.command(argv[:6] + ["bench-N"] + argv[7:])
            out = subprocess.run(argv, capture_output=True, text=True, env=self.env())
            if out.returncode != 0:
                raise SystemExit(f"keys create failed: {out.stderr.strip()}")
            self.keys.append(json.loads(out.stdout)["key"])
        (self.work / "keys.nginx.map").write_text(
            "".join(f'"{k}" 1;\n' for k in self.keys)
        )
        (self.work / "keys.haproxy.map").write_text("".join(f"{k} 1\n" for k in self.keys))


def ours_config(env, name, port, workers, upstream_port, kind, extra_ai=None):
    """credentialflow's config for scenario kind (plain, keys, lua, sse, body, ai)."""
    admin = free_port()
    lines = [
        "[server]",
        f'listen = ["127.0.0.1:{port}"]',
        f"workers = {workers}",
        f'admin_listen = "127.0.0.1:{admin}"',
        'admin_token = "env:CF_ADMIN_TOKEN"',
        f'data_dir = "{env.data_dir}"',
        'access_log = ""',
        "connections_per_worker = 20000",
        "[limits]",
        "idle_timeout_ms = 300000",
        f"max_body_bytes = {16 * MIB}",
    ]
    if upstream_port:
        lines += [
            "[[upstream]]",
            'name = "backend"',
            f'targets = ["127.0.0.1:{upstream_port}"]',
        ]
    if kind in ("plain", "keys", "lua", "body", "sse_proxy"):
        lines += ["[[route]]", 'name = "all"', 'path_prefix = "/"', 'upstream = "backend"']
        if kind == "keys":
            lines.append('auth = "api_key"')
        if kind == "lua":
            hook = env.work / "on_access.lua"
            shutil.copy(HERE / "lua" / "on_access.lua", hook)
            lines.append(f'hooks = "{hook}"')
    if kind == "sse":
        lines += [
            "[[provider]]", 'name = "mock"', 'kind = "mock"',
            "[[model]]", 'name = "mock-gpt"', 'provider = "mock"',
            "input_price_per_mtok = 0.1", "output_price_per_mtok = 0.4",
            "[ai]", 'auth = "none"',
        ]
    if kind == "ai":
        lines += [
            "[[provider]]", 'name = "fake"', 'kind = "openai"',
            f'base_url = "http://127.0.0.1:{extra_ai}"', 'api_key = "env:CF_BENCH_FAKE_KEY"',
            "[[model]]", 'name = "mock-gpt"', 'provider = "fake"', 'upstream_model = "mock-gpt"',
            "input_price_per_mtok = 0.1", "output_price_per_mtok = 0.4",
            "[ai]", 'auth = "api_key"',
        ]
    path = env.work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def nginx_config(env, name, port, workers, upstream_port, kind, backlog):
    main = http = ""
    snippet = {"plain": "plain", "keys": "keys", "lua": "lua", "sse_proxy": "sse", "body": "body"}[kind]
    if kind == "keys":
        http = fill("nginx/keys-http.conf", DIR=env.work, KEY_RPS=KEY_RPS)
    if kind == "lua":
        main = (
            "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
            "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
        )
    server = fill(f"nginx/{snippet}.conf")
    text = fill("nginx/base.conf", MAIN=main, WORKERS=workers, DIR=env.work,
                UPSTREAM_PORT=upstream_port, HTTP=http, PORT=port, BACKLOG=backlog,
                SERVER=server)
    path = env.work / f"{name}.conf"
    path.write_text(text)
    return path


def haproxy_config(env, name, port, workers, upstream_port, kind, backlog):
    glob = frontend = backends = ""
    if kind == "keys":
        frontend = fill("haproxy/keys.cfg", DIR=env.work, KEY_RPS=KEY_RPS)
        backends = fill("haproxy/keys-backends.cfg")
    if kind == "lua":
        shutil.copy(HERE / "haproxy" / "tenant.lua", env.work / "tenant.lua")
        glob = f"    lua-load {env.work}/tenant.lua"
        frontend = fill("haproxy/lua.cfg")
    text = fill("haproxy/base.cfg", WORKERS=workers, MAXCONN=haproxy_maxconn(), DIR=env.work, GLOBAL=glob, PORT=port,
                BACKLOG=backlog, FRONTEND=frontend, BACKENDS=backends,
                UPSTREAM_PORT=upstream_port)
    path = env.work / f"{name}.cfg"
    path.write_text(text)
    return path


def haproxy_maxconn():
    """HAProxy refuses to start when 2 x maxconn (+ a few) exceeds nofile."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(20000, (soft - 20) // 2)


def litellm_config(env, upstream_port):
    path = env.work / "litellm.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: mock-gpt\n"
        "    litellm_params:\n"
        "      model: openai/mock-gpt\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        f"      api_key: {FAKE_PROVIDER_KEY}\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )
    return path


# ---------------------------------------------------------------------------------------------
# Starting systems and upstreams


class Mode:
    def __init__(self, name):
        self.name = name
        self.pinned = name == "pinned"
        self.workers = 1 if self.pinned else 2
        self.sut_cpus = "0" if self.pinned else None
        self.gen_cpus = "1" if self.pinned else None
        self.wrk_threads = 1 if self.pinned else 2


def start_upstream(env, mode, kind, size=128):
    """The upstream of a scenario, on the generator's core in pinned mode."""
    port = free_port()
    if kind == "fixed":
        argv = [env.bin, "bench-upstream", "--listen", f"127.0.0.1:{port}", "--size", str(size),
                "--workers", str(mode.workers)]
    elif kind == "sse":
        argv = [env.bin, "bench-upstream", "--listen", f"127.0.0.1:{port}", "--sse", "32",
                "--sse-interval-ms", "0", "--workers", str(mode.workers)]
    elif kind == "sink":
        www = env.work / "www"
        www.mkdir(exist_ok=True)
        (www / "big").write_bytes(b"x" * MIB)
        conf = env.work / "sink.conf"
        if env.have["nginx_lua"]:
            main = (
                "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
                "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
            )
            # read the whole body before answering, as an application would
            sink = '            content_by_lua_block { ngx.req.read_body() ngx.print("ok") }'
        else:
            main, sink = "", '            return 200 "ok";'
        conf.write_text(fill("nginx/sink.conf", DIR=env.work, PORT=port, MAIN=main, SINK=sink))
        argv = ["nginx", "-c", str(conf), "-p", str(env.work)]
    elif kind == "mock_openai":
        data = env.work / "fake-openai-data"
        cfg = env.work / "fake-openai.toml"
        cfg.write_text(
            f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = {mode.workers}\n'
            f'admin_listen = "127.0.0.1:{free_port()}"\ndata_dir = "{data}"\naccess_log = ""\n'
            '[[provider]]\nname = "mock"\nkind = "mock"\n'
            '[[model]]\nname = "mock-gpt"\nprovider = "mock"\n'
            'input_price_per_mtok = 0.1\noutput_price_per_mtok = 0.4\n[ai]\nauth = "none"\n'
        )
        argv = [env.bin, "serve", "--config", str(cfg)]
    else:
        raise ValueError(kind)
    proc = Proc(f"upstream-{kind}-{port}", argv, env.work, cpus=mode.gen_cpus, env=env.env())
    env.upstream = proc
    if not wait_port(port):
        proc.stop()
        raise RuntimeError(f"upstream {kind} did not start: {proc.stderr_text()[-500:]}")
    return proc, port


class System:
    """One system under test, started for one scenario and mode."""

    def __init__(self, env, mode, system, kind, upstream_port, backlog=4096, ai_upstream=None):
        self.env = env
        self.system = system
        self.port = free_port()
        name = f"{system}-{kind}-{mode.name}-{self.port}"
        penv = env.env()
        if system.startswith("ours"):
            driver = system.split("-")[1]
            cfg = ours_config(env, name, self.port, mode.workers, upstream_port, kind, ai_upstream)
            argv = [env.bin, "serve", "--config", str(cfg), "--driver", driver]
        elif system == "nginx":
            cfg = nginx_config(env, name, self.port, mode.workers, upstream_port, kind, backlog)
            argv = ["nginx", "-c", str(cfg), "-p", str(env.work)]
        elif system == "haproxy":
            cfg = haproxy_config(env, name, self.port, mode.workers, upstream_port, kind, backlog)
            argv = ["haproxy", "-db", "-f", str(cfg)]
        elif system == "litellm":
            cfg = litellm_config(env, ai_upstream)
            argv = [env.args.litellm, "--config", str(cfg), "--host", "127.0.0.1",
                    "--port", str(self.port), "--num_workers", str(mode.workers)]
            penv.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
                        LITELLM_TELEMETRY="False", DISABLE_SCHEMA_UPDATE="True")
        else:
            raise ValueError(system)
        self.config = cfg
        self.proc = Proc(name, argv, env.work, cpus=mode.sut_cpus, env=penv)
        ok = wait_port(self.port, timeout=120 if system == "litellm" else 20)
        if system.startswith("ours"):
            for _ in range(100):
                m = re.search(r"driver=(\w+)", self.proc.stderr_text())
                if m:
                    env.drivers_seen[system] = m.group(1)
                    break
                time.sleep(0.05)
        if not ok or not self.proc.alive():
            err = self.proc.stderr_text()[-800:]
            self.proc.stop()
            raise RuntimeError(f"{system} did not start: {err}")

    def tree(self):
        return self.proc.tree()

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------------------------------------
# Load: wrk and the Python helpers

REPORT_LUA = (HERE / "lua" / "report.lua").read_text()


def wrk_script(env, name, method="GET", body=None, headers=None, rotate_keys=False, body_bytes=0):
    lines = [f'wrk.method = "{method}"']
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if body is not None:
        lines.append(f"wrk.body = '{body}'")
    if body_bytes:
        lines.append(f'wrk.body = string.rep("x", {body_bytes})')
        lines.append('wrk.headers["content-type"] = "application/octet-stream"')
    if rotate_keys:
        lines.append("keys = {" + ",".join(f'"{k}"' for k in env.keys) + "}")
        lines.append("local n = 0")
        lines.append(
            "request = function()\n"
            "    n = n + 1\n"
            '    wrk.headers["x-api-key"] = keys[(n % #keys) + 1]\n'
            "    return wrk.format()\n"
            "end"
        )
    path = env.work / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + REPORT_LUA)
    return path


def children_cpu_s():
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_wrk(env, mode, sut, url, conns, duration, script):
    """One wrk run; returns the figures of that run (None on a wrk failure)."""
    argv = ["wrk", f"-t{mode.wrk_threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(script), url]
    argv = launch_prefix(mode.gen_cpus) + argv
    LOG.command(argv)
    pids = sut.tree()
    up_pids = env.upstream.tree() if env.upstream else []
    cpu0 = cpu_ticks(pids)
    up0 = cpu_ticks(up_pids)
    wrk0 = children_cpu_s()
    times0 = cpu_times()
    wall0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - wall0
    times1 = cpu_times()
    cpu1 = cpu_ticks(sut.tree())
    gen_own = (children_cpu_s() - wrk0 + (cpu_ticks(up_pids) - up0) / CLK_TCK) / wall
    m = re.search(r"CFMATRIX (.*)", out.stdout)
    if not m:
        print(f"    wrk failed: {out.stdout[-300:]} {out.stderr[-300:]}", flush=True)
        return None
    f = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    kinds = {k: f[k] for k in ("connect", "read", "write", "status", "timeout") if f[k]}
    if kinds:
        LOG.note(f"{sut.system}, {url.split('/', 3)[-1]}, {conns} conns, {duration} s: "
                 f"wrk errors {kinds} (status = responses >= 400)")
    reqs = max(1, f["requests"])
    secs = f["duration_us"] / 1e6
    cpu_s = (cpu1 - cpu0) / CLK_TCK
    return {
        "rps": f["requests"] / secs,
        "p50": f["p50"] / 1000,
        "p99": f["p99"] / 1000,
        "p999": f["p999"] / 1000,
        "cpu_us": cpu_s * 1e6 / reqs,
        "cpu_s": cpu_s,
        "bytes": f["bytes"],
        "mbps": f["bytes"] / secs / 1e6,
        "errors": f["connect"] + f["read"] + f["write"] + f["status"] + f["timeout"],
        "gen": busy_percent(times0, times1, "cpu1" if mode.pinned else "cpu"),
        "gen_own": 100.0 * gen_own,
        "requests": f["requests"],
    }


def median_of(runs):
    runs = [r for r in runs if r]
    if not runs:
        return None
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(env, mode, sut, url, conns, script):
    """Warm-up, then --runs runs; the median of each figure plus peak RSS."""
    run_wrk(env, mode, sut, url, conns, env.args.warmup, script)
    runs = [run_wrk(env, mode, sut, url, conns, env.args.duration, script)
            for _ in range(env.args.runs)]
    result = median_of(runs)
    if result is not None:
        result["rss_mib"] = status_kib(sut.tree(), "VmHWM") / 1024
        result["runs"] = len([r for r in runs if r])
    return result


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def gen_cell(r, mode):
    """wrk + upstream CPU (% of one core) / the generator core's (or host's) utilisation."""
    text = f"{r['gen_own']:.0f}% / {r['gen']:.0f}%"
    if mode.pinned and r["gen_own"] >= 90:
        text += " gen-bound"
    elif mode.pinned and r["gen"] >= 95:
        text += " core busy"
    return text


class Table:
    def __init__(self, title, columns, note=""):
        self.title = title
        self.columns = columns
        self.rows = []
        self.note = note

    def add(self, cells):
        self.rows.append([fmt(c) if not isinstance(c, str) else c for c in cells])
        print("  | " + " | ".join(self.rows[-1]) + " |", flush=True)

    def markdown(self):
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append("| " + " | ".join(self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"


THROUGHPUT_COLUMNS = ["case", "mode", "system", "req/s", "p50 ms", "p99 ms", "p99.9 ms",
                      "CPU µs/req", "peak RSS MiB", "errors", "gen core", "vs nginx"]


def throughput_row(table, case, mode, system, r, base):
    ratio = f"{r['rps'] / base:.2f}×" if base else "-"
    table.add([case, mode.name, system, fmt(r["rps"]), fmt(r["p50"], 2), fmt(r["p99"], 2),
               fmt(r["p999"], 2), fmt(r["cpu_us"], 1), fmt(r["rss_mib"], 1),
               fmt(r["errors"]), gen_cell(r, mode), ratio])


# ---------------------------------------------------------------------------------------------
# Scenarios


def peers(env, want):
    out = []
    for s in want:
        if s in ("nginx", "haproxy") and not env.have[s]:
            LOG.skip(s, "not installed (run scripts/bench-matrix.sh as root to install it)")
            continue
        out.append(s)
    return out


def start_or_skip(env, mode, system, kind, upstream_port, what, **kw):
    try:
        return System(env, mode, system, kind, upstream_port, **kw)
    except RuntimeError as e:
        LOG.skip(f"{what}, {system} ({mode.name})", f"it did not start: {str(e)[:300]}")
        return None


def probe(sut, path="/", headers=None, method="GET", body=None, want=200):
    status, data = http_status(sut.port, path, method, headers, body)
    return status == want, f"{method} {path} answered {status} (wanted {want}): {data[:120]!r}"


def scenario_plain(env, modes, systems, tables):
    t = Table("1. Plain proxy, keep-alive", THROUGHPUT_COLUMNS,
              "wrk, GET through each proxy to `credentialflow bench-upstream` (fixed body).")
    sizes = [int(v) for v in env.args.plain_sizes.split(",")]
    conn_counts = [int(v) for v in env.args.plain_conns.split(",")]
    for mode in modes:
        for size in sizes:
            up, up_port = start_upstream(env, mode, "fixed", size)
            results = {}
            for system in systems:
                sut = start_or_skip(env, mode, system, "plain", up_port, "plain proxy")
                if not sut:
                    continue
                ok, why = probe(sut, "/plain/x")
                if not ok:
                    LOG.skip(f"plain proxy, {system}", why)
                    sut.stop()
                    continue
                script = wrk_script(env, "plain")
                for conns in conn_counts:
                    r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/plain/x", conns, script)
                    if r:
                        results[(conns, system)] = r
                        env.max_rps[(mode.name, size, conns, system)] = r["rps"]
                sut.stop()
            for conns in conn_counts:
                base = results.get((conns, "nginx"), {}).get("rps")
                for system in systems:
                    if (conns, system) in results:
                        throughput_row(t, f"{size} B, {conns} conns", mode, system,
                                       results[(conns, system)], base)
            up.stop()
    tables.append(t)


def scenario_simple(env, modes, systems, tables, kind, title, note, headers=None,
                    deny_probe=None, rotate=False):
    """Scenarios 2 and 3: one wrk case (128 B, 64 connections) per system."""
    t = Table(title, THROUGHPUT_COLUMNS, note)
    for mode in modes:
        up, up_port = start_upstream(env, mode, "fixed", 128)
        results = {}
        for system in systems:
            if kind == "lua" and system == "nginx" and not env.have["nginx_lua"]:
                LOG.skip("Lua hook, nginx", "libnginx-mod-http-lua is not installed")
                continue
            if kind == "lua" and system.startswith("ours"):
                cfg = ours_config(env, "lua-check", free_port(), 1, up_port, "lua")
                chk = subprocess.run([env.bin, "check", "--config", str(cfg)],
                                     capture_output=True, text=True, env=env.env())
                if chk.returncode != 0:
                    LOG.skip(f"Lua hook, {system}",
                             f"`credentialflow check` rejects hooks: {chk.stderr.strip()[:200]}")
                    continue
            sut = start_or_skip(env, mode, system, kind, up_port, title)
            if not sut:
                continue
            good_headers = dict(headers or {})
            if rotate:
                good_headers["x-api-key"] = env.keys[0]
            ok, why = probe(sut, "/x", good_headers)
            if ok and deny_probe:
                ok, why = probe(sut, "/x", deny_probe[0], want=deny_probe[1])
                if not ok and kind == "lua" and system.startswith("ours"):
                    why = ("`check` accepts `hooks` but the gateway does not run them yet "
                           "(a request without x-tenant was not denied)")
            if not ok:
                LOG.skip(f"{title}, {system} ({mode.name})", why)
                sut.stop()
                continue
            script = wrk_script(env, kind, headers=headers, rotate_keys=rotate)
            r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/x", 64, script)
            if r:
                results[system] = r
            sut.stop()
        base = results.get("nginx", {}).get("rps")
        for system in systems:
            if system in results:
                throughput_row(t, "128 B, 64 conns", mode, system, results[system], base)
        up.stop()
    tables.append(t)


def run_sse_client(env, mode, port, path, body, seconds, conns=8):
    """Time to first event: `credentialflow bench --stream` when it exists, else the Python
    client. Returns {events_per_stream, ttfe_p50_ms, ttfe_p99_ms, errors, client}."""
    url = f"http://127.0.0.1:{port}{path}"
    if env.have["bench_rate"]:
        argv = [env.bin, "bench", url, "--stream", "-c", str(conns), "-t", "1",
                "-d", f"{seconds}s", "--warmup", "1s", "--json"]
        if body:
            argv += ["-m", "POST", "-b", body, "-H", "content-type: application/json"]
    else:
        argv = [sys.executable, str(HERE / "sse_client.py"), "--port", str(port),
                "--path", path, "-c", str(conns), "-d", str(seconds)]
        if body:
            argv += ["--method", "POST", "--body", body]
    argv = launch_prefix(mode.gen_cpus) + argv
    LOG.command(argv)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    try:
        j = json.loads(out.stdout)
    except json.JSONDecodeError:
        print(f"    stream client failed: {out.stderr[-300:]}", flush=True)
        return None
    if "stream" not in j:
        j["client"] = "sse_client.py"
        return j
    st = j.get("stream") or {}
    with_events = st.get("responses_with_events") or 0
    return {
        "events_per_stream": st.get("events", 0) / with_events if with_events else 0,
        "ttfe_p50_ms": (st.get("first_event_ms") or {}).get("p50"),
        "ttfe_p99_ms": (st.get("first_event_ms") or {}).get("p99"),
        "errors": j.get("errors_total", 0),
        "client": "credentialflow bench --stream",
    }


def scenario_sse(env, modes, systems, tables):
    t = Table(
        "4. SSE streaming",
        ["case", "mode", "system", "streams/s", "events/s", "TTFE p50 ms", "TTFE p99 ms",
         "stream p99 ms (wrk)", "CPU µs/stream", "peak RSS MiB", "errors", "gen core", "vs nginx"],
        "Throughput from wrk (64 connections, each response a whole stream); time to first event "
        "(TTFE) at 8 connections from `credentialflow bench --stream` (or, without it, "
        "scripts/bench/sse_client.py). events/s = streams/s × events per stream. "
        "Ours: POST /v1/chat/completions with stream=true to the in-process mock provider "
        "(`lorem 32`); every system also proxies `bench-upstream --sse 32` (128 B events).",
    )
    ours = [s for s in systems if s.startswith("ours")]
    peer_systems = [s for s in systems if not s.startswith("ours")]
    if not env.have["upstream_sse"]:
        for s in peer_systems:
            LOG.skip(f"SSE, {s}", "`credentialflow bench-upstream --sse` does not exist yet "
                     "(nothing to proxy SSE from)")
        peer_systems = []
    for mode in modes:
        rows = []
        # ours, AI front door to the mock provider
        for system in ours:
            sut = start_or_skip(env, mode, system, "sse", None, "SSE")
            if not sut:
                continue
            ok, why = probe(sut, "/v1/chat/completions", {"content-type": "application/json"},
                            "POST", STREAM_BODY)
            if not ok:
                LOG.skip(f"SSE, {system}", why)
                sut.stop()
                continue
            script = wrk_script(env, "sse-ai", "POST", STREAM_BODY,
                                {"content-type": "application/json"})
            r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/v1/chat/completions", 64, script)
            c = run_sse_client(env, mode, sut.port, "/v1/chat/completions", STREAM_BODY,
                               env.args.duration)
            sut.stop()
            if r:
                rows.append(("AI front door, mock", system, r, c))
        # every system as a plain proxy of an SSE upstream, when there is one
        if env.have["upstream_sse"]:
            up, up_port = start_upstream(env, mode, "sse")
            for system in peer_systems + ours:
                sut = start_or_skip(env, mode, system, "sse_proxy", up_port, "SSE proxy")
                if not sut:
                    continue
                script = wrk_script(env, "sse-proxy")
                r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/sse", 64, script)
                c = run_sse_client(env, mode, sut.port, "/sse", None, env.args.duration)
                sut.stop()
                if r:
                    rows.append(("proxy of bench-upstream --sse", system, r, c))
            up.stop()
        base = {case: r["rps"] for case, s, r, _ in rows if s == "nginx"}
        for case, system, r, c in rows:
            per_stream = (c or {}).get("events_per_stream") or 0
            b = base.get(case)
            t.add([case, mode.name, system, fmt(r["rps"]), fmt(r["rps"] * per_stream),
                   fmt((c or {}).get("ttfe_p50_ms"), 2), fmt((c or {}).get("ttfe_p99_ms"), 2),
                   fmt(r["p99"], 2), fmt(r["cpu_us"], 1), fmt(r["rss_mib"], 1),
                   fmt(r["errors"] + ((c or {}).get("errors") or 0)), gen_cell(r, mode),
                   f"{r['rps'] / b:.2f}×" if b else "-"])
    tables.append(t)


def scenario_idle(env, modes, systems, tables, n):
    t = Table(
        "5. Idle keep-alive connections",
        ["mode", "system", "connections ok", "failed", "RSS before MiB", f"RSS with {n} MiB",
         "KiB per connection", "still serves", "vs nginx"],
        f"scripts/bench/idle_conns.py opens {n} connections, sends one GET on each, holds them "
        "idle; RSS (VmRSS summed over the process tree) before and with them open.",
    )
    if "haproxy" in systems and haproxy_maxconn() < n:
        LOG.note(f"idle: HAProxy reserves 2 descriptors per connection, so with ulimit -n "
                 f"{haproxy_maxconn() * 2 + 20} (the hard limit here) its maxconn is "
                 f"{haproxy_maxconn()}; connections past it wait in the backlog and count as failed")
    for mode in modes:
        up, up_port = start_upstream(env, mode, "fixed", 128)
        rows = {}
        for system in systems:
            sut = start_or_skip(env, mode, system, "plain", up_port, "idle")
            if not sut:
                continue
            for _ in range(20):
                http_status(sut.port, "/warm")
            before = status_kib(sut.tree(), "VmRSS")
            argv = [sys.executable, str(HERE / "idle_conns.py"), "--port", str(sut.port),
                    "--path", "/idle", "-n", str(n)]
            client = Proc(f"idle-{system}-{mode.name}", argv, env.work, cpus=mode.gen_cpus,
                          stdin=subprocess.PIPE)
            deadline = time.monotonic() + 180
            line = ""
            while time.monotonic() < deadline and client.alive():
                line = client.out_path.read_text()
                if line.startswith("ready"):
                    break
                time.sleep(0.2)
            time.sleep(2)
            during = status_kib(sut.tree(), "VmRSS")
            serves, _ = probe(sut, "/after")
            client.stop()
            sut.stop()
            if not line.startswith("ready"):
                LOG.skip(f"idle, {system} ({mode.name})", f"client never got ready: "
                         f"{client.stderr_text()[-300:]}")
                continue
            ok, failed = (int(x) for x in line.split()[1:3])
            per = (during - before) / max(1, ok)
            rows[system] = (ok, failed, before / 1024, during / 1024, per, serves)
        base = rows.get("nginx", (0, 0, 0, 0, 0))[4]
        for system, (ok, failed, b, d, per, serves) in rows.items():
            t.add([mode.name, system, fmt(ok), fmt(failed), fmt(b, 1), fmt(d, 1), fmt(per, 2),
                   "yes" if serves else "NO", f"{per / base:.2f}×" if base else "-"])
        up.stop()
    tables.append(t)


def scenario_body(env, modes, systems, tables):
    t = Table(
        "6. 1 MiB request and response bodies",
        ["case", "mode", "system", "req/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms",
         "CPU s per GB", "peak RSS MiB", "errors", "gen core", "vs nginx"],
        "wrk, 16 connections; upstream: a separate nginx (`scripts/bench/nginx/sink.conf`) that "
        "discards request bodies and serves a 1 MiB file, shared by every system. "
        "MB/s counts the 1 MiB body in the direction of the case.",
    )
    for mode in modes:
        up, up_port = start_upstream(env, mode, "sink")
        results = {}
        for system in systems:
            sut = start_or_skip(env, mode, system, "body", up_port, "bodies")
            if not sut:
                continue
            ok, why = probe(sut, "/big")
            if ok:
                ok, why = probe(sut, "/upload", method="POST", body=b"x" * MIB)
            if not ok:
                LOG.skip(f"bodies, {system} ({mode.name})", why)
                sut.stop()
                continue
            for case, path, script in (
                ("POST 1 MiB", "/upload", wrk_script(env, "post1m", "POST", body_bytes=MIB)),
                ("GET 1 MiB", "/big", wrk_script(env, "get1m")),
            ):
                r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}{path}", 16, script)
                if r:
                    results[(case, system)] = r
            sut.stop()
        for case in ("POST 1 MiB", "GET 1 MiB"):
            base = results.get((case, "nginx"), {}).get("rps")
            for system in systems:
                r = results.get((case, system))
                if not r:
                    continue
                gb = r["requests"] * MIB / 1e9 if r["requests"] else 0
                # cpu_s is the median run's CPU; requests the median run's count: close enough
                t.add([case, mode.name, system, fmt(r["rps"], 1), fmt(r["rps"] * MIB / 1e6),
                       fmt(r["p50"], 2), fmt(r["p99"], 2), fmt(r["p999"], 2),
                       fmt(r["cpu_s"] / gb if gb else None, 2), fmt(r["rss_mib"], 1),
                       fmt(r["errors"]), gen_cell(r, mode),
                       f"{r['rps'] / base:.2f}×" if base else "-"])
        up.stop()
    tables.append(t)


def scenario_litellm(env, modes, tables):
    t = Table(
        "7. AI path: credentialflow vs LiteLLM proxy",
        ["case", "mode", "system", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/req",
         "peak RSS MiB", "errors", "gen core", "vs LiteLLM"],
        "POST /v1/chat/completions (not streamed), 32 connections, both in front of the same "
        "OpenAI-compatible upstream: `credentialflow serve` with the mock provider, on the "
        "generator's core. Key check: ours a virtual key; LiteLLM its master key (LiteLLM's "
        "virtual keys need a Postgres database, not set up here).",
    )
    systems = ["ours-uring", "ours-epoll"]
    if env.have["litellm"]:
        systems.append("litellm")
    else:
        LOG.skip("LiteLLM", f"{env.args.litellm or 'litellm'} not found (pip install "
                 "'litellm[proxy]' failed or was not run; see bench-matrix.sh output)")
    for mode in modes:
        up, up_port = start_upstream(env, mode, "mock_openai")
        results = {}
        for system in systems:
            sut = start_or_skip(env, mode, system, "ai", None, "AI path", ai_upstream=up_port)
            if not sut:
                continue
            key = LITELLM_MASTER_KEY if system == "litellm" else env.keys[0]
            headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
            ok, why = probe(sut, "/v1/chat/completions", headers, "POST", CHAT_BODY)
            if not ok:
                LOG.skip(f"AI path, {system} ({mode.name})", why)
                sut.stop()
                continue
            script = wrk_script(env, f"chat-{system}", "POST", CHAT_BODY, headers)
            r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/v1/chat/completions", 32,
                        script)
            if r:
                results[system] = r
            sut.stop()
        base = results.get("litellm", {}).get("rps")
        for system in systems:
            r = results.get(system)
            if r:
                t.add(["chat, mock upstream", mode.name, system, fmt(r["rps"]), fmt(r["p50"], 2),
                       fmt(r["p99"], 2), fmt(r["p999"], 2), fmt(r["cpu_us"], 1),
                       fmt(r["rss_mib"], 1), fmt(r["errors"]), gen_cell(r, mode),
                       f"{r['rps'] / base:.2f}×" if base else "-"])
        up.stop()
    tables.append(t)


def run_bench_open(env, mode, sut, url, conns, rate, duration):
    """One open-loop run of `credentialflow bench --rate` (its --json summary)."""
    argv = [env.bin, "bench", url, "--rate", str(rate), "-c", str(conns), "-d", f"{duration}s",
            "-t", str(mode.wrk_threads), "--warmup", "1s", "--json"]
    argv = launch_prefix(mode.gen_cpus) + argv
    LOG.command(argv)
    cpu0 = cpu_ticks(sut.tree())
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    cpu1 = cpu_ticks(sut.tree())
    try:
        j = json.loads(out.stdout)
    except json.JSONDecodeError:
        print(f"    bench failed: {out.stderr[-300:]}", flush=True)
        return None
    lat = j["latency_ms"]
    ok = sum(n for code, n in j["status"].items() if code.startswith("2"))
    return {
        "rps": j["rps"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "p999": lat["p99_9"],
        "max": lat["max"],
        # recorded requests only (the warm-up's CPU is in the window too: a slight overcount)
        "cpu_us": (cpu1 - cpu0) / CLK_TCK * 1e6 / max(1, j["requests"]),
        "errors": j["errors_total"] + (j["responses"] - ok),
        "unsent": j["unsent"],
    }


def open_loop(env, modes, systems, tables):
    """The same offered rate for every system (no coordinated omission), 128 B, 64 conns."""
    if not env.have["bench_rate"]:
        LOG.skip("open loop at an equal offered rate",
                 "`credentialflow bench --rate` is not in this binary yet and wrk2 is not in "
                 "Debian; every other figure here is closed-loop wrk (latencies carry "
                 "coordinated omission)")
        return
    t = Table(
        "Open loop: equal offered rate",
        ["mode", "system", "offered req/s", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms",
         "max ms", "CPU µs/req", "errors", "unsent", "p99 vs nginx"],
        "`credentialflow bench --rate` (latency from each request's intended send time), 128 B, "
        "64 connections. The rate is 60% of the slowest system's closed-loop maximum in "
        "scenario 1 (same mode), so every system can sustain it.",
    )
    for mode in modes:
        maxima = [r for (m, size, conns, _), r in env.max_rps.items()
                  if m == mode.name and size == 128 and conns == 64]
        rate = int(min(maxima) * 0.6 / 100) * 100 if maxima else env.args.open_rate
        rate = max(rate, 100)
        up, up_port = start_upstream(env, mode, "fixed", 128)
        results = {}
        for system in systems:
            sut = start_or_skip(env, mode, system, "plain", up_port, "open loop")
            if not sut:
                continue
            url = f"http://127.0.0.1:{sut.port}/open"
            run_bench_open(env, mode, sut, url, 64, rate, env.args.warmup)
            runs = [run_bench_open(env, mode, sut, url, 64, rate, env.args.duration)
                    for _ in range(env.args.runs)]
            sut.stop()
            r = median_of(runs)
            if r:
                results[system] = r
        base = results.get("nginx", {}).get("p99")
        for system, r in results.items():
            t.add([mode.name, system, fmt(rate), fmt(r["rps"]), fmt(r["p50"], 2),
                   fmt(r["p99"], 2), fmt(r["p999"], 2), fmt(r["max"], 2), fmt(r["cpu_us"], 1),
                   fmt(r["errors"]), fmt(r["unsent"]),
                   f"{r['p99'] / base:.2f}×" if base else "-"])
        up.stop()
    tables.append(t)


def scenario_generator(env, tables):
    """The load generators themselves: `wrk -t1` and `credentialflow bench -t 1` against one
    nginx `return 200` (issue 21), taking turns on the generator core, nginx alone on the other."""
    if not env.have["nginx"]:
        LOG.skip("load generators", "nginx is not installed")
        return
    t = Table(
        "Load generators: wrk and `credentialflow bench` against nginx `return 200`",
        ["generator", "req/s", "p50 ms", "p99 ms", "generator CPU µs/req", "errors", "req/s vs wrk",
         "CPU/req vs wrk"],
        "1 thread, 16 connections, latency recorded; nginx (1 worker, empty 200) on core 0, the "
        "generators on core 1, alternating runs, the median of --runs. A generator slower than "
        "wrk here measures itself, not the system under test; when nginx's core is the limit, "
        "the generators' CPU per request is the figure that separates them.",
    )
    port = free_port()
    conf = env.work / "gen-nginx.conf"
    conf.write_text(fill("nginx/return200.conf", DIR=env.work, PORT=port))
    nginx = Proc(f"gen-nginx-{port}", ["nginx", "-c", str(conf), "-p", str(env.work)], env.work,
                 cpus="0", env=env.env())
    wait_port(port)
    url = f"http://127.0.0.1:{port}/"
    gen = launch_prefix("1")

    def wrk_run(duration):
        argv = gen + ["wrk", "-t1", "-c16", f"-d{duration}s", "--latency", url]
        LOG.command(argv)
        cpu0 = children_cpu_s()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        cpu = children_cpu_s() - cpu0
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
        total = re.search(r"(\d+) requests in", out.stdout)
        if not (rps and total):
            print(f"    wrk failed: {out.stdout[-300:]} {out.stderr[-300:]}", flush=True)
            return None

        def pct(q):
            m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.M)
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
            return float(m.group(1)) * scale[m.group(2)] if m else None

        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                           out.stdout)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
        return {"rps": float(rps.group(1)), "p50": pct(50), "p99": pct(99),
                "cpu_us": cpu * 1e6 / max(1, int(total.group(1))),
                "errors": (sum(map(int, errors.groups())) if errors else 0)
                + (int(non2xx.group(1)) if non2xx else 0)}

    def bench_run(duration):
        argv = gen + [env.bin, "bench", url, "-t", "1", "-c", "16", "-d", f"{duration}s", "--json"]
        LOG.command(argv)
        cpu0 = children_cpu_s()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        cpu = children_cpu_s() - cpu0
        try:
            j = json.loads(out.stdout)
        except json.JSONDecodeError:
            print(f"    bench failed: {out.stderr[-300:]}", flush=True)
            return None
        ok = sum(n for code, n in j["status"].items() if code.startswith("2"))
        return {"rps": j["rps"], "p50": j["latency_ms"]["p50"], "p99": j["latency_ms"]["p99"],
                "cpu_us": cpu * 1e6 / max(1, j["requests"]),
                "errors": j["errors_total"] + (j["responses"] - ok)}

    try:
        wrk_run(env.args.warmup)
        bench_run(env.args.warmup)
        runs = {"wrk": [], "credentialflow bench": []}
        for _ in range(env.args.runs):
            runs["wrk"].append(wrk_run(env.args.duration))
            runs["credentialflow bench"].append(bench_run(env.args.duration))
    finally:
        nginx.stop()
    results = {name: median_of(r) for name, r in runs.items()}
    base = results["wrk"]
    for name, r in results.items():
        if r:
            t.add([name, fmt(r["rps"]), fmt(r["p50"], 3), fmt(r["p99"], 3), fmt(r["cpu_us"], 2),
                   fmt(r["errors"]), f"{r['rps'] / base['rps']:.2f}×" if base else "-",
                   f"{r['cpu_us'] / base['cpu_us']:.2f}×" if base else "-"])
    tables.append(t)


def sysctl(name, value=None):
    path = Path("/proc/sys") / name.replace(".", "/")
    if value is None:
        return path.read_text().strip()
    path.write_text(str(value))
    LOG.command(["sysctl", "-w", f"{name}={value}"])


def tuning_backlog(env, modes, systems, tables):
    """somaxconn/backlog on the 1,000-connection case: 128 against 4096."""
    names = ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"]
    try:
        saved = {n: sysctl(n) for n in names}
        for n in names:
            sysctl(n, saved[n])
    except OSError as e:
        LOG.skip("tuning: somaxconn/backlog", f"sysctls are read-only here ({e})")
        return
    t = Table("Tuning: somaxconn and SYN backlog on 1,000 new connections",
              ["somaxconn / syn backlog", "system", "req/s", "p50 ms", "p99 ms", "p99.9 ms",
               "errors"],
              "128 B, 1,000 connections opened at once by wrk, pinned mode. Each system restarted "
              "after the change (the backlog is fixed at listen()).")
    mode = modes[0]
    try:
        for value in (128, 4096):
            for n in names:
                sysctl(n, value)
            up, up_port = start_upstream(env, mode, "fixed", 128)
            for system in systems:
                sut = start_or_skip(env, mode, system, "plain", up_port, "tuning", backlog=value)
                if not sut:
                    continue
                script = wrk_script(env, "plain")
                r = measure(env, mode, sut, f"http://127.0.0.1:{sut.port}/t", 1000, script)
                sut.stop()
                if r:
                    t.add([f"{value} / {value}", system, fmt(r["rps"]), fmt(r["p50"], 2),
                           fmt(r["p99"], 2), fmt(r["p999"], 2), fmt(r["errors"])])
            up.stop()
    finally:
        for n in names:
            sysctl(n, saved[n])
    tables.append(t)


def scenario_micro(env, tables):
    """The criterion micro-benchmarks (see micro.py): read from target/criterion, after running
    every bench file when --micro-run. Needs no peers, keys or running gateway."""
    sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
    import micro  # beside this file: scripts/bench/micro.py

    tables.append(micro.section(ROOT, run=env.args.micro_run, record_command=LOG.command))


# ---------------------------------------------------------------------------------------------
# The report


def machine_facts(env):
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "commit": commit + (" (src/ has uncommitted changes)" if dirty else ""),
        "binary": f"{env.bin_source.relative_to(ROOT) if env.bin_source.is_relative_to(ROOT) else env.bin_source} "
        f"(built {time.strftime('%Y-%m-%d %H:%M', time.gmtime(os.path.getmtime(env.bin)))} UTC)",
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "somaxconn": sysctl("net.core.somaxconn"),
        "netdev_max_backlog": sysctl("net.core.netdev_max_backlog"),
        "nofile": subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip(),
        "memlock": subprocess.run(["sh", "-c", "ulimit -l"], capture_output=True, text=True).stdout.strip(),
    }


def tuning_section(env, facts):
    """What each setting of tuning/ bought on this machine, from this run's facts."""
    measured = any(t.title.startswith("Tuning:") for t in env.tables)
    uring = "uring" in env.drivers_seen.values()
    return [
        "## Tuning (tuning/)", "",
        "| setting | on this machine |", "|---|---|",
        "| `net.core.somaxconn`, `tcp_max_syn_backlog` | "
        + ("measured: see the tuning table above (128 against 4096, 1,000 connections "
           "opened at once) |" if measured else "not measured in this run |"),
        "| `ip_local_port_range`, `tcp_tw_reuse`, `tcp_fin_timeout` | no difference to "
        "expect here: upstream keep-alive pools keep outgoing connections in the hundreds, "
        "far from the 28,232 ports of the default range; they matter when pools churn "
        "(upstreams that close connections) |",
        f"| `fs.file-max`, `nofile` | the hard `nofile` here is {facts['nofile']} and cannot be "
        "raised (no CAP_SYS_RESOURCE in this container): it is what caps the idle scenario "
        "and HAProxy's maxconn; 10,000 connections fit |",
        f"| `memlock` | kernel {facts['kernel']} (>= 5.12) does not charge io_uring rings to "
        f"RLIMIT_MEMLOCK: the uring driver {'ran' if uring else 'did not run'} with "
        f"`ulimit -l` {facts['memlock']} KiB; the setting matters on older kernels only |",
        "| `net.core.busy_poll`, `busy_read` | left at 0: they poll NIC queues, loopback has "
        "none, and spinning would take a core from a 2-core box; not measured |",
        f"| `netdev_max_backlog` ({facts['netdev_max_backlog']}) | loopback packets pass "
        f"through this per-CPU queue: {env.softnet_drops()} packets were dropped there during "
        "the run (`/proc/net/softnet_stat`), so raising it "
        + ("would help |" if env.softnet_drops() else "buys nothing here |"),
        "", "`tuning/check.sh` reports where a host differs from the profile.", "",
    ]


def write_report(env, facts, tables, load_start, load_end, started, argv):
    lines = [
        "# Benchmark matrix",
        "",
        "Generated by `scripts/bench-matrix.sh`; do not edit by hand (re-run the script).",
        "",
        "## Machine and run",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"took {(time.time() - started) / 60:.1f} min",
        f"- CPU: {facts['cpu']}, {facts['cores']} cores; kernel {facts['kernel']}",
        f"- load average at start {load_start}, at end {load_end} (the machine is shared: "
        "other engineers build Rust on it, so figures move between runs)",
        f"- credentialflow commit {facts['commit']}; binary {facts['binary']}",
        f"- drivers in use (from the ready line): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(env.drivers_seen.items())),
        f"- peers: {facts['nginx']}; {facts['haproxy']}; load generator {facts['wrk']}",
        f"- net.core.somaxconn {facts['somaxconn']}, ulimit -n {facts['nofile']}",
        f"- invocation: `{os.environ.get('CF_MATRIX_INVOCATION') or ' '.join(map(shlex.quote, argv))}`: "
        f"{env.args.runs} run(s) of "
        f"{env.args.duration} s per figure (median of each figure), {env.args.warmup} s warm-up; "
        f"every process of the run at niceness {env.args.nice}",
        "",
        "## Method",
        "",
        "- **pinned**: the system under test has 1 worker on core 0 (`taskset -c 0`); wrk and the "
        "upstream share core 1. **unpinned**: 2 workers, nothing pinned, generator and upstream "
        "share both cores with the proxy.",
        "- `gen core` is `A / B`: A is wrk + upstream CPU (utime+stime) as a share of one core; "
        "B is core 1's total utilisation in pinned mode (the whole host's in unpinned mode), "
        "other tenants' processes included. `gen-bound` (A >= 90%) means the generator side, "
        "not the proxy, set the pace: compare CPU µs/req then, not req/s. `core busy` "
        "(B >= 95%) means core 1 was saturated, by our generator or by other work on the host.",
        "- Access logs off for every system; upstream keep-alive pools everywhere (nginx "
        "`keepalive 512`, HAProxy `http-reuse always`, ours per-worker pools); SO_REUSEPORT "
        "(nginx `reuseport`, HAProxy's default, ours); listen backlog 4096 for all; "
        "`proxy_buffering off` for SSE and bodies, `proxy_request_buffering off` for bodies.",
        "- CPU µs/req: utime+stime of the system's process tree (/proc/PID/stat, "
        f"{CLK_TCK} Hz ticks) over the run, divided by completed requests. Peak RSS: VmHWM "
        "summed over the process tree (nginx master + workers).",
        "- errors: wrk socket errors (connect, read, write, timeout) plus responses >= 400.",
        "- wrk is closed-loop, so its latencies carry coordinated omission; the open-loop table "
        "(`credentialflow bench --rate`, when the binary has it) compares latency at an equal "
        "offered rate without it.",
        "",
        "## Results",
        "",
    ]
    for t in tables:
        lines.append(t.markdown())
    lines += ["## Skipped", ""]
    lines += [f"- {s}" for s in LOG.skips] or ["- nothing"]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in LOG.notes] or ["- none"]
    lines.append("")
    lines += tuning_section(env, facts)
    lines += ["## Commands", "", "Every command the run started, once each, with the run's "
              "temporary folder as `$WORK` and the free ports it picked as `PORT`. The configs "
              "in `$WORK` come from the templates under `scripts/bench/` (nginx, HAProxy) and "
              "from `ours_config()` in `scripts/bench/matrix.py` (credentialflow); "
              "`credentialflow` is a copy of the binary named above.", "", "```"]
    lines += LOG.commands
    lines += ["```", ""]
    out = Path(env.args.out)
    out.write_text("\n".join(lines))
    print(f"\nwrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "credentialflow"))
    ap.add_argument("--quick", action="store_true", help="1 run per figure, short durations")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--idle", type=int, default=10000, help="connections in scenario 5")
    ap.add_argument("--scenarios", default="1,open,2,3,4,5,6,7,gen,tuning,micro")
    ap.add_argument("--micro-run", action="store_true",
                    help="micro: run every `cargo bench --bench B` first (default: report the "
                    "results already in target/criterion)")
    ap.add_argument("--open-rate", type=int, default=5000,
                    help="offered rate of the open-loop table when scenario 1 did not run")
    ap.add_argument("--modes", default="pinned,unpinned")
    ap.add_argument("--plain-sizes", default="128,4096",
                    help="scenario 1's response sizes in bytes (an A/B run may want only 128)")
    ap.add_argument("--plain-conns", default="64,1000",
                    help="scenario 1's connection counts")
    ap.add_argument("--litellm", default="/opt/cf-bench/litellm/bin/litellm")
    ap.add_argument("--systems", default="nginx,haproxy,ours-uring,ours-epoll",
                    help="systems under test (LiteLLM joins scenario 7 when installed)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    ap.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                    help="niceness of every process of the run (default -10 as root: the "
                    "machine is shared, and other tenants' builds would otherwise steal the "
                    "pinned cores)")
    ap.add_argument("--out", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 3, 1
    global NICE
    NICE = args.nice
    started = time.time()
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    env = Env(args)
    env.tables = tables = []
    want = set(args.scenarios.split(","))
    load_runs = bool(want - {"micro"})  # micro reads criterion's files: no wrk, keys or peers
    if load_runs and not env.have["wrk"]:
        raise SystemExit("wrk is required (apt-get install -y wrk)")
    if (os.cpu_count() or 1) < 2:
        LOG.note("fewer than 2 cores: pinned mode shares core 0 with the generator")
    print(f"work dir {env.work}; tools: {env.have}", flush=True)
    for k, v in machine_facts(env).items():
        print(f"{k}: {v}", flush=True)
    if want - {"micro", "gen"}:  # the generators' scenario loads nginx directly: no keys
        env.create_keys()
    modes = [Mode(m) for m in args.modes.split(",")]
    ours = ["ours-uring", "ours-epoll"]
    chosen = args.systems.split(",")
    systems = peers(env, [s for s in ("nginx", "haproxy") if s in chosen and load_runs])
    systems += [s for s in ours if s in chosen]
    steps = [
        ("1", lambda: scenario_plain(env, modes, systems, tables)),
        ("open", lambda: open_loop(env, modes, systems, tables)),
        ("2", lambda: scenario_simple(
            env, modes, systems, tables, "keys",
            "2. API-key check + per-key rate limit",
            f"wrk, {KEY_COUNT} keys rotated per request in `x-api-key`, per-key limit "
            f"{KEY_RPS} req/s (never reached: this measures the check). nginx: map + limit_req; "
            "HAProxy: map + stick-table; ours: virtual keys with `rps`.",
            rotate=True, deny_probe=({}, 401))),
        ("3", lambda: scenario_simple(
            env, modes, systems, tables, "lua",
            "3. A Lua hook on every request",
            "The same logic everywhere: deny without `x-tenant`, else copy it to "
            "`x-tenant-checked`. nginx: access_by_lua_block (LuaJIT); HAProxy: http-request "
            "lua action (Lua 5.3); ours: `[[route]] hooks` with on_access (Luau).",
            headers={"x-tenant": "acme"}, deny_probe=({}, 403))),
        ("4", lambda: scenario_sse(env, modes, systems, tables)),
        ("5", lambda: scenario_idle(env, modes, systems, tables, args.idle)),
        ("6", lambda: scenario_body(env, modes, systems, tables)),
        ("7", lambda: scenario_litellm(env, modes, tables)),
        ("gen", lambda: scenario_generator(env, tables)),
        ("tuning", lambda: tuning_backlog(env, modes, [s for s in systems
                                                       if s in ("nginx", "ours-uring")], tables)),
        ("micro", lambda: scenario_micro(env, tables)),
    ]
    try:
        for key, step in steps:
            if key in want:
                print(f"\n== scenario {key} ==", flush=True)
                try:
                    step()
                except Exception as e:  # one scenario's failure must not lose the others
                    LOG.skip(f"scenario {key}", f"it failed: {type(e).__name__}: {e}")
    finally:
        for proc in Proc.started:
            proc.stop()
        facts = machine_facts(env)
        load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        write_report(env, facts, tables, load_start, load_end, started, sys.argv)
        if args.keep:
            print(f"kept {env.work}")
        else:
            shutil.rmtree(env.work, ignore_errors=True)


if __name__ == "__main__":
    main()
