"""Hot swap under load: a new model version appears while `hey -c 16` hammers /predict.

Starts the real Gunicorn server (``serving/gunicorn.conf.py``, 2 workers) on a
private copy of ``artifacts/``, loads one model for ``--duration`` seconds and,
half-way through, renames a new version directory into place:

- ``good``: a valid new version (the current bundle re-sealed under a new version
  name); the workers' pollers (``DLQR_POLL_SECONDS=1``) pick it up;
- ``worker-hup``: the same, with polling off, followed by ``kill -HUP`` of each worker
  (each rescans at once and swaps in place);
- ``hup``: the same, with polling off, followed by ``kill -HUP`` of the master
  (Gunicorn replaces its workers; the new ones load the new version first);
- ``corrupt``: a new version whose ``model.onnx`` no longer matches its manifest's
  sha256: refused, the old version keeps serving;
- ``bad-golden``: a new version whose hashes are right but whose golden pairs are
  wrong (fails the self-test): refused likewise;
- ``rollback``: the repository starts with a routing file whose ``stable`` is the greatest
  version and ``previous_stable`` the one before it (as after a ``promote``); half-way,
  ``dlqr-models rollback MODEL`` runs, and every worker must go back to the previous version
  at its next poll (plus the load of that version) with no failed request.

The scenarios that add a version run the server with ``DLQR_VERSION_POLICY=latest`` (a new
directory goes live by itself only under that policy; the default ``routing`` policy serves what
``routing.json`` names). Load is `hey` (status counts) plus a probe thread that records the ``version`` of
each answer with its time, so "every answer after the switch comes from the new
version" is checked, not assumed. The switch time is when the last worker logged
``model_switched`` (or, for ``hup``, when the last old worker exited). Exits 1 if a
scenario's expectation fails. Loopback only, bounded in time.

    python scripts/chaos_swap.py                        # all scenarios, 30 s each, hey -c 16
    python scripts/chaos_swap.py --scenarios good --duration 10 --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dlqr import bundle as B  # noqa: E402  (standard library only)
from dlqr import repository  # noqa: E402
from dlqr import routing as R  # noqa: E402

SCENARIOS = ("good", "worker-hup", "hup", "corrupt", "bad-golden", "rollback")
NEW_VERSION = "9999.01.01.000000"  # sorts after every training timestamp: "latest" must pick it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seal_as_version(src: Path, model_dir: Path, version: str, defect: str | None = None) -> Path:
    """Copy the bundle ``src`` as ``model_dir/version`` (re-sealed), renamed into place at the end.

    ``defect``: None (a valid bundle), ``"sha"`` (one byte of model.onnx flipped after sealing) or
    ``"golden"`` (sealed with a wrong golden output, so the self-test fails).
    """
    manifest = json.loads((src / B.MANIFEST).read_text())
    manifest = {k: v for k, v in manifest.items() if k not in ("files", "bundle_format")}
    manifest["version"] = version
    if defect == "golden":
        manifest["golden"][0]["raw_output"][0] += 0.25
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir))
    shutil.rmtree(staging)
    shutil.copytree(src, staging)
    (staging / B.MANIFEST).unlink()
    sealed = model_dir / f".{version}.sealed"
    B.write_bundle(staging, sealed, manifest)  # still hidden: the server ignores dot-names
    if defect == "sha":
        onnx = sealed / B.ONNX_FILE
        data = bytearray(onnx.read_bytes())
        data[-20] ^= 0xFF
        onnx.write_bytes(bytes(data))
    dest = model_dir / version
    os.rename(sealed, dest)  # the one atomic step the server can observe
    return dest


class Server:
    """Gunicorn on loopback with its JSON log in a file."""

    def __init__(self, artifacts: Path, logdir: Path, workers: int, poll: float, policy: str | None = None):
        self.port = free_port()
        self.log_path = logdir / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "DLQR_BIND": f"127.0.0.1:{self.port}",
            "DLQR_ARTIFACTS_DIR": str(artifacts),
            "DLQR_WORKERS": str(workers),
            "DLQR_POLL_SECONDS": str(poll),
            "DLQR_LOG_LEVEL": "INFO",
        }
        if policy:
            self.env["DLQR_VERSION_POLICY"] = policy
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.workers = workers

    def start(self, timeout: float = 60) -> None:
        self._log = open(self.log_path, "w")  # noqa: SIM115
        cmd = [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s; see {self.log_path}")

    def events(self, event: str) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def stop(self) -> None:
        if not hasattr(self, "proc"):
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def _ts(event: dict) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


class Recorder(threading.Thread):
    """Keep-alive POST loop recording (time sent, time answered, status, version), until ``deadline``."""

    def __init__(self, port: int, path: str, body: bytes, deadline: float, pause: float = 0.0):
        super().__init__(daemon=True)
        self.port, self.path, self.body, self.deadline, self.pause = port, path, body, deadline, pause
        self.samples: list[tuple[float, float, int, str | None]] = []
        self.latencies: list[float] = []

    def run(self) -> None:
        conn = None
        while time.time() < self.deadline:
            t_start = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                version = json.loads(data).get("version") if resp.status == 200 else None
                self.samples.append((t_start, time.time(), resp.status, version))
                self.latencies.append(time.time() - t_start)
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.samples.append((t_start, time.time(), 0, type(exc).__name__))
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)


def parse_hey(text: str) -> dict:
    """Requests/sec, status counts and the error count from hey's text summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = re.search(r"Error distribution:(.*)", text, re.S)
    n_errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s", errors.group(1))) if errors else 0
    if not rps:
        raise RuntimeError(f"cannot parse hey output:\n{text[-2000:]}")
    return {"rps": float(rps.group(1)), "status": codes, "errors": n_errors}


