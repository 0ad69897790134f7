"""`make chaos`: reliability scenarios against a real Gunicorn server on loopback.

Each scenario starts (or reuses) a server exactly as ``make serve`` does, drives
it with bounded, loopback-only traffic while doing something hostile, prints one
line of figures and checks them. Normal traffic (probes of ``/healthz`` and
``/predict/wine``, or a closed-loop load at a fixed concurrency) must never see
a lost answer or a 5xx; the hostile traffic must get the documented answer.

Scenarios (``--scenario NAME``, repeatable; default all):

- ``slow-headers`` / ``slow-body``: N connections trickle request headers (or,
  after full headers with Content-Length: 1000, the body) one byte every 2 s;
- ``slow-mixed``: N of each at once, every dropped one replaced at once;
- ``cpu-bomb``: one request with as many base64 RGBA 4096x4096 PNGs as fit the body
  limit, then a batch of 256 grey 4096x4096 PNGs;
- ``chunked``: bad chunk size, bad chunk extension, missing terminator, bad trailer;
- ``encoding``: gzip Content-Encoding, a UTF-8 BOM, charset=utf-16;
- ``parser-errors``: what Gunicorn's own parser refuses (400, 414, 431);
- ``pipeline``: two requests in one write;
- ``methods``: a flood of invented HTTP methods (metric series, /metrics size, scrape time);
- ``overload``: more concurrent expensive requests than the in-flight bound;
- ``kill9`` / ``hup`` / ``sigterm``: the signal under closed-loop load at c=8;
- ``worker-timeout``: the CPU bomb with the pixel budget lifted, DLQR_TIMEOUT=20, deadline 19 s;
- ``control-socket``: two servers side by side, the second one stopped.

``--repo DIR`` serves another checkout (e.g. an older release) with the same
command, which is how the before/after figures in docs/hardening.md were made. ``--quick`` shortens
every scenario (the pytest suite in tests/reliability runs them that way).

    .venv/bin/python scripts/chaos.py [--quick] [--scenario NAME ...] [--repo DIR] [--json out.json]

Exit status 1 when any check fails. Only 127.0.0.1 is used; every loop is bounded
in count and time. Standard library only (Pillow from the serving venv for the
CPU-bomb images).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 240.0
_RUNNING: list[Server] = []  # stopped on exit, whatever happens


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------- server


class Server:
    """Gunicorn started like `make serve` from ``repo`` on a free loopback port."""

    def __init__(self, repo: Path, workdir: Path, env: dict[str, str] | None = None, name: str = "srv"):
        self.repo = repo
        self.port = free_port()
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.env = {
            **os.environ,
            "DLQR_BIND": f"127.0.0.1:{self.port}",
            "DLQR_LOG_LEVEL": "INFO",
            "DLQR_ARTIFACTS_DIR": str(repo / "artifacts"),
            **(env or {}),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = float("nan")

    def start(self) -> Server:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"],
            cwd=self.repo,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _RUNNING.append(self)
        self.wait_ready(t0)
        return self

    def wait_ready(self, t0: float | None = None) -> None:
        t0 = time.monotonic() if t0 is None else t0
        while time.monotonic() - t0 < START_TIMEOUT:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if request(self.port, "GET", "/readyz", timeout=2).status == 200:
                self.ready_seconds = time.monotonic() - t0
                return
            time.sleep(0.2)
        raise RuntimeError(f"not ready after {START_TIMEOUT:.0f}s:\n{self.log()[-3000:]}")

    def workers(self) -> list[int]:
        """Worker pids (children of the master)."""
        pids: list[int] = []
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        for task in task_dir.iterdir() if task_dir.is_dir() else []:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers have used so far: robust to a busy machine."""
        total = 0.0
        for pid in self.workers():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int | None, float]:
        """Send ``sig``; return (exit code, seconds until exit)."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc, time.monotonic() - t0


# --------------------------------------------------------------------- http


@dataclass
class Reply:
    status: int = 0  # 0: no HTTP answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    error: str = ""  # refused | lost | timeout | connect-error: ...

    @property
    def problem(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/problem+json")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One request on a new connection; never raises."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            return Reply(error="refused", seconds=time.monotonic() - t0)
        except OSError as exc:
            return Reply(error=f"connect-error: {exc}", seconds=time.monotonic() - t0)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError:
            return Reply(error="timeout", seconds=time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as exc:
            return Reply(error=f"lost: {type(exc).__name__}", seconds=time.monotonic() - t0)
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return Reply(resp.status, hdrs, data, time.monotonic() - t0)
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, wait: float = 0.0) -> bytes:
    """Send raw bytes, read until the server closes or ``timeout``; return what came back."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if wait:
            time.sleep(wait)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def status_lines(data: bytes) -> list[int]:
    """Status codes of the responses in ``data`` (a response may follow a body without a newline)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(port: int) -> str:
    return request(port, "GET", "/metrics", timeout=30).body.decode()


def example(name: str) -> bytes:
    return (ROOT / "examples" / name).read_bytes()


JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------ normal traffic


class Prober(threading.Thread):
    """Every ``interval`` s: GET /healthz and POST /predict/wine on new connections (2 s timeout)."""

    def __init__(self, port: int, interval: float = 0.25, timeout: float = 2.0):
        super().__init__(daemon=True)
        self.port, self.interval, self.timeout = port, interval, timeout
        self.results: list[tuple[float, str, Reply]] = []
        self._halt = threading.Event()
        self.wine = example("wine.json")

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.monotonic()
            self.results.append((t, "healthz", request(self.port, "GET", "/healthz", timeout=self.timeout)))
            self.results.append(
                (
                    t,
                    "wine",
                    request(self.port, "POST", "/predict/wine", self.wine, JSON, timeout=self.timeout),
                )
            )
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def summary(self) -> dict:
        failed = [(t, r) for t, _, r in self.results if not 200 <= r.status < 300]
        # Longest outage of either endpoint: from a failure to its next success.
        outage = 0.0
        for kind in ("healthz", "wine"):
            start = None
            for t, k, r in self.results:
                if k != kind:
                    continue
                ok = 200 <= r.status < 300
                if not ok and start is None:
                    start = t
                elif ok and start is not None:
                    outage, start = max(outage, t - start), None
            if start is not None:
                outage = max(outage, self.results[-1][0] + self.timeout - start)
        lat = [r.seconds for _, _, r in self.results if 200 <= r.status < 300]
        return {
            "probes": len(self.results),
            "probes_failed": len(failed),
            "probe_outage_s": round(outage, 1),
            "probe_max_ms": round(max(lat) * 1000, 1) if lat else None,
            "probe_errors": dict(Counter(r.error or str(r.status) for _, r in failed)),
        }


class Load:
    """Closed-loop load: ``conc`` threads each sending ``make()`` requests on a keep-alive connection.

    Like hey or a browser: the connection is reused until the server says
    ``Connection: close`` (or closes it). Outcomes: ``ok`` (< 500), ``5xx``,
    ``refused`` (connect refused: the server no longer listens, nothing was
    accepted), ``lost`` (the request was written on an open connection and no
    answer came back: a reset or EOF), ``timeout``.
    """

    def __init__(self, port: int, conc: int, make: Callable[[], tuple[str, str, bytes, dict]], timeout=10.0):
        self.port, self.conc, self.make, self.timeout = port, conc, make, timeout
        self.outcomes: list[tuple[float, str, int, float]] = []  # (t, kind, status, seconds)
        self.statuses: Counter = Counter()
        self.sample_headers: dict[int, dict[str, str]] = {}  # the first answer's headers, per status
        self.lost: list[tuple[float, str, str]] = []  # (t, connection, error) of each lost request
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(conc)]

    def start(self) -> Load:
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def _record(self, kind: str, status: int, t0: float) -> None:
        with self._lock:
            self.outcomes.append((t0, kind, status, time.monotonic() - t0))
            self.statuses[status] += 1

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._halt.is_set():
            method, path, body, headers = self.make()
            t0 = time.monotonic()
            fresh = conn is None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                try:
                    conn.connect()
                except OSError:
                    conn.close()
                    conn = None
                    self._record("refused", 0, t0)
                    self._halt.wait(0.05)  # refused connects are instant: do not spin
                    continue
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except TimeoutError:
                self._record("timeout", 0, t0)
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException) as exc:
                self._record("lost", 0, t0)
                self.lost.append((t0, "new connection" if fresh else "reused connection", type(exc).__name__))
                conn.close()
                conn = None
                continue
            self._record("5xx" if resp.status >= 500 else "ok", resp.status, t0)
            self.sample_headers.setdefault(resp.status, {k.lower(): v for k, v in resp.getheaders()})
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        self.seconds = time.monotonic() - self.t0

    def summary(self) -> dict:
        kinds = Counter(k for _, k, _, _ in self.outcomes)
        lat = sorted(s for _, k, _, s in self.outcomes if k == "ok")
        return {
            "requests": len(self.outcomes),
            "ok": kinds["ok"],
            "5xx": kinds["5xx"],
            "lost": kinds["lost"],
            "timeout": kinds["timeout"],
            "refused": kinds["refused"],
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1) if lat else None,
            "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        }


# ------------------------------------------------------------- slow clients


class SlowClients(threading.Thread):
    """``n`` connections that trickle their request one byte every ``interval`` s.

    mode ``headers``: the whole request is trickled; ``body``: complete headers
    with Content-Length: 1000 are sent at once, then the body is trickled.
    Records, per connection, when the server closed it and what it answered.
    With ``reconnect``, every connection the server drops is replaced at once,
    so ``n`` stay open for the whole run (a slowloris that does not give up).
    """

    def __init__(self, port: int, n: int, mode: str, interval: float = 2.0, reconnect: bool = False):
        super().__init__(daemon=True)
        self.port, self.n, self.mode, self.interval, self.reconnect = port, n, mode, interval, reconnect
        self._halt = threading.Event()
        self.closed_after: list[float] = []
        self.answers: Counter = Counter()
        self.opened = 0
        self.conns: dict = {}

    def _open(self) -> None:
        head = b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if self.mode == "headers":
                pending = head + b"Content-Length: 2\r\n\r\n{}"
            else:
                s.sendall(head + b"Content-Length: 1000\r\n\r\n")
                pending = b"{" + b" " * 998 + b"}"
        except OSError:
            return
        s.setblocking(False)
        self.conns[s] = {"pending": pending, "t0": time.monotonic(), "data": b""}
        self.opened += 1

    def run(self) -> None:
        conns = self.conns
        for _ in range(self.n):
            self._open()
        next_send = time.monotonic()
        while conns and not self._halt.is_set():
            now = time.monotonic()
            if now >= next_send:
                for s, st in list(conns.items()):
                    if st["pending"]:
                        try:
                            s.send(st["pending"][:1])
                            st["pending"] = st["pending"][1:]
                        except OSError:
                            self._closed(conns, s)
                next_send = now + self.interval
            readable, _, _ = select.select(list(conns), [], [], max(0.01, min(0.2, next_send - now)))
            for s in readable:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    conns[s]["data"] += chunk
                else:
                    self._closed(conns, s)
            while self.reconnect and len(conns) < self.n and not self._halt.is_set():
                before = len(conns)
                self._open()
                if len(conns) == before:
                    break
        for s, st in list(conns.items()):
            self.answers[self._answer(st["data"]) or "still open"] += 1
            s.close()

    def _answer(self, data: bytes) -> str:
        if not data:
            return ""
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        ctype = (
            "problem+json" if b"application/problem+json" in data else "html" if b"text/html" in data else ""
        )
        return f"{first[9:12]} {ctype}".strip()

    def _closed(self, conns: dict, s: socket.socket) -> None:
        st = conns.pop(s)
        self.closed_after.append(time.monotonic() - st["t0"])
        self.answers[self._answer(st["data"]) or "closed, no answer"] += 1
        s.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def summary(self) -> dict:
        c = sorted(self.closed_after)
        return {
            "slow_opened": self.opened,
            "slow_dropped": len(c),
            "slow_dropped_after_s": (round(statistics.median(c), 1), round(c[-1], 1)) if c else None,
            "slow_answers": dict(self.answers),
        }


# ---------------------------------------------------------------- scenarios


@dataclass
class Result:
    name: str
    figures: dict
    failures: list[str]

    def line(self) -> str:
        mark = "PASS" if not self.failures else "FAIL"
        figs = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in self.figures.items())
        why = "" if not self.failures else "  <- " + "; ".join(self.failures)
        return f"{mark} {self.name}: {figs}{why}"


def check_probes(fig: dict, failures: list[str]) -> None:
    if fig["probes_failed"]:
        failures.append(f"{fig['probes_failed']} normal probes failed (outage {fig['probe_outage_s']} s)")


def scenario_slow(srv: Server, mode: str, n: int, hold: float, read_timeout: float | None) -> Result:
    probe = Prober(srv.port)
    probe.start()
    time.sleep(1)
    slow = SlowClients(srv.port, n, mode)
    slow.start()
    time.sleep(hold)
    slow.stop()
    time.sleep(3)
    probe.stop()
    fig = {"n": n, "hold_s": hold, **probe.summary(), **slow.summary()}
    failures: list[str] = []
    check_probes(fig, failures)
    if read_timeout is not None:
        # Headers (or body) must be cut within the read timeout (plus the 2 s trickle step).
        limit = 2 * read_timeout + 3
        if fig["slow_dropped"] < fig["slow_opened"]:
            failures.append(
                f"only {fig['slow_dropped']}/{fig['slow_opened']} slow clients dropped in {hold}s"
            )
        elif fig["slow_dropped_after_s"][1] > limit:
            failures.append(f"a slow client held on for {fig['slow_dropped_after_s'][1]} s (> {limit})")
        bad = {
            k: v
            for k, v in fig["slow_answers"].items()
            if not (k.startswith("408 problem") or "no answer" in k)
        }
        if bad:
            failures.append(f"slow clients got {bad}")
    return Result(f"slow-{mode}", fig, failures)


def scenario_slow_mixed(srv: Server, n: int, hold: float, read_timeout: float | None = None) -> Result:
    """n slow-header and n slow-body connections kept open (reconnecting) while probes run."""
    probe = Prober(srv.port)
    probe.start()
    time.sleep(1)
    slow = [SlowClients(srv.port, n, mode, reconnect=True) for mode in ("headers", "body")]
    for s in slow:
        s.start()
    time.sleep(hold)
    open_at_end = [len(s.conns) for s in slow]
    for s in slow:
        s.stop()
    time.sleep(3)
    probe.stop()
    answers: Counter = Counter()
    for s in slow:
        answers.update(s.answers)
    fig = {
        "n": n,
        "hold_s": hold,
        **probe.summary(),
        "slow_connections": sum(s.opened for s in slow),
        "slow_open_at_end": open_at_end,
        "slow_answers": dict(answers),
    }
    dropped = sorted(t for s in slow for t in s.closed_after)
    fig["slow_dropped_after_s"] = (
        (round(statistics.median(dropped), 1), round(dropped[-1], 1)) if dropped else None
    )
    failures: list[str] = []
    check_probes(fig, failures)
    if read_timeout is not None:
        bad = {k: v for k, v in answers.items() if not (k.startswith("408 problem") or k == "still open")}
        if bad:
            failures.append(f"slow clients got {bad}")
        if not dropped or dropped[-1] > 2 * read_timeout + 3:
            failures.append(
                f"slow clients not dropped within {2 * read_timeout + 3} s: {fig['slow_dropped_after_s']}"
            )
    return Result("slow-mixed", fig, failures)


def bomb_png(mode: str, size: int = 4096) -> bytes:
    """A highly compressible size x size PNG holding a '1' (cheap to send, expensive to decode)."""
    from PIL import Image, ImageDraw

    bg = (255, 255, 255, 255) if mode == "RGBA" else 255
    ink = (0, 0, 0, 255) if mode == "RGBA" else 0
    img = Image.new(mode, (size, size), bg)
    ImageDraw.Draw(img).rectangle(
        [size // 2 - size // 16, size // 8, size // 2 + size // 16, size * 7 // 8], fill=ink
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def bomb_body(mode: str, count: int, limit: int) -> tuple[bytes, int]:
    """A digit batch of up to ``count`` copies of the bomb PNG that fits in ``limit`` bytes."""
    item = json.dumps({"image": base64.b64encode(bomb_png(mode)).decode()})
    fit = max(1, min(count, (limit - 64) // (len(item) + 1)))
    return ('{"instances":[' + ",".join([item] * fit) + "]}").encode(), fit


def scenario_cpu_bomb(srv: Server, quick: bool, limit: int) -> Result:
    failures: list[str] = []
    fig: dict = {}
    before = scrape(srv.port)
    rgba, n_rgba = bomb_body("RGBA", 80, limit)
    grey, n_grey = bomb_body("L", 256, limit)
    cases = [("rgba", rgba, n_rgba, 1), ("grey", grey, n_grey, 1)]
    if not quick:
        cases.append(("rgba_x2", rgba, n_rgba, 2))
    answers: list[Reply] = []
    for label, body, n, parallel in cases:
        probe = Prober(srv.port)
        probe.start()
        time.sleep(0.5)
        replies: list[Reply] = []
        cpu0 = srv.cpu_seconds()
        threads = [
            threading.Thread(
                target=lambda b=body, out=replies: out.append(
                    request(srv.port, "POST", "/predict/digit", b, JSON, timeout=120)
                )
            )
            for _ in range(parallel)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(130)
        cpu = srv.cpu_seconds() - cpu0  # both workers; the probes' share is a few ms
        time.sleep(1)
        probe.stop()
        answers += replies
        p = probe.summary()
        fig[label] = {
            "images": n,
            "mb": round(len(body) / 1e6, 1),
            "answers": [
                f"{r.status or r.error} {r.headers.get('content-type', '')}".strip() for r in replies
            ],
            "seconds": round(max(r.seconds for r in replies), 2),
            "server_cpu_s": round(cpu, 2),
            "probes_failed": p["probes_failed"],
            "probe_outage_s": p["probe_outage_s"],
        }
        check_probes(p, failures)
        for r in replies:
            # 413/422 from the pixel budget; 504 only when a busy machine stretches the first
            # image's decode past the request deadline.
            if r.status not in (413, 422, 504) or not r.problem:
                failures.append(f"{label}: answered {r.status or r.error} {r.headers.get('content-type')}")
        # About one second of CPU per request at most (DLQR_MAX_REQUEST_PIXELS); CPU time, not
        # wall time, so that a busy machine does not count against the server.
        if cpu > 2.0 * parallel:
            failures.append(f"{label}: cost {cpu:.1f} s of server CPU")
    time.sleep(0.5)
    after = scrape(srv.port)
    counted = sum(
        metric_sum(after, "dlqr_http_requests_total", endpoint="/predict/digit", status=str(s))
        - metric_sum(before, "dlqr_http_requests_total", endpoint="/predict/digit", status=str(s))
        for s in {r.status for r in answers if r.status}
    )
    fig["counted_in_http_requests_total"] = f"{int(counted)}/{len(answers)}"
    if counted != len(answers):
        failures.append(f"only {counted} of {len(answers)} answers in dlqr_http_requests_total")
    return Result("cpu-bomb", fig, failures)


CHUNKED_CASES = {
    "bad_size": b"zz\r\nabc\r\n0\r\n\r\n",
    "bad_extension": b"3;\x01=\r\nabc\r\n0\r\n\r\n",
    "missing_terminator": b"3\r\nabcXY0\r\n\r\n",
    "bad_trailer": b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
}


def scenario_chunked(srv: Server) -> Result:
    failures: list[str] = []
    before_tb = srv.log().count("Traceback")
    before = scrape(srv.port)
    head = (
        b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    fig: dict = {}
    for name, body in CHUNKED_CASES.items():
        out = raw_exchange(srv.port, head + body, timeout=5)
        st = status_lines(out)
        ctype = (
            "problem+json" if b"application/problem+json" in out else "html" if b"text/html" in out else "-"
        )
        fig[name] = f"{st[0] if st else 'none'} {ctype}"
        if st != [400] or ctype != "problem+json":
            failures.append(f"{name}: {fig[name]}")
    time.sleep(0.5)
    after = scrape(srv.port)
    fig["tracebacks_logged"] = srv.log().count("Traceback") - before_tb
    c400 = metric_sum(after, "dlqr_http_requests_total", status="400") - metric_sum(
        before, "dlqr_http_requests_total", status="400"
    )
    c500 = metric_sum(after, "dlqr_http_requests_total", status="500") - metric_sum(
        before, "dlqr_http_requests_total", status="500"
    )
    fig["counted"] = {"400": int(c400), "500": int(c500)}
    if fig["tracebacks_logged"]:
        failures.append(f"{fig['tracebacks_logged']} tracebacks logged")
    if c400 != len(CHUNKED_CASES):
        failures.append(f"{int(c400)} of {len(CHUNKED_CASES)} 400s counted")
    return Result("chunked", fig, failures)


def scenario_encoding(srv: Server) -> Result:
    wine = example("wine.json")
    cases = {
        "gzip": (gzip.compress(wine), {**JSON, "Content-Encoding": "gzip"}),
        "utf8_bom": (b"\xef\xbb\xbf" + wine, JSON),
        "charset_utf16": (
            wine.decode().encode("utf-16"),
            {"Content-Type": "application/json; charset=utf-16"},
        ),
    }
    fig, failures = {}, []
    for name, (body, headers) in cases.items():
        r = request(srv.port, "POST", "/predict/wine", body, headers)
        slug = json.loads(r.body).get("type", "") if r.problem else r.headers.get("content-type", "")
        fig[name] = f"{r.status} {slug}"
        if r.status != 415 or not r.problem:
            failures.append(f"{name}: {fig[name]}")
    ok = request(srv.port, "POST", "/predict/wine", wine, {"Content-Type": "application/json; charset=UTF-8"})
    fig["charset_utf8"] = ok.status
    if ok.status != 200:
        failures.append(f"charset=UTF-8 refused: {ok.status}")
    return Result("encoding", fig, failures)


def scenario_parser_errors(srv: Server) -> Result:
    cases = {
        "bad_request_line": (b"GARBAGE\r\n\r\n", 400),
        "uri_too_long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        "too_many_headers": (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(120))
            + b"\r\n",
            431,
        ),
        "header_too_large": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        "bad_header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    }
    before = scrape(srv.port)
    fig, failures = {}, []
    for name, (data, want) in cases.items():
        out = raw_exchange(srv.port, data, timeout=5)
        st = status_lines(out)
        ctype = (
            "problem+json" if b"application/problem+json" in out else "html" if b"text/html" in out else "-"
        )
        fig[name] = f"{st[0] if st else 'none'} {ctype}"
        if st[:1] != [want] or ctype != "problem+json":
            failures.append(f"{name}: {fig[name]} (want {want} problem+json)")
    time.sleep(0.5)
    after = scrape(srv.port)
    counted = sum(
        metric_sum(after, "dlqr_http_requests_total", status=str(s))
        - metric_sum(before, "dlqr_http_requests_total", status=str(s))
        for s in (400, 414, 431)
    )
    fig["counted"] = f"{int(counted)}/{len(cases)}"
    if counted != len(cases):
        failures.append(f"only {int(counted)} of {len(cases)} counted in dlqr_http_requests_total")
    return Result("parser-errors", fig, failures)


def scenario_pipeline(srv: Server) -> Result:
    wine = example("wine.json")
    one = (
        b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(wine),
            wine,
        )
    )
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(srv.port, one + one + last, timeout=5)
    st = status_lines(out)
    fig = {"sent": 3, "answered": st}
    return Result("pipeline", fig, [] if st == [200, 200, 200] else [f"3 pipelined requests, answers {st}"])


def scenario_methods(srv: Server, n: int) -> Result:
    def metrics_figures() -> tuple[int, int, float]:
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            text = scrape(srv.port)
            times.append(time.monotonic() - t0)
        series = sum(1 for line in text.splitlines() if line.startswith("dlqr_http_requests_total{"))
        return series, len(text.encode()), statistics.median(times) * 1000

    s0, b0, ms0 = metrics_figures()
    counter = iter(range(n))
    lock = threading.Lock()
    statuses: Counter = Counter()

    def flood() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = request(srv.port, f"X{i:06d}", "/healthz", timeout=10)
            with lock:
                statuses[r.status or r.error] += 1

    threads = [threading.Thread(target=flood) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    secs = time.monotonic() - t0
    time.sleep(0.5)
    s1, b1, ms1 = metrics_figures()
    fig = {
        "requests": n,
        "seconds": round(secs, 1),
        "answers": {str(k): v for k, v in statuses.items()},
        "series": [s0, s1],
        "metrics_kb": [round(b0 / 1024), round(b1 / 1024)],
        "scrape_ms": [round(ms0, 1), round(ms1, 1)],
    }
    failures = []
    if s1 - s0 > 8:
        failures.append(f"dlqr_http_requests_total grew by {s1 - s0} series")
    if any(str(k).startswith("5") or not str(k).isdigit() for k in statuses):
        failures.append(f"answers {dict(statuses)}")
    return Result("methods", fig, failures)


def scenario_overload(srv: Server, conc: int, seconds: float, inflight: int | None) -> Result:
    body = example("seizure_batch.json")
    load = Load(srv.port, conc, lambda: ("POST", "/predict/seizure", body, JSON), timeout=30).start()
    in_flight = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        in_flight.append(metric_sum(scrape(srv.port), "dlqr_http_requests_in_flight"))
        time.sleep(0.2)
    load.stop()
    fig = load.summary()
    text = scrape(srv.port)
    fig["in_flight_max"] = max(in_flight)
    fig["rejected_total"] = metric_sum(text, "dlqr_http_requests_rejected_total", reason="overload")
    shed = load.sample_headers.get(503, {})
    fig["503_headers"] = {k: shed.get(k) for k in ("content-type", "retry-after")} if shed else None
    failures = []
    if shed and (shed.get("content-type") != "application/problem+json" or not shed.get("retry-after")):
        failures.append(f"503 without problem+json or Retry-After: {shed}")
    if fig["lost"] or fig["timeout"]:
        failures.append(f"{fig['lost']} lost, {fig['timeout']} timed out")
    if inflight is not None:
        bad5xx = {s: c for s, c in fig["statuses"].items() if s.startswith("5") and s != "503"}
        if bad5xx:
            failures.append(f"5xx other than 503: {bad5xx}")
        if not fig["statuses"].get("503"):
            failures.append("no request was shed (503)")
        if not fig["statuses"].get("200"):
            failures.append("nothing was served")
    return Result("overload", {"c": conc, **fig}, failures)


def scenario_signal(srv: Server, which: str, seconds: float, conc: int = 8) -> Result:
    """Closed-loop digit load at c=``conc``; the signal at 1/3 of the run."""
    body = example("digit.json")
    # A patient client: on HUP, Gunicorn stops the old workers at once, so requests wait in the
    # listen queue until the new ones have loaded their models (as long as a start takes);
    # max_ms shows that wait, and nothing may be lost.
    load = Load(srv.port, conc, lambda: ("POST", "/predict/digit", body, JSON), timeout=START_TIMEOUT).start()
    time.sleep(seconds / 3)
    fig: dict = {}
    failures: list[str] = []
    t_sig = time.monotonic()
    if which == "kill9":
        victim = srv.workers()[0]
        os.kill(victim, signal.SIGKILL)
        fig["killed_worker"] = victim
    elif which == "hup":
        old = set(srv.workers())
        srv.proc.send_signal(signal.SIGHUP)
    elif which == "sigterm":
        # A load balancer's health check on a keep-alive connection: /readyz must turn 503 at once.
        probe = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        probe.request("GET", "/readyz")
        before = probe.getresponse()
        before.read()
        t_sig = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        readyz = []
        while time.monotonic() - t_sig < 2 and not (readyz and readyz[-1][0] != 200):
            try:
                probe.request("GET", "/readyz")
                r = probe.getresponse()
                r.read()
                readyz.append((r.status, round((time.monotonic() - t_sig) * 1000)))
                if r.will_close:
                    probe.close()
                    probe = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            except ConnectionRefusedError:
                readyz.append(("refused", round((time.monotonic() - t_sig) * 1000)))
            except (OSError, http.client.HTTPException) as exc:
                readyz.append((type(exc).__name__, round((time.monotonic() - t_sig) * 1000)))
                probe.close()
                probe = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        probe.close()
        fig["readyz_before"] = before.status
        fig["readyz_after_sigterm"] = readyz[-1] if readyz else None
        try:
            srv.proc.wait(120)
        except subprocess.TimeoutExpired:
            failures.append("server did not exit within 120 s")
        fig["exit_s"] = round(time.monotonic() - t_sig, 1)
        fig["exit_code"] = srv.proc.returncode
    time.sleep(seconds * 2 / 3)
    if which == "hup":
        fig["workers_replaced"] = not (old & set(srv.workers()))
    load.stop()
    fig.update(load.summary())
    if which == "kill9":
        # Requests in flight on the killed worker's connections cannot be saved (no proxy retries);
        # everything else must succeed, so at most one per connection is lost.
        if fig["lost"] > conc:
            failures.append(f"{fig['lost']} lost (> c={conc})")
        fig["ready_after_kill_s"] = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < START_TIMEOUT and len(srv.workers()) < int(
            srv.env.get("DLQR_WORKERS", 2)
        ):
            time.sleep(0.2)
        srv.wait_ready()
        fig["ready_after_kill_s"] = round(time.monotonic() - t_sig, 1)
    elif fig["lost"] or fig["timeout"]:
        failures.append(f"{fig['lost']} lost, {fig['timeout']} timed out")
    if load.lost:
        fig["lost_detail"] = dict(Counter(f"{conn}: {err}" for _, conn, err in load.lost))
    if fig["5xx"]:
        failures.append(f"{fig['5xx']} 5xx answers")
    if which == "sigterm":
        grace = int(srv.env.get("DLQR_GRACEFUL_TIMEOUT", 20))
        if fig["exit_s"] > grace + 2:
            failures.append(f"exit took {fig['exit_s']} s > graceful timeout {grace} s")
        if not fig["readyz_after_sigterm"] or fig["readyz_after_sigterm"][0] != 503:
            failures.append(f"/readyz after SIGTERM: {fig['readyz_after_sigterm']} (want 503 at once)")
    return Result(which, fig, failures)


WORKER_TIMEOUT_ENV = {
    # The pixel budget lifted, and the worker timeout (20 s, which also bounds a worker's boot)
    # just above the request deadline (19 s): whichever fires first must answer problem+json.
    "DLQR_TIMEOUT": "20",
    "DLQR_REQUEST_TIMEOUT": "19",
    "DLQR_MAX_REQUEST_PIXELS": str(1 << 32),
}


def scenario_worker_timeout(srv: Server, limit: int) -> Result:
    """The CPU bomb with the pixel budget lifted (~30 s of CPU): never Gunicorn's HTML."""
    body, n = bomb_body("RGBA", 80, limit)
    before = scrape(srv.port)
    probe = Prober(srv.port)
    probe.start()
    r = request(srv.port, "POST", "/predict/digit", body, JSON, timeout=120)
    time.sleep(1)
    probe.stop()
    srv.wait_ready()
    after = scrape(srv.port)
    counted = metric_sum(after, "dlqr_http_requests_total", status=str(r.status)) - metric_sum(
        before, "dlqr_http_requests_total", status=str(r.status)
    )
    detail = json.loads(r.body).get("detail") if r.problem else r.body[:80].decode(errors="replace")
    fig = {
        "images": n,
        "answer": f"{r.status or r.error} {r.headers.get('content-type', '')}",
        "detail": detail,
        "seconds": round(r.seconds, 1),
        "counted": int(counted),
        "worker_timeouts_logged": srv.log().count("WORKER TIMEOUT"),
        **{k: v for k, v in probe.summary().items() if k in ("probes", "probes_failed")},
    }
    failures = []
    if r.status not in (503, 504) or not r.problem:
        failures.append(f"answered {fig['answer']}")
    if counted != 1:
        failures.append("the answer is not in dlqr_http_requests_total")
    return Result("worker-timeout", fig, failures)


