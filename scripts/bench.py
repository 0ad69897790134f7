"""`make bench`: load-test the service against a floor and a naive reference server.

Starts Gunicorn exactly as `make serve` does (same config file, same settings,
loopback port), drives it with `hey` (installed from Debian if missing), then
does the same for two reference servers under the same Gunicorn settings:

- floor: Flask parses the same JSON and returns a constant (nothing can be faster here);
- naive: Flask + ``model.predict`` per request, as tutorials do.

Workloads: single-instance requests to each model at concurrency 1, 8 and 32
(req/s, p50, p99), and batches of 1, 32 and 256 instances at concurrency 8
(rows/s). The three servers run side by side (idle ones cost nothing) and each
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
BATCHES = (1, 32, 256)
BATCH_CONCURRENCY = 8
SERVERS = {
    "service": "serving.wsgi:app",
    "floor": "bench_ref:floor_app()",
    "naive": "bench_ref:naive_app()",
}
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


def run_hey(
    hey: str,
    url: str,
    body: Path,
    conc: int,
    duration: float,
    ctype: str = "application/json",
    workers: list[int] | None = None,
) -> dict:
    """One hey run; with ``workers`` (the server's worker pids) also the CPU per answered request
    of the workers and of hey itself, which shows where a ratio comes from on a shared machine."""
    cmd = [hey, "-z", f"{duration}s", "-c", str(conc), "-m", "POST", "-T", ctype, "-D", str(body), url]
    w0, h0 = cpu_seconds(workers or []), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    w1, h1 = cpu_seconds(workers or []), resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_hey(out.stdout)
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

    def start(self) -> float:
        """Start, wait until every worker is ready; returns seconds from start to ready."""
        cmd = [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py"]
        if self.kind != "service":
            cmd += ["--pythonpath", "scripts"]
        cmd.append(SERVERS[self.kind])  # the service: exactly `make serve`'s command line
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
        if self.kind == "service":
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark the service against floor and naive reference servers."
    )
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="measurements per cell and server; the median is shown"
    )
    ap.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of discarded load per model and server"
    )
    ap.add_argument("--quick", action="store_true", help="2 s runs, digit only, for a smoke check")
    ap.add_argument("--servers", default="service,floor,naive", help="comma-separated subset")
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
    models = ("digit",) if args.quick else MODELS
    duration = 2.0 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    workers = int(os.environ.get("DLQR_WORKERS") or 2)
    for name in MODELS:
        if repository.latest_dir(args.artifacts / name) is None:
            sys.exit(f"bench: no bundle at {args.artifacts / name} (train first, or set DLQR_ARTIFACTS_DIR)")

    hey = ensure_hey()
    # as `make serve` does: workers read up-to-date bytecode even under PYTHONDONTWRITEBYTECODE
    subprocess.run([sys.executable, "-m", "compileall", "-q", "dlqr", "serving"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="dlqr-bench-"))
    files = bodies(args.artifacts, work)
    results: dict = {
        "machine": machine(),
        "duration_s": duration,
        "rounds": rounds,
        "workers": workers,
        "worker_class": os.environ.get("DLQR_WORKER_CLASS") or "gevent",
        "runs": [],
        "servers": {},
    }
    results["loadavg_start"] = os.getloadavg()
    running: dict[str, Server] = {}
    try:
        # Start one at a time (clean start-to-ready figures), then keep all up: every cell is
        # measured on the three servers back to back, so machine noise hits them alike.
        for kind in servers:
            port = free_port()
            srv = Server(kind, port, args.artifacts, work, workers)
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
        for srv in running.values():
            for name in models:
                run_hey(
                    hey,
                    f"http://127.0.0.1:{srv.port}/predict/{name}",
                    files[(name, "single")],
                    8,
                    args.warmup,
                )
        for i, (name, workload, conc, rows) in enumerate(cells):
            per_server: dict[str, list[dict]] = {k: [] for k in running}
            for rnd in range(rounds):
                order = list(running) if (i + rnd) % 2 == 0 else list(reversed(running))
                for kind in order:
                    srv = running[kind]
                    url = f"http://127.0.0.1:{srv.port}/predict/{name}"
                    per_server[kind].append(
                        run_hey(hey, url, files[(name, workload)], conc, duration, workers=srv.worker_pids())
                    )
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
                    f"  {kind:8s} {name:8s} {workload:9s} c={conc:<3d} {r['rps']:9.1f} req/s "
                    f"{r['rps'] * rows:10.1f} rows/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms "
                    f"(rounds: {' '.join(str(round(x['rps'])) for x in reps)}){cpu}"
                )
        for kind, srv in running.items():
            results["servers"][kind]["rss_after_mib"] = srv.rss()
    finally:
        for srv in running.values():
            srv.stop()
    results["loadavg_end"] = os.getloadavg()
    if args.install_size:
        results["install"] = install_size(work)
    shutil.rmtree(work, ignore_errors=True)
    print(render(results, models, servers))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


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
        + (" | service/floor | service/naive" if {"service", "floor", "naive"} <= set(servers) else "")
        + " |",
        "|" + "---|" * (3 + len(servers) + 2 + (2 if {"service", "floor", "naive"} <= set(servers) else 0)),
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
                if {"service", "floor", "naive"} <= set(servers) and svc and row["floor"] and row["naive"]:
                    line += (
                        f" | {svc['rps'] / row['floor']['rps']:.0%} | {svc['rps'] / row['naive']['rps']:.0f}x"
                    )
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
    if goals:
        lines += ["", "Goals:", *(f"- {g}" for g in goals)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
