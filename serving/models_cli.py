"""``dlqr-models`` (also ``python -m serving models``): list, compare and route model versions.

Works on a plain artifacts directory (``--repository``, else ``DLQR_ARTIFACTS_DIR``, else the
server's default), so it works the same on a checkout, a volume mounted into a container or a
directory baked into an image. Every change goes through :mod:`dlqr.routing`: one writer at a
time (a second one is refused at once), the routing file replaced atomically, one history line.
``promote`` and ``canary`` run the promotion gate (:mod:`serving.gate`) first; ``--force``
with a ``--reason`` overrides a refusal, and the history records both.

Exit status: 0 done, 1 the gate refused, 2 bad input (nothing changed), 3 another writer holds
the lock (nothing changed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlqr import card as cards
from dlqr import repository
from dlqr import routing as R
from dlqr.bundle import BundleError, read_json

EXIT_REFUSED, EXIT_INPUT, EXIT_LOCKED = 1, 2, 3


class CliError(Exception):
    """Bad input: a clear message, a non-zero exit, nothing changed."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def percent(text: str) -> float:
    """argparse type: a percent in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percent in (0, 100]")
    return value


def default_repository() -> Path:
    env = os.environ.get("DLQR_ARTIFACTS_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    from serving.settings import default_artifacts_dir

    return default_artifacts_dir()


def default_data_dir() -> Path | None:
    env = os.environ.get("DLQR_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else None


# ---------------------------------------------------------------------- reading


def model_dir(repo: Path, name: str) -> Path:
    if name not in cards.names():
        raise CliError(f"unknown model {name!r} (registered: {', '.join(cards.names())})")
    path = repo / name
    if not path.is_dir():
        raise CliError(f"{path} is not a directory (is --repository the artifacts directory?)")
    return path


def versions(mdir: Path) -> list[str]:
    """Version names on disk, greatest first."""
    return [c.version for c in repository.scan(mdir) if not c.flat]


def require_version(mdir: Path, version: str) -> Path:
    found = versions(mdir)
    if version not in found:
        raise CliError(f"{mdir.name} has no version {version!r} (versions: {', '.join(found) or 'none'})")
    return mdir / version


def current_routing(mdir: Path) -> R.Routing | None:
    try:
        return R.read(mdir)
    except R.RoutingError as exc:
        raise CliError(
            f"{mdir.name}: {exc}; fix or remove the file (the server keeps its last good routing)"
        ) from None


def served_stable(mdir: Path, routing: R.Routing | None) -> str | None:
    """What serves now: the routing's stable, or without a routing file the greatest version."""
    if routing is not None:
        return routing.stable
    found = versions(mdir)
    return found[0] if found else None


def aliases(version: str, routing: R.Routing | None, greatest: str | None) -> list[str]:
    if routing is None:
        return ["served (no routing file: greatest version)"] if version == greatest else []
    out = []
    if routing.stable == version:
        out.append("stable")
    if routing.canary is not None and routing.canary.version == version:
        out.append(f"canary {routing.canary.percent:g}%")
    if routing.shadow is not None and routing.shadow.version == version:
        out.append(f"shadow {routing.shadow.percent:g}%")
    if routing.previous_stable == version:
        out.append("previous")
    return out


def _json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except BundleError:
        return {}
    return data if isinstance(data, dict) else {}


def describe_version(mdir: Path, version: str, routing: R.Routing | None) -> dict[str, Any]:
    """One version's facts from its manifest and metrics (not re-verified: ``show`` and ``list``)."""
    vdir = mdir / version
    manifest, metrics = _json(vdir / "manifest.json"), _json(vdir / "metrics.json")
    bars = metrics.get("quality_bars") or {}
    test = {k: v for k, v in (metrics.get("test") or {}).items() if isinstance(v, int | float)}
    baseline = {k: v for k, v in ((metrics.get("baseline") or {}).get("test") or {}).items()
                if isinstance(v, int | float)}  # fmt: skip
    found = versions(mdir)
    return {
        "version": version,
        "created": manifest.get("created"),
        "onnx_sha256": (manifest.get("files") or {}).get("model.onnx"),
        "bars": "none" if not bars else ("pass" if all(b.get("passed") for b in bars.values()) else "FAIL"),
        "quality_bars": bars,
        "test": test,
        "baseline_test": baseline,
        "aliases": aliases(version, routing, found[0] if found else None),
    }


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_list(args, repo: Path) -> int:
    names = [args.model] if args.model else [n for n in cards.names() if (repo / n).is_dir()]
    for name in names:
        mdir = model_dir(repo, name)
        routing = current_routing(mdir)
        print(f"{name}: " + (json.dumps(routing.describe()) if routing else
                             "no routing file (the server serves the greatest version)"))  # fmt: skip
        keys = _list_keys(name)
        for v in versions(mdir):
            d = describe_version(mdir, v, routing)
            metrics = " ".join(f"{k}={_fmt(d['test'].get(k, '-'))}" for k in keys)
            base = " ".join(f"{k}={_fmt(d['baseline_test'][k])}" for k in keys if k in d["baseline_test"])
            print(f"  {v}  created {d['created']}  sha256 {(d['onnx_sha256'] or '-')[:12]}  bars {d['bars']}"
                  f"  {metrics}  baseline {base or '-'}  {', '.join(d['aliases'])}".rstrip())  # fmt: skip
    return 0


