"""Offline scoring throughput against the server's batch throughput, same model, one core each.

For each model: N real instances (the bundle's golden inputs, repeated) are scored
by ``python -m serving predict`` (JSON Lines and CSV, batches of 256), pinned to
CPU 0; then the real Gunicorn server (one worker, also pinned to CPU 0) is loaded
by ``hey`` (pinned to CPU 1) with 256-instance ``/predict`` batches of the same
instances. The ratio offline rows/s / server rows/s is the figure the README
quotes (target >= 80 %). Without ``taskset`` or a second CPU the runs are not
pinned and the script says so.

    python scripts/bench_offline.py                    # all models, 20k rows, 10 s of hey
    python scripts/bench_offline.py --models digit --rows 5000 --duration 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 256


def _pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def _inputs(artifacts: Path, name: str, rows: int, work: Path) -> tuple[Path, Path, Path]:
    from pydantic import TypeAdapter

    from dlqr import repository
    from dlqr.card import get

    card = get(name)
    bundle = repository.latest_dir(artifacts / name)
    golden = [g["input"] for g in json.loads((bundle / "manifest.json").read_text())["golden"]]
    instances = [golden[i % len(golden)] for i in range(rows)]
    jsonl = work / f"{name}.jsonl"
    jsonl.write_text("".join(json.dumps(i) + "\n" for i in instances))
    adapter = TypeAdapter(card.instance)
    table = card.rows([adapter.validate_python(i) for i in golden], card.features)
    csv_path = work / f"{name}.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(card.features)
        for i in range(rows):
            w.writerow([int(v) if float(v).is_integer() else repr(float(v)) for v in table[i % len(table)]])
    body = work / f"{name}-batch{BATCH}.json"
    body.write_text(json.dumps({"instances": [golden[i % len(golden)] for i in range(BATCH)]}))
    return jsonl, csv_path, body


def offline_rows_per_s(name: str, path: Path, artifacts: Path, out: Path) -> tuple[float, float]:
    """(rows per wall-clock second, rows per CPU second) of one offline run."""
    cmd = [*_pin(0), sys.executable, "-m", "serving", "predict", name, "--artifacts", str(artifacts),
           "-i", str(path), "-o", str(out), "--batch-size", str(BATCH), "-q"]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    m = re.search(r"\(([\d,]+) rows/s, ([\d,]+) rows per CPU second\)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError(f"offline scoring failed: {r.stderr[-2000:]}")
    return float(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))


class Server:
    """The real Gunicorn server, one worker pinned to CPU 0, serving one model."""

    def __init__(self, name: str, artifacts: Path, work: Path):
        from socket import socket

        with socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "DLQR_BIND": f"127.0.0.1:{self.port}", "DLQR_WORKERS": "1", "DLQR_MODELS": name,
               "DLQR_ARTIFACTS_DIR": str(artifacts), "DLQR_LOG_LEVEL": "WARNING", "DLQR_POLL_SECONDS": "0"}  # fmt: skip
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.name = name
        self.log = open(work / f"server-{name}.log", "w")  # noqa: SIM115
        cmd = [
            *_pin(0),
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "serving/gunicorn.conf.py",
            "serving.wsgi:app",
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server not ready; see {self.log.name}")
            time.sleep(0.2)

    def _worker_cpu(self) -> float:
        """CPU seconds (user + system) used so far by the worker processes."""
        total = 0.0
        pids = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rows_per_s(self, body: Path, duration: float) -> tuple[float, float]:
        """(rows per wall-clock second, rows per CPU second of the worker) under hey."""
        cpu0 = self._worker_cpu()
        hey = [*_pin(1), "hey", "-z", f"{duration:g}s", "-c", "4", "-m", "POST", "-T", "application/json",
               "-D", str(body), f"http://127.0.0.1:{self.port}/predict/{self.name}"]  # fmt: skip
        out = subprocess.run(hey, capture_output=True, text=True, timeout=duration + 60).stdout
        cpu = self._worker_cpu() - cpu0
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
        if not rps or set(codes) != {"200"}:
            raise RuntimeError(f"hey: {out[-1500:]}")
        return float(rps.group(1)) * BATCH, int(codes["200"]) * BATCH / cpu

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(30)
        self.log.close()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="wine,seizure,digit")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of hey per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model; medians are shown")
    ap.add_argument(
        "--artifacts", type=Path, default=Path(os.environ.get("DLQR_ARTIFACTS_DIR") or ROOT / "artifacts")
    )
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    if not shutil.which("hey"):
        sys.exit("bench_offline: `hey` is required (Debian/Ubuntu: apt-get install hey)")
    pinned = bool(_pin(0))
    print(f"offline scoring vs server batch throughput (batches of {BATCH}; "
          + ("both pinned to CPU 0, hey on CPU 1)" if pinned else "NOT pinned: no taskset or one CPU)"), flush=True)  # fmt: skip
    print(
        "rows per second of wall-clock time, and per CPU second of the one scoring process (robust when other"
    )
    print("jobs share the machine); offline / server ratios of each")
    print(f"{'model':<8} {'measure':<12} {'server':>9} {'JSONL':>9} {'ratio':>6} {'CSV':>9} {'ratio':>6}")
    results = []
    work = Path(tempfile.mkdtemp(prefix="dlqr-bench-offline-"))
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            jsonl, csv_path, body = _inputs(args.artifacts, name, args.rows, work)
            runs: dict[str, list[tuple[float, float]]] = {"server": [], "jsonl": [], "csv": []}
            srv = Server(name, args.artifacts, work)
            try:
                for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits all three alike
                    runs["server"].append(srv.rows_per_s(body, args.duration))
                    runs["jsonl"].append(offline_rows_per_s(name, jsonl, args.artifacts, work / "out.jsonl"))
                    runs["csv"].append(offline_rows_per_s(name, csv_path, args.artifacts, work / "out.csv"))
            finally:
                srv.stop()
            res: dict = {"model": name, "rows": args.rows, "pinned": pinned, "runs": runs}
            for i, measure in enumerate(("wall", "cpu")):
                server, off_jsonl, off_csv = (
                    _median([r[i] for r in runs[k]]) for k in ("server", "jsonl", "csv")
                )
                res[measure] = {"server": server, "jsonl": off_jsonl, "csv": off_csv,
                                "jsonl_ratio": off_jsonl / server, "csv_ratio": off_csv / server}  # fmt: skip
                label = "rows/s" if measure == "wall" else "rows/CPU-s"
                print(f"{name:<8} {label:<12} {server:>9,.0f} {off_jsonl:>9,.0f} {off_jsonl / server:>6.0%} "
                      f"{off_csv:>9,.0f} {off_csv / server:>6.0%}", flush=True)  # fmt: skip
            results.append(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for measure in ("wall", "cpu"):
        ok = all(r[measure]["jsonl_ratio"] >= 0.8 for r in results)
        print(f"target, offline JSON Lines (the server's own instance format) >= 80 % of the server, "
              f"{'wall clock' if measure == 'wall' else 'per CPU second'}: {'met' if ok else 'NOT met'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