def _hey(port: int, path: str, body_file: Path, duration: float, concurrency: int) -> dict:
    cmd = ["hey", "-z", f"{duration:g}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
           "-D", str(body_file), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    return parse_hey(out)


def run_scenario(
    scenario: str,
    *,
    model: str = "wine",
    duration: float = 30.0,
    concurrency: int = 16,
    loader: str = "hey",
    workers: int = 2,
    poll: float = 1.0,
    artifacts: Path | None = None,
) -> dict:
    """One scenario end to end; returns the figures and ``ok`` (the expectation held)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    work = Path(tempfile.mkdtemp(prefix=f"dlqr-chaos-swap-{scenario}-"))
    try:
        art = work / "artifacts"
        shutil.copytree(artifacts or ROOT / "artifacts", art, ignore=shutil.ignore_patterns(".*"))
        model_dir = art / model
        old_dir = repository.latest_dir(model_dir)
        if old_dir is None:
            raise RuntimeError(f"no bundle for {model} in {artifacts or ROOT / 'artifacts'}")
        old_version = json.loads((old_dir / B.MANIFEST).read_text())["version"]
        # The version every answer must come from once the switch is complete.
        target = NEW_VERSION
        if scenario == "rollback":
            others = [
                c.version for c in repository.scan(model_dir) if not c.flat and c.version != old_version
            ]
            if not others:
                raise RuntimeError(f"rollback needs two versions of {model}")
            target = others[0]
            R.write(model_dir, R.Routing(stable=old_version, previous_stable=target))
        golden = json.loads((old_dir / B.MANIFEST).read_text())["golden"]
        body = json.dumps(golden[0]["input"]).encode()
        body_file = work / "body.json"
        body_file.write_bytes(body)
        srv = Server(art, work, workers, 0 if scenario in ("hup", "worker-hup") else poll,
                     None if scenario == "rollback" else "latest")  # fmt: skip
        try:
            srv.start()
            t0 = time.time()
            deadline = t0 + duration
            path = f"/predict/{model}"
            if loader == "hey":
                load_result: dict = {}
                hey = threading.Thread(
                    target=lambda: load_result.update(_hey(srv.port, path, body_file, duration, concurrency)),
                    daemon=True,
                )
                hey.start()
                recorders = [Recorder(srv.port, path, body, deadline, pause=0.01)]
            else:
                recorders = [Recorder(srv.port, path, body, deadline) for _ in range(concurrency)]
            for r in recorders:
                r.start()
            time.sleep(duration / 2)
            t_swap = time.time()
            defect = {"corrupt": "sha", "bad-golden": "golden"}.get(scenario)
            rollback_s = None
            if scenario == "rollback":
                cmd = [sys.executable, "-m", "serving", "models", "--repository", str(art), "rollback", model]
                subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=60)
                rollback_s = time.time() - t_swap
            else:
                seal_as_version(old_dir, model_dir, NEW_VERSION, defect)
            gone: list[float] = []
            if scenario == "worker-hup":
                for pid in subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True,
                                          text=True).stdout.split():  # fmt: skip
                    os.kill(int(pid), signal.SIGHUP)
            if scenario == "hup":
                old_pids = {int(p) for p in subprocess.run(["pgrep", "-P", str(srv.proc.pid)],
                                                            capture_output=True, text=True).stdout.split()}  # fmt: skip
                os.kill(srv.proc.pid, signal.SIGHUP)

                def watch_old_workers() -> None:  # the switch is complete once every old worker has exited
                    while time.time() < deadline + 30:
                        if not any(Path(f"/proc/{p}").exists() for p in old_pids):
                            gone.append(time.time())
                            return
                        time.sleep(0.05)

                threading.Thread(target=watch_old_workers, daemon=True).start()
            for r in recorders:
                r.join(duration + 30)
            if loader == "hey":
                hey.join(duration + 90)
            switched = [e for e in srv.events("model_switched") if e.get("model") == model]
            loads = [e.get("load_seconds", 0.0) for e in srv.events("model_ready")
                     if e.get("model") == model and e.get("version") == target and _ts(e) >= t_swap]  # fmt: skip
            refused = [e for e in srv.events("model_refused") if e.get("model") == model]
            if scenario == "hup":
                t_done = gone[0] if gone else None
            else:
                t_done = max((_ts(e) for e in switched), default=None) if len(switched) >= workers else None
        finally:
            srv.stop()
        samples = sorted(s for r in recorders for s in r.samples)
        status = {}
        for _, _, code, _ in samples:
            status[code] = status.get(code, 0) + 1
        new_answers = [t for _, t, code, v in samples if code == 200 and v == target]
        # Requests *sent* after the switch must all be answered by the new version (one sent just
        # before it may still finish on the old one: in-flight requests keep their version).
        after = [(t, v) for t, _, code, v in samples if code == 200 and t_done is not None and t > t_done]
        out: dict = {
            "scenario": scenario,
            "model": model,
            "old_version": old_version,
            "new_version": target,
            "duration_s": duration,
            "concurrency": concurrency,
            "loader": "hey + 1 probe" if loader == "hey" else f"{concurrency} python clients",
            "swap_at_s": round(t_swap - t0, 2),
            "probe_answers": len(samples),
            "probe_status": status,
            "probe_non_200": sum(n for c, n in status.items() if c != 200),
            "probe_max_latency_s": round(max((x for r in recorders for x in r.latencies), default=0.0), 3),
            "first_new_answer_after_swap_s": round(new_answers[0] - t_swap, 3) if new_answers else None,
            "switch_complete_after_swap_s": round(t_done - t_swap, 3) if t_done else None,
            "answers_after_switch": len(after),
            "old_answers_after_switch": sum(1 for _, v in after if v != target),
            "workers_switched": len(switched),
            "workers_refused": len(refused),
            "refused_file": refused[0].get("file") if refused else None,
            "poll_s": 0 if scenario in ("hup", "worker-hup") else poll,
        }
        if rollback_s is not None:
            # The promise: every request sent later than the command's end + one poll interval +
            # the load of the previous version (it was not loaded while not in the routing) is
            # answered by the previous version.
            load_s = max(loads, default=0.0)
            bound = t_swap + rollback_s + poll + load_s
            late = [v for t, _, code, v in samples if code == 200 and t > bound]
            out.update(rollback_command_s=round(rollback_s, 3), load_s=round(load_s, 3),
                       answers_after_poll_and_load=len(late),
                       old_answers_after_poll_and_load=sum(1 for v in late if v != target))  # fmt: skip
        if loader == "hey":
            out["hey"] = load_result
            hey_non_200 = sum(n for c, n in load_result.get("status", {}).items() if int(c) != 200)
            out["hey_non_200"] = hey_non_200 + load_result.get("errors", 0)
        non_200 = out["probe_non_200"] + out.get("hey_non_200", 0)
        if scenario in ("good", "worker-hup", "hup", "rollback"):
            out["ok"] = bool(
                non_200 == 0
                and t_done is not None
                and after
                and out["old_answers_after_switch"] == 0
                and out.get("old_answers_after_poll_and_load", 0) == 0
            )
        else:
            out["ok"] = bool(non_200 == 0 and not new_answers and len(refused) >= workers
                             and all(v == old_version for _, _, c, v in samples if c == 200))  # fmt: skip
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--model", default="wine")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--poll", type=float, default=1.0, help="DLQR_POLL_SECONDS for the poll scenarios")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server this script started is always stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    if not shutil.which("hey"):
        sys.exit("chaos_swap: `hey` is required (Debian/Ubuntu: apt-get install hey)")
    results = []
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        print(f"== {scenario}: {args.model}, hey -c {args.concurrency} -z {args.duration:g}s, swap half-way",
              flush=True)  # fmt: skip
        res = run_scenario(scenario, model=args.model, duration=args.duration, concurrency=args.concurrency,
                           workers=args.workers, poll=args.poll)  # fmt: skip
        results.append(res)
        hey = res.get("hey", {})
        print(
            f"   hey: {sum(hey.get('status', {}).values())} answers, non-200 {res['hey_non_200']}, "
            f"{hey.get('rps', 0):.0f} req/s | probe: {res['probe_answers']} answers, non-200 {res['probe_non_200']}"
            f" | first new-version answer {res['first_new_answer_after_swap_s']} s after the swap, switch "
            f"complete after {res['switch_complete_after_swap_s']} s, {res['old_answers_after_switch']} old "
            f"answers of {res['answers_after_switch']} after it | refused by {res['workers_refused']} workers"
            f" | slowest probe answer {res['probe_max_latency_s']} s"
            + (
                f" | rollback command {res['rollback_command_s']} s, load {res['load_s']} s, "
                f"{res['old_answers_after_poll_and_load']} old answers of {res['answers_after_poll_and_load']} "
                "after command + poll + load"
                if "rollback_command_s" in res
                else ""
            )
            + f" | {'OK' if res['ok'] else 'FAILED'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