def _list_keys(name: str) -> tuple[str, ...]:
    keys = {"regression": ("mae", "rmse"), "binary": ("roc_auc", "accuracy"), "multiclass": ("accuracy",)}
    return keys.get(cards.get(name).task.kind, ())


def cmd_show(args, repo: Path) -> int:
    mdir = model_dir(repo, args.model)
    require_version(mdir, args.version)
    d = describe_version(mdir, args.version, current_routing(mdir))
    d["history"] = [e for e in R.read_history(mdir)
                    if args.version in json.dumps([e.get("from"), e.get("to")])]  # fmt: skip
    print(json.dumps(d, indent=2, sort_keys=True))
    return 0


def cmd_diff(args, repo: Path) -> int:
    mdir = model_dir(repo, args.model)
    require_version(mdir, args.a)
    require_version(mdir, args.b)
    routing = current_routing(mdir)
    a, b = describe_version(mdir, args.a, routing), describe_version(mdir, args.b, routing)
    print(f"{'metric':24} {args.a:>20} {args.b:>20} {'b - a':>12}")
    for section in ("test", "baseline_test"):
        for k in sorted(set(a[section]) | set(b[section])):
            va, vb = a[section].get(k), b[section].get(k)
            delta = _fmt(vb - va) if isinstance(va, int | float) and isinstance(vb, int | float) else ""
            label = k if section == "test" else f"baseline {k}"
            print(f"{label:24} {_fmt(va):>20} {_fmt(vb):>20} {delta:>12}")
    print(f"{'bars':24} {a['bars']:>20} {b['bars']:>20}")
    return 0


# ---------------------------------------------------------------------- changing


def _gate(args, mdir: Path, version: str, stable: str | None) -> tuple[Any, bool]:
    """Run the gate; return (evidence, forced) or raise CliError when it refuses without --force."""
    from serving import gate

    verdict = gate.run(mdir.name, mdir / version, mdir / stable if stable else None, args.data_dir)
    print(f"gate for {mdir.name} {version}:")
    for line in verdict.lines():
        print("  " + line)
    if verdict.ok:
        return verdict.evidence(), False
    if args.force:
        print(f"  overridden with --force: {args.reason}")
        return verdict.evidence(), True
    raise CliError(f"the gate refused {mdir.name} {version}; nothing changed "
                   "(override with --force --reason \"...\")", EXIT_REFUSED)  # fmt: skip


def _change(args, repo: Path) -> int:
    mdir = model_dir(repo, args.model)
    if getattr(args, "force", False) and not (args.reason or "").strip():
        raise CliError('--force needs --reason "..." (the history records why the gate was overridden)')
    with R.writer_lock(mdir):
        before = current_routing(mdir)
        after, evidence, forced = plan(args, mdir, before)
        R.write(mdir, after)
        R.append_history(mdir, R.history_entry(args.command, before, after, args.reason, evidence,
                                               forced=forced))  # fmt: skip
    print(f"{mdir.name}: {json.dumps(after.describe())}")
    return 0


def _routing(**kw: Any) -> R.Routing:
    try:
        return R.Routing(**kw)
    except ValidationError as exc:
        raise CliError(R.first_error(exc)) from None