def scenario_control_socket(repo: Path, workdir: Path, env: dict) -> Result:
    """Two servers on one machine; stop the second; the first keeps its socket (or has none)."""
    home = Path(tempfile.mkdtemp(prefix="dlqr-home-", dir=workdir))
    env = {**env, "HOME": str(home), "XDG_RUNTIME_DIR": ""}
    if env.get("DLQR_CONTROL_SOCKET"):  # one path per instance, as the README says to set it
        env_a = {**env, "DLQR_CONTROL_SOCKET": str(home / "a.ctl")}
        env_b = {**env, "DLQR_CONTROL_SOCKET": str(home / "b.ctl")}
    else:
        env_a = env_b = env
    a = Server(repo, workdir, env_a, "ctl-a").start()
    b = Server(repo, workdir, env_b, "ctl-b").start()
    try:
        sockets = lambda: sorted(str(p.relative_to(home)) for p in home.rglob("*.ctl"))  # noqa: E731
        during = sockets()
        b.stop()
        time.sleep(0.5)
        after_b = sockets()
        alive = request(a.port, "GET", "/healthz").status
    finally:
        a.stop()
    fig = {"sockets_with_both": during, "after_second_stopped": after_b, "first_still_serves": alive}
    failures = []
    if during and not after_b:
        failures.append("stopping the second server removed the first one's control socket")
    if len(during) == 1:
        failures.append("both servers share one control socket path")
    if "Control server error" in a.log() + b.log():
        failures.append("'Control server error' logged")
    return Result("control-socket", fig, failures)


