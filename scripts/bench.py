"""`make bench`: load-test the service against reference servers, in one run.

Starts Gunicorn exactly as `make serve` does (same config file, same settings,
loopback port), drives it with `hey` (installed from Debian if missing), then
does the same for the reference servers (``scripts/bench_ref.py``):

- fastapi: FastAPI + uvicorn + ONNX Runtime by hand, the same ``model.onnx`` and
  request body, as many worker processes as the service, one intra-op thread;
- floor: Flask parses the same JSON and returns a constant (nothing can be faster here);
- naive (``--servers ...,naive``): Flask + ``model.predict`` per request, as tutorials do.

Workloads: single-instance requests at concurrency 1, 8 and 32 (req/s, p50,
p99), and batches of 1, 16, 32 and 256 instances at concurrency 8 (rows/s), for
digit by default (``--models all`` for every model). Then, unless cut by flags:
``--balance-runs`` runs each at c=8 and c=32 on the service and the FastAPI
reference with the split of connections over the workers (``hey`` opens all its
connections at start and keeps them alive; the split is read from /proc during
the run); adaptive batching on vs off at c=1 (a second service with
``DLQR_MAX_BATCH_SIZE=1``); and the mean batch the service ran at c=32 (its
``dlqr_model_batch_rows`` histogram); and the cost of shadow scoring (``--shadow-model``,
default digit; ``--no-shadow-check`` skips it): p50 at c=8 of the service vs a second
service whose routing adds a shadow version at 100 %, alternating, in the same run. The three servers run side by side (idle ones cost nothing) and each
cell is measured on all three back to back, alternating the order, so that a
busy neighbour on a shared machine skews the ratios as little as possible.
Also RSS per worker, time from start to ready and (``--install-size``) the
size of a fresh serving-only environment built by the image's own install
script. Each cell also records the CPU the server's workers and ``hey`` used
per answered request; the goal lines give the service/floor ratio both from
req/s and from that CPU (steadier when a round is disturbed), and count a
ratio goal met only when both reach it. Prints one Markdown table plus the
machine and the goal check;
``--json`` saves raw numbers. Crash, HUP and SIGTERM scenarios under load are
``make chaos`` (scripts/chaos.py).

Only 127.0.0.1 is targeted; every run is bounded by ``--duration``.

    .venv/bin/python scripts/bench.py [--duration 2] [--rounds 3] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dlqr import repository  # noqa: E402  (standard library only)

MODELS = ("wine", "seizure", "digit")  # the shipped bundles the tables are about
CONCURRENCY = (1, 8, 32)
BATCHES = (1, 16, 32, 256)
BATCH_CONCURRENCY = 8
BALANCE_CONCURRENCY = (8, 32)
SERVERS = {
    "service": "serving.wsgi:app",
    "fastapi": "bench_ref:fastapi_app",
    "floor": "bench_ref:floor_app()",
    "naive": "bench_ref:naive_app()",
    # the same service with adaptive batching off, for the "batching never hurts" check
    "unbatched": "serving.wsgi:app",
    "unmonitored": "serving.wsgi:app",
    # the same service with a shadow version scoring every request, for the shadow-cost check
    "shadowed": "serving.wsgi:app",
}
SERVICE_KINDS = ("service", "unbatched", "shadowed", "unmonitored")
#: Goals against the FastAPI reference (digit, single instances) and for balance, tail, batching.
GOAL_FASTAPI_RATIO = {1: 1.0, 8: 1.5, 32: 1.5}
GOAL_BALANCE = 0.85  # slowest / fastest of the balance runs
GOAL_TAIL = 3.0  # p99 / p50 at c=8
GOAL_BATCHING_C1 = 0.05  # c=1 latency, batching on vs off
GOAL_MEAN_BATCH_ROWS = 4.0  # at c=32
GOAL_SHADOW_P50 = 0.10  # c=8 p50 with a shadow at 100 % vs none
#: The drift monitor may add at most this much worker CPU per request.
GOAL_MONITOR_CPU = 0.05
#: Goals (digit, concurrency 8): service / floor for single instances and for 256-row batches,
#: against naive, p99; per worker RSS at ready, start to ready, serving install size.
GOAL_FLOOR_FRACTION = 0.80
GOAL_BATCH_FLOOR_FRACTION = 0.80
GOAL_NAIVE_FACTOR = 20.0
GOAL_P99_MS = 10.0
GOAL_RSS_MIB = 150.0
GOAL_READY_S = 1.5
GOAL_INSTALL_MB = 350.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- load generator


def ensure_hey() -> str:
    """Path to `hey`, installing Debian's package when missing (needs root or password-less sudo)."""
    found = shutil.which("hey")
    if found:
        return found
    log("hey not found: installing the Debian package 'hey' ...")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        sys.exit("bench: `hey` is required; install it (Debian/Ubuntu: apt-get install hey) and rerun")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "hey"]):
        subprocess.run(prefix + cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("hey")
    if not found:
        sys.exit("bench: installing hey failed")
    return found


def parse_hey(text: str) -> dict:
    """Requests/sec, p50/p99 (ms) and status counts from hey's text summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"50%+ in ([\d.]+) secs", text)
    p99 = re.search(r"99%+ in ([\d.]+) secs", text)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = re.search(r"Error distribution:(.*)", text, re.S)
    if not rps:
        raise RuntimeError(f"cannot parse hey output:\n{text[-2000:]}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * 1000 if p50 else float("nan"),
        "p99_ms": float(p99.group(1)) * 1000 if p99 else float("nan"),
        "codes": codes,
        "errors": errors.group(1).strip()[:500] if errors else "",
    }


def median_run(reps: list[dict]) -> dict:
    """Per-metric median over the rounds of one cell (robust to a noisy neighbour's burst)."""

    def med(key: str) -> float:
        vals = sorted(r[key] for r in reps)
        return vals[len(vals) // 2]

    codes: dict[int, int] = {}
    for r in reps:
        for c, n in r["codes"].items():
            codes[c] = codes.get(c, 0) + n
    out = {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "codes": codes,
        "rounds_rps": [round(r["rps"], 1) for r in reps],
    }
    for key in ("worker_cpu_ms", "hey_cpu_ms"):
        if all(key in r for r in reps):
            out[key] = med(key)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (/proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone (a worker replaced mid-run): its share is lost, not guessed
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


_TCP_ESTABLISHED, _TCP_LISTEN = "01", "0A"


def tcp_sockets(port: int) -> dict[int, str]:
    """Socket inode -> TCP state (hex, /proc/net/tcp) of every socket whose local port is ``port``."""
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                out[int(f[9])] = f[3]
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open (/proc/<pid>/fd)."""
    found = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def connection_split(pids: list[int], port: int) -> list[int]:
    """Established connections to ``port`` held by each of the processes that listen on it.

    Read from /proc (no cooperation from the server): works the same for Gunicorn and uvicorn
    workers. Processes that do not hold a listener on the port (a multiprocessing helper) are
    left out; the list is sorted, largest share first.
    """
    states = tcp_sockets(port)
    split = []
    for pid in pids:
        mine = socket_inodes(pid)
        if not any(states.get(i) == _TCP_LISTEN for i in mine):
            continue
        split.append(sum(1 for i in mine if states.get(i) == _TCP_ESTABLISHED))
    return sorted(split, reverse=True)


def run_hey(
    hey: str,
    url: str,
    body: Path,
    conc: int,
    duration: float,
    ctype: str = "application/json",
    workers: list[int] | None = None,
    port: int | None = None,
) -> dict:
    """One hey run; with ``workers`` (the server's worker pids) also the CPU per answered request
    of the workers and of hey itself, which shows where a ratio comes from on a shared machine,
    and (with ``port``) how hey's connections were split over the workers mid-run."""
    cmd = [hey, "-z", f"{duration}s", "-c", str(conc), "-m", "POST", "-T", ctype, "-D", str(body), url]
    w0, h0 = cpu_seconds(workers or []), resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        split: list[int] = []
        if workers and port:
            # hey opens its connections at start and keeps them: one look once they are up
            # (the fullest of a few looks, in case a connection is being replaced).
            time.sleep(min(0.5, duration / 4))
            for _ in range(3):
                look = connection_split(workers, port)
                if sum(look) > sum(split):
                    split = look
                time.sleep(min(0.2, duration / 10))
        stdout, _ = proc.communicate(timeout=duration + 120)
    w1, h1 = cpu_seconds(workers or []), resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_hey(stdout)
    if split:
        res["split"] = split
    answered = sum(res["codes"].values())
    if workers and answered:
        res["worker_cpu_ms"] = (w1 - w0) * 1000 / answered
        res["hey_cpu_ms"] = (h1.ru_utime + h1.ru_stime - h0.ru_utime - h0.ru_stime) * 1000 / answered
    bad = {c: n for c, n in res["codes"].items() if c != 200}
    if bad or res["errors"]:
        log(f"  warning: non-200 responses {bad} {res['errors'][:200]}")
    return res


# ---------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, kind: str, port: int, artifacts: Path, logdir: Path, workers: int):
        self.kind, self.port, self.workers = kind, port, workers
        self.log_path = logdir / f"{kind}.log"
        self.env = {
            **os.environ,
            "DLQR_BIND": f"127.0.0.1:{port}",
            "DLQR_ARTIFACTS_DIR": str(artifacts),
            "DLQR_WORKERS": str(workers),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # let the config create and clean its own
        if kind == "unbatched":
            self.env["DLQR_MAX_BATCH_SIZE"] = "1"  # adaptive batching off, all else the same
        if kind == "unmonitored":
            self.env["DLQR_MONITOR_ENABLED"] = "false"  # drift monitor off, all else the same

    def command(self) -> list[str]:
        """The server's command line: the service exactly as `make serve` starts it."""
        if self.kind == "fastapi":
            return [
                sys.executable, "-m", "uvicorn", "--factory", SERVERS[self.kind], "--app-dir", "scripts",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        cmd = [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py"]
        if self.kind not in SERVICE_KINDS:
            cmd += ["--pythonpath", "scripts"]
        return [*cmd, SERVERS[self.kind]]

    def start(self) -> float:
        """Start, wait until every worker is ready; returns seconds from start to ready."""
        cmd = self.command()
        self._log = open(self.log_path, "w")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.port}/readyz"
        self.first_ready = None
        deadline = t0 + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited:\n{self.log_path.read_text()[-3000:]}")
            if get(url) == 200:
                self.first_ready = self.first_ready or time.monotonic() - t0
                if self._all_workers_ready():
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready in 300 s")

    def _all_workers_ready(self) -> bool:
        if self.kind in SERVICE_KINDS:
            # dlqr_model_ready is the minimum over live workers: 1 only when every worker has loaded and
            # self-tested every model (workers register it as 0 at boot, long before loading ends).
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return False
            values = re.findall(r'^dlqr_model_ready\{model="(\w+)"\} ([\d.]+)$', text, re.M)
            return len(values) == len(MODELS) and all(float(v) == 1.0 for _, v in values)
        # reference servers load at import: a worker answers only once loaded; probe a few times
        return all(get(f"http://127.0.0.1:{self.port}/readyz") == 200 for _ in range(20))

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def metrics_text(self) -> str:
        """The service's /metrics (every worker's, summed by the multi-process collector)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                return r.read().decode()
        except OSError:
            return ""

    def rss(self) -> list[float]:
        return [round(rss_mib(p), 1) for p in children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------- workload


def bodies(artifacts: Path, workdir: Path) -> dict[tuple[str, str], Path]:
    """Request bodies: one real test-split instance (golden inputs), and batches of 1/32/256."""
    out = {}
    for name in MODELS:
        bundle = repository.latest_dir(artifacts / name) or artifacts / name
        golden = [g["input"] for g in json.loads((bundle / "manifest.json").read_text())["golden"]]
        single = workdir / f"{name}-single.json"
        single.write_text(json.dumps(golden[0]))
        out[(name, "single")] = single
        for n in BATCHES:
            p = workdir / f"{name}-batch{n}.json"
            p.write_text(json.dumps({"instances": [golden[i % len(golden)] for i in range(n)]}))
            out[(name, f"batch{n}")] = p
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(x.split()[1])
            for x in Path("/proc/meminfo").read_text().splitlines()
            if x.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    import importlib.metadata as md

    def ver(d):
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            return "-"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": ver("numpy"),
        "onnxruntime": ver("onnxruntime"),
        "tensorflow": ver("tensorflow-cpu") if ver("tensorflow-cpu") != "-" else ver("tensorflow"),
        "keras": ver("keras"),
        "flask": ver("flask"),
        "gunicorn": ver("gunicorn"),
        "hey": "hey (Debian)",
    }


def fmt(x: float, digits: int = 0) -> str:
    return "-" if x != x else f"{x:,.{digits}f}"


def histogram_totals(text: str, name: str, model: str) -> tuple[float, float]:
    """(sum, count) of one model's series of a Prometheus histogram in exposition text."""
    total = count = 0.0
    for suffix in ("sum", "count"):
        m = re.search(rf'^{name}_{suffix}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+-]+)$', text, re.M)
        if m:
            if suffix == "sum":
                total = float(m.group(1))
            else:
                count = float(m.group(1))
    return total, count


def batch_stats(before: str, after: str, model: str) -> dict | None:
    """Mean rows and requests per model run between two /metrics scrapes, or None without the
    batching histograms (a service without adaptive batching)."""
    out = {}
    for key, name in (("rows", "dlqr_model_batch_rows"), ("requests", "dlqr_model_batch_requests")):
        s0, c0 = histogram_totals(before, name, model)
        s1, c1 = histogram_totals(after, name, model)
        if c1 - c0 <= 0:
            return None
        out[f"mean_{key}"] = (s1 - s0) / (c1 - c0)
        out["runs"] = c1 - c0
    s0, c0 = histogram_totals(before, "dlqr_model_batch_queue_wait_seconds", model)
    s1, c1 = histogram_totals(after, "dlqr_model_batch_queue_wait_seconds", model)
    if c1 > c0:
        out["mean_queue_wait_ms"] = (s1 - s0) / (c1 - c0) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark the service against FastAPI, floor (and naive) reference servers."
    )
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="measurements per cell and server; the median is shown"
    )
    ap.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of discarded load per model and server"
    )
    ap.add_argument("--quick", action="store_true", help="2 s runs, 1 round, 2 balance runs: a smoke check")
    ap.add_argument(
        "--servers", default="service,fastapi,floor", help="comma-separated subset of " + ",".join(SERVERS)
    )
    ap.add_argument("--models", default="digit", help="comma-separated models, or 'all' (default digit)")
    ap.add_argument(
        "--balance-runs",
        type=int,
        default=5,
        help="runs each at c=8 and c=32 for the balance check (0: skip)",
    )
    ap.add_argument("--balance-duration", type=float, default=3.0, help="seconds per balance run")
    ap.add_argument(
        "--no-batching-check", action="store_true", help="skip the batching on/off comparison at c=1"
    )
    ap.add_argument("--no-shadow-check", action="store_true", help="skip the shadow-cost comparison at c=8")
    ap.add_argument(
        "--no-monitor-check", action="store_true", help="skip the drift monitor on/off comparison at c=8"
    )
    ap.add_argument(
        "--monitor-only",
        action="store_true",
        help="only the drift monitor on/off comparison (every model, single rows, c=8), nothing else",
    )
    ap.add_argument(
        "--shadow-model", default="digit", help="model of the shadow-cost comparison (default digit)"
    )
    ap.add_argument(
        "--artifacts", type=Path, default=Path(os.environ.get("DLQR_ARTIFACTS_DIR") or ROOT / "artifacts")
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--install-size",
        action="store_true",
        help="also build a serving-only venv with deploy/docker/install-serve.sh and measure it",
    )
    args = ap.parse_args(argv)
    models = MODELS if args.models == "all" else tuple(m.strip() for m in args.models.split(",") if m.strip())
    duration = 2.0 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    balance_runs = min(args.balance_runs, 2) if args.quick else args.balance_runs
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers + list(models) if s not in SERVERS and s not in MODELS]
    if unknown:
        sys.exit(f"bench: unknown server or model {', '.join(unknown)}")
    if "service" in servers and not args.no_batching_check and "unbatched" not in servers:
        servers.append("unbatched")  # measured only in the batching comparison
    shadow_setup = None
    if "service" in servers and not args.no_shadow_check:
        servers.append("shadowed")  # measured only in the shadow-cost comparison
    if "service" in servers and not args.no_monitor_check:
        servers.append("unmonitored")  # measured only in the monitor on/off comparison
    if args.monitor_only:
        servers = ["service", "unmonitored"]
    table_servers = [s for s in servers if s not in ("unbatched", "shadowed", "unmonitored")]
    workers = int(os.environ.get("DLQR_WORKERS") or 2)
    for name in MODELS:
        if repository.latest_dir(args.artifacts / name) is None:
            sys.exit(f"bench: no bundle at {args.artifacts / name} (train first, or set DLQR_ARTIFACTS_DIR)")

    hey = ensure_hey()
    # as `make serve` does: workers read up-to-date bytecode even under PYTHONDONTWRITEBYTECODE
    subprocess.run([sys.executable, "-m", "compileall", "-q", "dlqr", "serving"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="dlqr-bench-"))
    files = bodies(args.artifacts, work)
    if "shadowed" in servers:
        shadow_setup = shadow_artifacts(args.artifacts, work / "shadow-artifacts", args.shadow_model)
        if shadow_setup is None:
            log(f"shadow check skipped: {args.shadow_model} needs two versions")
            servers.remove("shadowed")
    results: dict = {
        "machine": machine(),
        "duration_s": duration,
        "rounds": rounds,
        "workers": workers,
        "worker_class": os.environ.get("DLQR_WORKER_CLASS") or "gevent",
        "runs": [],
        "balance": [],
        "servers": {},
    }
    results["loadavg_start"] = os.getloadavg()
    running: dict[str, Server] = {}

    def measure(kind: str, name: str, workload: str, conc: int, seconds: float) -> dict:
        srv = running[kind]
        url = f"http://127.0.0.1:{srv.port}/predict/{name}"
        return run_hey(
            hey, url, files[(name, workload)], conc, seconds, workers=srv.worker_pids(), port=srv.port
        )

    try:
        # Start one at a time (clean start-to-ready figures), then keep all up: every cell is
        # measured on every server back to back, so machine noise hits them alike.
        for kind in servers:
            port = free_port()
            art = shadow_setup["artifacts"] if kind == "shadowed" else args.artifacts
            srv = Server(kind, port, art, work, workers)
            log(f"starting {kind} on 127.0.0.1:{port} ...")
            running[kind] = srv
            ready = srv.start()
            info = {
                "ready_s": round(ready, 2),
                "first_ready_s": round(srv.first_ready or ready, 2),
                "rss_mib": srv.rss(),
            }
            results["servers"][kind] = info
            log(f"  ready in {ready:.1f}s; worker RSS {info['rss_mib']} MiB")
        cells = [(name, "single", c, 1) for name in models for c in CONCURRENCY]
        cells += [(name, f"batch{n}", BATCH_CONCURRENCY, n) for name in models for n in BATCHES]
        if args.monitor_only:
            cells, balance_runs = [], 0
        for kind in running:
            for name in models:
                measure(kind, name, "single", 8, args.warmup)
        for i, (name, workload, conc, rows) in enumerate(cells):
            per_server: dict[str, list[dict]] = {k: [] for k in table_servers}
            scrape = "service" in running and workload == "single" and conc == max(CONCURRENCY)
            before = running["service"].metrics_text() if scrape else ""
            for rnd in range(rounds):
                order = table_servers if (i + rnd) % 2 == 0 else list(reversed(table_servers))
                for kind in order:
                    per_server[kind].append(measure(kind, name, workload, conc, duration))
            if scrape:
                stats = batch_stats(before, running["service"].metrics_text(), name)
                if stats:
                    results.setdefault("batches", {})[f"{name} c={conc}"] = stats
            for kind, reps in per_server.items():
                r = median_run(reps)
                results["runs"].append(
                    {"server": kind, "model": name, "workload": workload, "c": conc, "rows": rows, **r}
                )
                cpu = (
                    f"  CPU/req: workers {r['worker_cpu_ms']:.3f} ms, hey {r['hey_cpu_ms']:.3f} ms"
                    if "worker_cpu_ms" in r
                    else ""
                )
                log(
                    f"  {kind:9s} {name:8s} {workload:9s} c={conc:<3d} {r['rps']:9.1f} req/s "
                    f"{r['rps'] * rows:10.1f} rows/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms "
                    f"(rounds: {' '.join(str(round(x['rps'])) for x in reps)}; "
                    f"split {' '.join('/'.join(map(str, x.get('split', []))) for x in reps)}){cpu}"
                )
        # Balance: every hey run opens fresh connections, so each run is a new draw of the split.
        for conc in BALANCE_CONCURRENCY if balance_runs else ():
            for rnd in range(balance_runs):
                for kind in [k for k in ("service", "fastapi") if k in running]:
                    r = measure(kind, "digit", "single", conc, args.balance_duration)
                    results["balance"].append({"server": kind, "c": conc, **r})
                    log(f"  balance {kind:8s} c={conc:<3d} run {rnd + 1}: {r['rps']:8.1f} req/s "
                        f"p99 {r['p99_ms']:.2f} ms split {'/'.join(map(str, r.get('split', [])))}")  # fmt: skip
        # Batching on vs off at c=1: the two services alternate, median of the rounds.
        if "service" in running and "unbatched" in running:
            reps: dict[str, list[dict]] = {"service": [], "unbatched": []}
            for rnd in range(max(rounds, 3)):
                for kind in ("service", "unbatched") if rnd % 2 == 0 else ("unbatched", "service"):
                    reps[kind].append(measure(kind, "digit", "single", 1, duration))
            results["batching_c1"] = {k: median_run(v) for k, v in reps.items()}
        # Shadow at 100 % vs none at c=8: the two services alternate, median of the rounds.
        if "service" in running and "shadowed" in running:
            name = args.shadow_model
            before = running["shadowed"].metrics_text()
            reps = {"service": [], "shadowed": []}
            for rnd in range(max(rounds, 3)):
                for kind in ("service", "shadowed") if rnd % 2 == 0 else ("shadowed", "service"):
                    reps[kind].append(measure(kind, name, "single", 8, duration))
            outcomes = shadow_outcomes(before, running["shadowed"].metrics_text())
            results["shadow_c8"] = {
                "model": name, "stable": shadow_setup["stable"], "shadow": shadow_setup["shadow"],
                **{k: median_run(v) for k, v in reps.items()}, "outcomes": outcomes,
            }  # fmt: skip
        # Drift monitor on vs off at c=8, every model: the two services alternate, median of the rounds.
        if "service" in running and "unmonitored" in running:
            for name in MODELS:
                reps = {"service": [], "unmonitored": []}
                for rnd in range(max(rounds, 3)):
                    for kind in ("service", "unmonitored") if rnd % 2 == 0 else ("unmonitored", "service"):
                        reps[kind].append(measure(kind, name, "single", 8, duration))
                results.setdefault("monitor_c8", {})[name] = {k: median_run(v) for k, v in reps.items()}
        for kind, srv in running.items():
            results["servers"][kind]["rss_after_mib"] = srv.rss()
    finally:
        for srv in running.values():
            srv.stop()
    results["loadavg_end"] = os.getloadavg()
    if args.install_size:
        results["install"] = install_size(work)
    shutil.rmtree(work, ignore_errors=True)
    print(render(results, models, table_servers))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def shadow_artifacts(src: Path, dest: Path, model: str) -> dict | None:
    """A copy of ``src`` whose ``model`` routing keeps its stable and adds another version as a
    shadow at 100 %; None when the model has only one version."""
    from dlqr import routing as R

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"))
    mdir = dest / model
    versions = [c.version for c in repository.scan(mdir) if not c.flat]
    current = R.read(mdir)
    stable = current.stable if current is not None else (versions[0] if versions else None)
    others = [v for v in versions if v != stable]
    if stable is None or not others:
        return None
    R.write(mdir, R.Routing(stable=stable, shadow=R.Split(version=others[0], percent=100)))
    return {"artifacts": dest, "stable": stable, "shadow": others[0]}


def shadow_outcomes(before: str, after: str) -> dict[str, float]:
    """``dlqr_shadow_requests_total`` by outcome, between two scrapes (all workers, all models)."""

    def totals(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for outcome, value in re.findall(r'^dlqr_shadow_requests_total\{[^}]*outcome="(\w+)"[^}]*\} ([\d.e+]+)$',
                                         text, re.M):  # fmt: skip
            out[outcome] = out.get(outcome, 0.0) + float(value)
        return out

    a, b = totals(after), totals(before)
    return {k: v - b.get(k, 0.0) for k, v in a.items()}


def shadow_lines(results: dict) -> list[str]:
    """The shadow-cost line: p50 at c=8 with a shadow at 100 % vs none, and what the shadow did."""
    sh = results.get("shadow_c8")
    if not sh:
        return []
    base, shadowed = sh["service"], sh["shadowed"]
    cost = shadowed["p50_ms"] / base["p50_ms"] - 1
    done = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(sh["outcomes"].items())) or "none recorded"
    return [
        "",
        f"Shadow cost ({sh['model']} single, c=8; stable {sh['stable']}, shadow {sh['shadow']} at 100 %): "
        f"p50 {shadowed['p50_ms']:.2f} ms vs {base['p50_ms']:.2f} ms without ({cost:+.1%}, goal <= "
        f"{GOAL_SHADOW_P50:.0%}: {_verdict(cost <= GOAL_SHADOW_P50)}); p99 {shadowed['p99_ms']:.2f} vs "
        f"{base['p99_ms']:.2f} ms; {shadowed['rps']:,.0f} vs {base['rps']:,.0f} req/s; shadow requests: {done}",
    ]


def monitor_lines(results: dict) -> list[str]:
    """Drift monitor cost: worker CPU per request (and req/s) at c=8 with the monitor on vs off."""
    mon = results.get("monitor_c8")
    if not mon:
        return []
    out = ["", f"Drift monitor cost (single rows, c=8; goal: at most {GOAL_MONITOR_CPU:.0%} more worker CPU "
           "per request):"]  # fmt: skip
    for name, r in mon.items():
        on, off = r["service"], r["unmonitored"]
        if "worker_cpu_ms" in on and "worker_cpu_ms" in off:
            cost = on["worker_cpu_ms"] / off["worker_cpu_ms"] - 1
            cpu = (f"worker CPU {on['worker_cpu_ms']:.3f} vs {off['worker_cpu_ms']:.3f} ms/request "
                   f"({cost:+.1%}: {_verdict(cost <= GOAL_MONITOR_CPU)})")  # fmt: skip
        else:
            cpu = "worker CPU not measured"
        out.append(f"- {name}: {cpu}; {on['rps']:,.0f} vs {off['rps']:,.0f} req/s; "
                   f"p50 {on['p50_ms']:.2f} vs {off['p50_ms']:.2f} ms")  # fmt: skip
    return out


def dir_mb(path: Path) -> float:
    """Apparent size of a directory tree in MB (10^6 bytes), links not followed."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 1e6


def install_size(work: Path) -> dict:
    """Build the serving environment exactly as the image does and measure it."""
    venv = work / "serve-venv"
    log("building a serving-only venv with deploy/docker/install-serve.sh ...")
    t0 = time.monotonic()
    out = subprocess.run(
        ["sh", "deploy/docker/install-serve.sh", str(venv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"install-serve.sh failed:\n{out.stderr[-3000:]}")
    site = next(venv.glob("lib/python*/site-packages"))
    has = {m: (site / m).is_dir() for m in ("tensorflow", "keras", "onnxruntime")}
    return {"seconds": round(time.monotonic() - t0, 1), "venv_mb": round(dir_mb(venv), 1), "modules": has}


def _find(results, server, model, workload, c):
    for r in results["runs"]:
        if (r["server"], r["model"], r["workload"], r["c"]) == (server, model, workload, c):
            return r
    return None


def render(results: dict, models, servers) -> str:
    m = results["machine"]
    refs = [s for s in ("fastapi", "floor", "naive") if s in servers and "service" in servers]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB RAM; {m['os']}",
        f"Python {m['python']}, NumPy {m['numpy']}, ONNX Runtime {m['onnxruntime']} (service); "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']} (naive reference only), "
        f"Flask {m['flask']}, Gunicorn {m['gunicorn']} ({results['workers']} {results.get('worker_class', 'sync')} workers); load generator hey, "
        f"median of {results.get('rounds', 1)} x {results['duration_s']:g} s per cell and server; load average at start/end "
        f"{results['loadavg_start'][0]:.2f}/{results['loadavg_end'][0]:.2f}",
        "",
        "| model | workload | c | "
        + " | ".join(f"{s} req/s" for s in servers)
        + " | service p50 ms | service p99 ms"
        + ("".join(f" | {r} p99 ms" for r in refs if r == "fastapi"))
        + "".join(f" | service/{r}" for r in refs)
        + " |",
        "|" + "---|" * (3 + len(servers) + 2 + ("fastapi" in refs) + len(refs)),
    ]
    for model in models:
        for workload, cs in [("single", CONCURRENCY)] + [
            (f"batch{n}", (BATCH_CONCURRENCY,)) for n in BATCHES
        ]:
            for c in cs:
                row = {s: _find(results, s, model, workload, c) for s in servers}
                n = 1 if workload == "single" else int(workload[5:])
                unit = "" if workload == "single" else f" ({n} rows)"
                cells = []
                for s in servers:
                    r = row[s]
                    if r is None:
                        cells.append("-")
                    elif workload == "single":
                        cells.append(fmt(r["rps"]))
                    else:
                        cells.append(f"{fmt(r['rps'])} = {fmt(r['rps'] * n)} rows/s")
                svc = row.get("service")
                line = (
                    f"| {model} | {'single' if workload == 'single' else 'batch'}{unit} | {c} | "
                    + " | ".join(cells)
                )
                line += (
                    f" | {fmt(svc['p50_ms'], 2) if svc else '-'} | {fmt(svc['p99_ms'], 2) if svc else '-'}"
                )
                if "fastapi" in refs:
                    line += f" | {fmt(row['fastapi']['p99_ms'], 2) if row['fastapi'] else '-'}"
                for ref in refs:
                    if not (svc and row[ref]):
                        line += " | -"
                    elif ref == "floor":
                        line += f" | {svc['rps'] / row[ref]['rps']:.0%}"
                    elif ref == "naive":
                        line += f" | {svc['rps'] / row[ref]['rps']:.0f}x"
                    else:
                        line += f" | {svc['rps'] / row[ref]['rps']:.2f}x"
                lines.append(line + " |")
    lines.append("")
    for s, info in results["servers"].items():
        lines.append(
            f"- {s}: ready {info['ready_s']} s after start (first worker {info['first_ready_s']} s); "
            f"RSS per worker {info['rss_mib']} MiB at ready, {info.get('rss_after_mib')} MiB after the load"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def by_cpu(svc: dict, floor: dict) -> float | None:
        """service/floor from CPU per request (workers + hey) rather than from req/s: with every
        core busy the rate is about cores / that CPU, and a disturbed round skews it far less."""
        if not all(k in r for r in (svc, floor) for k in ("worker_cpu_ms", "hey_cpu_ms")):
            return None
        return (floor["worker_cpu_ms"] + floor["hey_cpu_ms"]) / (svc["worker_cpu_ms"] + svc["hey_cpu_ms"])

    def ratio_goal(label: str, unit: str, svc: dict, floor: dict, goal: float) -> list[str]:
        """The req/s ratio's line and, with CPU figures, where it comes from; "met" only when both
        estimates reach the goal (a single disturbed floor round can lift the req/s one)."""
        f, c = svc["rps"] / floor["rps"], by_cpu(svc, floor)
        ok = f >= goal and (c is None or c >= goal)
        lines = [f"{label}: {f:.0%} of floor {unit}" + ("" if c is None else f", {c:.0%} by CPU per request")
                 + f" (goal >= {goal:.0%}: {verdict(ok)})"]  # fmt: skip
        if c is not None:
            allowed = (floor["worker_cpu_ms"] + floor["hey_cpu_ms"]) / goal - svc["hey_cpu_ms"]
            lines.append(f"{label}: worker CPU per request service {svc['worker_cpu_ms']:.2f} ms, floor "
                         f"{floor['worker_cpu_ms']:.2f} ms (hey {svc['hey_cpu_ms']:.2f} / {floor['hey_cpu_ms']:.2f} ms); "
                         f"at {goal:.0%} the service's workers could use about {allowed:.2f} ms")  # fmt: skip
        return lines

    goals = []
    svc = _find(results, "service", "digit", "single", 8)
    floor = _find(results, "floor", "digit", "single", 8)
    naive = _find(results, "naive", "digit", "single", 8)
    if svc and floor:
        goals += ratio_goal("digit single c=8", "req/s", svc, floor, GOAL_FLOOR_FRACTION)
        goals.append(f"digit single c=8 p99 {svc['p99_ms']:.2f} ms (goal <= {GOAL_P99_MS:.0f} ms: "
                     f"{verdict(svc['p99_ms'] <= GOAL_P99_MS)})")  # fmt: skip
    if svc and naive:
        k = svc["rps"] / naive["rps"]
        goals.append(f"digit single c=8: {k:.0f}x naive (goal >= {GOAL_NAIVE_FACTOR:.0f}x: "
                     f"{verdict(k >= GOAL_NAIVE_FACTOR)})")  # fmt: skip
    bsvc = _find(results, "service", "digit", "batch256", BATCH_CONCURRENCY)
    bfloor = _find(results, "floor", "digit", "batch256", BATCH_CONCURRENCY)
    if bsvc and bfloor:
        goals += ratio_goal("digit 256-row batches c=8", "rows/s", bsvc, bfloor, GOAL_BATCH_FLOOR_FRACTION)
    info = results["servers"].get("service")
    if info:
        worst = max(info["rss_mib"]) if info["rss_mib"] else float("nan")
        goals.append(f"service RSS per worker at ready {worst:.0f} MiB (goal <= {GOAL_RSS_MIB:.0f}: "
                     f"{verdict(worst <= GOAL_RSS_MIB)})")  # fmt: skip
        goals.append(f"service start to ready {info['ready_s']} s (goal <= {GOAL_READY_S}: "
                     f"{verdict(info['ready_s'] <= GOAL_READY_S)})")  # fmt: skip
    inst = results.get("install")
    if inst:
        goals.append(f"serving install (deploy/docker/install-serve.sh venv) {inst['venv_mb']:.0f} MB, "
                     f"tensorflow {'present' if inst['modules']['tensorflow'] else 'absent'}, keras "
                     f"{'present' if inst['modules']['keras'] else 'absent'} (goal <= {GOAL_INSTALL_MB:.0f} MB: "
                     f"{verdict(inst['venv_mb'] <= GOAL_INSTALL_MB)})")  # fmt: skip
    goals += peer_goals(results)
    if goals:
        lines += ["", "Goals:", *(f"- {g}" for g in goals)]
    lines += balance_lines(results)
    lines += shadow_lines(results)
    lines += monitor_lines(results)
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def peer_goals(results: dict) -> list[str]:
    """Goal lines against the FastAPI reference, for the tail, batching and the mean batch."""
    out = []
    for c, goal in GOAL_FASTAPI_RATIO.items():
        svc, ref = (
            _find(results, "service", "digit", "single", c),
            _find(results, "fastapi", "digit", "single", c),
        )
        if svc and ref:
            k = svc["rps"] / ref["rps"]
            out.append(f"digit single c={c}: service/FastAPI {k:.2f}x ({svc['rps']:,.0f} vs {ref['rps']:,.0f} req/s; "
                       f"p50 {svc['p50_ms']:.2f} vs {ref['p50_ms']:.2f} ms) (goal >= {goal:.1f}x: {_verdict(k >= goal)})")  # fmt: skip
            if c > 1:
                ok = svc["p99_ms"] <= ref["p99_ms"]
                out.append(f"digit single c={c}: p99 service {svc['p99_ms']:.2f} ms vs FastAPI {ref['p99_ms']:.2f} ms "
                           f"(goal: no worse: {_verdict(ok)})")  # fmt: skip
    for workload in (f"batch{n}" for n in (1, 16, 256)):
        for kind in ("service", "fastapi"):
            r = _find(results, kind, "digit", workload, BATCH_CONCURRENCY)
            if r and r["p99_ms"] != r["p99_ms"]:  # hey prints no p99 for too few requests
                out.append(f"digit {workload[5:]}-row requests c={BATCH_CONCURRENCY} {kind}: p99 not reported "
                           "(too few requests: raise --duration)")  # fmt: skip
            elif r and r["p50_ms"] > 0:
                k = r["p99_ms"] / r["p50_ms"]
                goal = (
                    f" (goal <= {GOAL_TAIL:.0f}x: {_verdict(k <= GOAL_TAIL)})"
                    if kind == "service"
                    else " (reference)"
                )
                out.append(f"digit {workload[5:]}-row requests c={BATCH_CONCURRENCY} {kind}: p99/p50 {k:.1f}x "
                           f"({r['p99_ms']:.2f} / {r['p50_ms']:.2f} ms){goal}")  # fmt: skip
    on_off = results.get("batching_c1")
    if on_off:
        on, off = on_off["service"], on_off["unbatched"]
        d = on["p50_ms"] / off["p50_ms"] - 1
        out.append(f"digit single c=1 batching on vs off: p50 {on['p50_ms']:.3f} vs {off['p50_ms']:.3f} ms ({d:+.1%}), "
                   f"{on['rps']:,.0f} vs {off['rps']:,.0f} req/s (goal within {GOAL_BATCHING_C1:.0%}: "
                   f"{_verdict(abs(d) <= GOAL_BATCHING_C1 or d < 0)})")  # fmt: skip
    for cell, st in (results.get("batches") or {}).items():
        ok = st["mean_rows"] > GOAL_MEAN_BATCH_ROWS
        wait = f", mean queue wait {st['mean_queue_wait_ms']:.2f} ms" if "mean_queue_wait_ms" in st else ""
        out.append(f"{cell}: mean batch {st['mean_rows']:.1f} rows / {st['mean_requests']:.1f} requests over "
                   f"{st['runs']:.0f} model runs{wait} (goal > {GOAL_MEAN_BATCH_ROWS:.0f} rows: {_verdict(ok)})")  # fmt: skip
    return out


def balance_lines(results: dict) -> list[str]:
    """Per server and concurrency: each run's req/s, p99 and connection split; slowest/fastest."""
    runs = results.get("balance") or []
    if not runs:
        return []
    lines = [
        "",
        "Balance (digit single, fresh connections every run; split = established connections per worker):",
    ]
    for kind in dict.fromkeys(r["server"] for r in runs):
        for c in dict.fromkeys(r["c"] for r in runs):
            mine = [r for r in runs if r["server"] == kind and r["c"] == c]
            if not mine:
                continue
            rps = [r["rps"] for r in mine]
            k = min(rps) / max(rps)
            goal = (
                f" (goal >= {GOAL_BALANCE:.0%}: {_verdict(k >= GOAL_BALANCE)})" if kind == "service" else ""
            )
            runs_txt = "; ".join(f"{r['rps']:,.0f} req/s p99 {r['p99_ms']:.1f} ms split {'/'.join(map(str, r.get('split', []))) or '?'}"
                                 for r in mine)  # fmt: skip
            lines.append(f"- {kind} c={c}: slowest/fastest {k:.0%}{goal}: {runs_txt}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