def plan(args, mdir: Path, before: R.Routing | None) -> tuple[R.Routing, Any, bool]:
    """The new routing for one command (gate run where it applies); CliError when refused."""
    stable = served_stable(mdir, before)
    base = before.model_dump(exclude={"format"}) if before else {"stable": stable}
    cmd = args.command
    if cmd in ("promote", "canary", "shadow"):
        require_version(mdir, args.version)
    if cmd == "promote":
        if args.version == stable and before is not None:
            raise CliError(f"{args.version} is already the stable version of {mdir.name}")
        evidence, forced = _gate(args, mdir, args.version, stable)
        new = {**base, "stable": args.version, "previous_stable": stable if stable != args.version else None}
        for key in ("canary", "shadow"):
            if new.get(key) and new[key]["version"] == args.version:
                new[key] = None
        return _routing(**new), evidence, forced
    if cmd == "canary":
        if args.version == stable:
            raise CliError(f"canary {args.version} is the stable version of {mdir.name}; nothing changed")
        evidence, forced = _gate(args, mdir, args.version, stable)
        return (
            _routing(**{**base, "canary": {"version": args.version, "percent": args.percent}}),
            evidence,
            forced,
        )
    if cmd == "shadow":
        if args.version == stable:
            raise CliError(f"shadow {args.version} is the stable version of {mdir.name}; nothing changed")
        from serving import gate

        check, _ = gate.check_verify(mdir.name, mdir / args.version)
        if not check.ok:
            raise CliError(f"{mdir.name} {args.version} does not verify: {check.detail}", EXIT_REFUSED)
        return _routing(**{**base, "shadow": {"version": args.version, "percent": args.percent}}), None, False
    if cmd in ("clear-canary", "clear-shadow"):
        key = cmd.removeprefix("clear-")
        if before is None or getattr(before, key) is None:
            raise CliError(f"{mdir.name} has no {key}; nothing changed")
        return _routing(**{**base, key: None}), None, False
    if cmd == "rollback":
        if before is None or not before.previous_stable:
            raise CliError(f"{mdir.name} has no previous stable version to roll back to")
        require_version(mdir, before.previous_stable)
        new = {**base, "stable": before.previous_stable, "previous_stable": None}
        for key in ("canary", "shadow"):
            if new.get(key) and new[key]["version"] == before.previous_stable:
                new[key] = None
        return _routing(**new), None, False
    raise CliError(f"unknown command {cmd!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dlqr-models",
        description="List, compare and route the versions of the served models (see docs/lifecycle.md).",
    )
    p.add_argument("--repository", type=Path, default=None,
                   help="artifacts directory (default: DLQR_ARTIFACTS_DIR, else the server's default)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=None,
                   help="real datasets for the gate's comparison (default: DLQR_DATA_DIR)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", help="versions with creation time, sha256, bars, key metrics, aliases")
    s.add_argument("model", nargs="?")
    s = sub.add_parser("show", help="one version's facts and history")
    s.add_argument("model")
    s.add_argument("version")
    s = sub.add_parser("diff", help="two versions' metrics side by side")
    s.add_argument("model")
    s.add_argument("a")
    s.add_argument("b")
    for name, help_ in (("promote", "make V the stable version (runs the gate)"),
                        ("canary", "send P%% of requests to V (runs the gate)"),
                        ("shadow", "score a sampled P%% of requests with V after answering")):  # fmt: skip
        s = sub.add_parser(name, help=help_)
        s.add_argument("model")
        s.add_argument("version")
        if name != "promote":
            s.add_argument("--percent", type=percent, required=True, help="in (0, 100]")
        if name != "shadow":
            s.add_argument("--force", action="store_true", help="override a gate refusal (needs --reason)")
        s.add_argument("--reason", default=None, help="why (recorded in the history)")
    for name, help_ in (("clear-canary", "stop the canary"), ("clear-shadow", "stop the shadow"),
                        ("rollback", "back to the previous stable version")):  # fmt: skip
        s = sub.add_parser(name, help=help_)
        s.add_argument("model")
        s.add_argument("--reason", default=None, help="why (recorded in the history)")
    return p


COMMANDS = {"list": cmd_list, "show": cmd_show, "diff": cmd_diff}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repo = (args.repository or default_repository()).expanduser()
    args.data_dir = args.data_dir or default_data_dir()
    try:
        if not repo.is_dir():
            raise CliError(f"repository {repo} is not a directory")
        return COMMANDS.get(args.command, _change)(args, repo)
    except R.RoutingLocked as exc:
        print(f"dlqr-models: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except CliError as exc:
        print(f"dlqr-models: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