# --------------------------------------------------------------------- main

ALL = (
    "slow-headers",
    "slow-body",
    "slow-mixed",
    "cpu-bomb",
    "chunked",
    "encoding",
    "parser-errors",
    "pipeline",
    "methods",
    "overload",
    "kill9",
    "hup",
    "sigterm",
    "worker-timeout",
    "control-socket",
)


def run(scenarios: list[str], repo: Path, quick: bool, env: dict[str, str], slow_n: int) -> list[Result]:
    """Run the scenarios on as few servers as possible: one shared server for everything that
    leaves it serving (with DLQR_MAX_INFLIGHT=4 so that the overload scenario sheds), one for
    kill -9 then HUP, one for SIGTERM, two for the control socket."""
    workdir = Path(tempfile.mkdtemp(prefix="dlqr-chaos-"))
    home = workdir / "home"  # an empty HOME: a control socket would show up here
    home.mkdir()
    base_env = {
        "DLQR_WORKERS": "2",
        "DLQR_READ_TIMEOUT": "3",
        "HOME": str(home),
        "XDG_RUNTIME_DIR": "",
        **env,
    }
    read_timeout = float(base_env["DLQR_READ_TIMEOUT"]) if not env.get("CHAOS_NO_TIMEOUT_CHECK") else None
    body_limit = int(base_env.get("DLQR_MAX_BODY_BYTES", 8 * 1024 * 1024))
    inflight = int(base_env.get("DLQR_MAX_INFLIGHT", 4))
    groups = [
        (
            "shared",
            [
                s
                for s in scenarios
                if s not in ("kill9", "hup", "sigterm", "worker-timeout", "control-socket")
            ],
        ),
        ("signals", [s for s in scenarios if s in ("kill9", "hup")]),
        ("sigterm", [s for s in scenarios if s == "sigterm"]),
        ("worker-timeout", [s for s in scenarios if s == "worker-timeout"]),
    ]
    results: list[Result] = []
    for group, names in groups:
        if not names:
            continue
        group_env = {**base_env, "DLQR_MAX_INFLIGHT": str(inflight)} if group == "shared" else base_env
        if group == "worker-timeout":
            group_env = {**base_env, **WORKER_TIMEOUT_ENV}
        srv = Server(repo, workdir, group_env, group).start()
        log(f"{group} server ready in {srv.ready_seconds:.1f} s (port {srv.port}, log {srv.log_path})")
        try:
            for name in names:
                log(f"--- {name}")
                if srv.proc.poll() is None:
                    srv.wait_ready()  # a previous scenario may have cost a worker (and its models)
                if name in ("slow-headers", "slow-body"):
                    res = scenario_slow(srv, name.split("-")[1], slow_n, 12 if quick else 40, read_timeout)
                elif name == "slow-mixed":
                    res = scenario_slow_mixed(srv, slow_n, 12 if quick else 40, read_timeout)
                elif name == "cpu-bomb":
                    res = scenario_cpu_bomb(srv, quick, body_limit)
                elif name == "chunked":
                    res = scenario_chunked(srv)
                elif name == "encoding":
                    res = scenario_encoding(srv)
                elif name == "parser-errors":
                    res = scenario_parser_errors(srv)
                elif name == "pipeline":
                    res = scenario_pipeline(srv)
                elif name == "methods":
                    res = scenario_methods(srv, 300 if quick else 20_000)
                elif name == "overload":
                    res = scenario_overload(srv, 32, 6 if quick else 20, inflight)
                elif name == "worker-timeout":
                    res = scenario_worker_timeout(srv, body_limit)
                else:
                    res = scenario_signal(srv, name, 9 if quick else 30)
                log(res.line())
                results.append(res)
        finally:
            srv.stop()
        if group == "shared":
            ctl = sorted(str(p) for p in home.rglob("*.ctl"))
            errors = srv.log().count("Control server error")
            if ctl or errors:
                log(f"note: control sockets {ctl}, 'Control server error' x{errors}")
    if "control-socket" in scenarios:
        log("--- control-socket")
        res = scenario_control_socket(repo, workdir, base_env)
        log(res.line())
        results.append(res)
    return results


