"""The end of ``train``: each new bundle's promotion-gate verdict, and promotion only when asked.

A training run never puts a model in front of users by itself:

- before training, a model directory that already serves a version but has no routing file gets
  one naming that version ``stable`` (history action ``adopt``), so the new bundle waits for a
  deliberate ``dlqr-models promote`` instead of being served as the greatest version;
- after training, each bundle goes through the same gate as ``dlqr-models promote``
  (:mod:`serving.gate`) and the exact promote command is printed;
- the run exits non-zero when a bundle misses a quality bar, unless ``--allow-below-bar``;
- ``--promote`` promotes each bundle through ``dlqr-models promote`` (same gate, lock, history).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from dlqr import repository
from dlqr import routing as R


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train subcommand's promotion options."""
    parser.add_argument("--allow-below-bar", action="store_true",
                        help="exit 0 even when a bundle misses a quality bar (it is still never promoted)")  # fmt: skip
    parser.add_argument("--promote", action="store_true",
                        help="promote each new bundle that passes the promotion gate (dlqr-models promote)")  # fmt: skip


def default_data_dir() -> Path | None:
    """``DLQR_DATA_DIR`` (the gate compares the recorded figures without data)."""
    from training.data import default_data_dir as data_default

    return data_default()


#: The history reason of the routing file ``train`` writes before training.
PIN_REASON = "training: keep serving this version until a new one is promoted"


def pin_current(out: Path, models: list[str], reason: str = PIN_REASON) -> None:
    """Give each model directory that serves a version without a routing file a routing naming it."""
    for name in models:
        mdir = Path(out) / name
        try:
            if R.read(mdir) is not None:
                continue
        except R.RoutingError:
            continue  # a malformed file is the operator's to fix; the server keeps its last good one
        cands = [c for c in repository.scan(mdir) if not c.flat]
        if not cands:
            continue
        with R.writer_lock(mdir):
            after = R.Routing(stable=cands[0].version)
            R.write(mdir, after)
            R.append_history(mdir, R.history_entry(
                "adopt", None, after, reason))  # fmt: skip
        print(f"== {name}: no routing file; {cands[0].version} (served now) is pinned as stable, so the new "
              "bundle waits for a promote", flush=True)  # fmt: skip


def stable_for(mdir: Path, new_version: str) -> str | None:
    """The version the new bundle is compared with: the routing's stable, else the greatest other."""
    try:
        routing = R.read(mdir)
    except R.RoutingError:
        routing = None
    if routing is not None:
        return routing.stable
    others = [c.version for c in repository.scan(mdir) if not c.flat and c.version != new_version]
    return others[0] if others else None


def promote_command(out: Path, name: str, version: str, data_dir: Path | None) -> list[str]:
    argv = ["dlqr-models", "--repository", str(out)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return [*argv, "promote", name, version]


def finish(rows: list[dict[str, Any]], out: Path, data_dir: Path | None, *, promote: bool,
           allow_below_bar: bool) -> int:  # fmt: skip
    """Print each bundle's gate verdict and promote command; promote when asked; the exit status."""
    from serving import gate
    from serving.models_cli import main as models_main

    below, status = [], 0
    print("\npromotion gate")
    for r in rows:
        name, version, bundle = r["model"], r["version"], Path(r["bundle"])
        mdir = bundle.parent
        stable = stable_for(mdir, version)
        verdict = gate.run(name, bundle, mdir / stable if stable else None, data_dir)
        print(f"{name} {version}: {'PASS' if verdict.ok else 'REFUSED'}"
              + (f" (against stable {stable})" if stable else ""))  # fmt: skip
        for line in verdict.lines():
            print("  " + line)
        if not verdict.checks[1].ok:
            below.append(name)
        cmd = promote_command(out, name, version, data_dir)
        if promote:
            status = max(status, 1 if models_main(cmd[1:]) else 0)
        else:
            print("  promote with: " + shlex.join(cmd))
    if below and not allow_below_bar:
        print(f"below bar: {', '.join(below)} (exit 1; --allow-below-bar to accept)")
        return 1
    return status