WORKER_MODELS = {
    "sync": {"DLQR_WORKER_CLASS": "sync"},
    "gthread": {"DLQR_WORKER_CLASS": "gthread", "DLQR_THREADS": "4"},
    "gevent": {"DLQR_WORKER_CLASS": "gevent"},
}


def compare_workers(repo: Path, seconds: float, rounds: int, hold: float, slow_n: int) -> dict:
    """The worker-model comparison behind the default worker class (docs/hardening.md).

    Two workers of each kind, side by side (idle ones cost nothing): digit c=8
    throughput with `hey` (keep-alive on, hey's default, and off), rounds
    interleaved across kinds, medians; then, on each in turn, ``slow_n``
    slow-header plus ``slow_n`` slow-body connections kept open for ``hold``
    seconds with DLQR_READ_TIMEOUT=60, so that no timeout helps: what the worker
    model itself withstands.
    """
    import bench  # scripts/bench.py: hey install and parsing

    hey = bench.ensure_hey()
    workdir = Path(tempfile.mkdtemp(prefix="dlqr-workers-"))
    body = ROOT / "examples" / "digit.json"
    env = {"DLQR_WORKERS": "2", "DLQR_READ_TIMEOUT": "60"}
    servers = {k: Server(repo, workdir, {**env, **v}, k).start() for k, v in WORKER_MODELS.items()}
    out: dict = {k: {"keepalive": [], "no_keepalive": []} for k in servers}
    try:
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for mode in ("keepalive", "no_keepalive"):
                for kind in order:
                    cmd = [
                        hey,
                        "-z",
                        f"{seconds}s",
                        "-c",
                        "8",
                        "-m",
                        "POST",
                        "-T",
                        "application/json",
                        "-D",
                        str(body),
                    ]
                    if mode == "no_keepalive":
                        cmd.append("-disable-keepalive")
                    cmd.append(f"http://127.0.0.1:{servers[kind].port}/predict/digit")
                    cpu0 = servers[kind].cpu_seconds()
                    res = bench.parse_hey(
                        subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120).stdout
                    )
                    # Worker CPU per request: what decides throughput on dedicated cores, and far
                    # less sensitive than req/s to other jobs on a shared machine.
                    res["cpu_us"] = (
                        (servers[kind].cpu_seconds() - cpu0) / max(1, sum(res["codes"].values())) * 1e6
                    )
                    out[kind][mode].append(res)
                    log(
                        f"  round {r + 1} {kind:7s} {mode:12s} {res['rps']:8.0f} req/s p99 {res['p99_ms']:.1f} ms"
                        f" worker CPU {res['cpu_us']:.0f} us/request"
                    )
        for kind, srv in servers.items():
            res = scenario_slow_mixed(srv, slow_n, hold)
            log(f"  slow clients vs {kind}: {res.line()}")
            out[kind]["slow"] = res.figures
    finally:
        for srv in servers.values():
            srv.stop()
    table = {}
    for kind, data in out.items():
        row = {}
        for mode in ("keepalive", "no_keepalive"):
            med = bench.median_run(data[mode])
            cpu = sorted(r["cpu_us"] for r in data[mode])
            row[mode] = {"rps": round(med["rps"]), "p99_ms": round(med["p99_ms"], 1), "rounds": med["rounds_rps"],
                         "cpu_us_per_request": round(cpu[len(cpu) // 2]),
                         "non_200": {c: n for c, n in med["codes"].items() if c != 200}}  # fmt: skip
        slow = data["slow"]
        row["slow"] = {k: slow[k] for k in ("probes", "probes_failed", "probe_outage_s", "probe_max_ms")}
        table[kind] = row
    table["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=ALL, help="run only these (repeatable)")
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout to serve (default: this one)")
    ap.add_argument("--quick", action="store_true", help="short runs (what the pytest suite does)")
    ap.add_argument("--slow-clients", type=int, default=64, help="slow connections per slow-* scenario")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra server environment")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument(
        "--compare-workers",
        action="store_true",
        help="instead: the sync/gthread/gevent comparison (uses hey)",
    )
    args = ap.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.compare_workers:
        try:
            table = compare_workers(args.repo.resolve(), 4 if args.quick else 10, 1 if args.quick else 3,
                                    8 if args.quick else 20, args.slow_clients)  # fmt: skip
        finally:
            for srv in _RUNNING:
                if srv.proc is not None and srv.proc.poll() is None:
                    srv.proc.kill()
        print(json.dumps(table, indent=1))
        if args.json:
            args.json.write_text(json.dumps(table, indent=1))
        return 0
    try:
        results = run(args.scenario or list(ALL), args.repo.resolve(), args.quick, env, args.slow_clients)
    finally:
        for srv in _RUNNING:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.kill()
    print("\n".join(r.line() for r in results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
