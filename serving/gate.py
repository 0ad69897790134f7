"""The promotion gate: may this version take traffic (``promote``, ``canary``)?

Three checks, each with its evidence, all of which must pass:

(a) **verify**: the bundle is what serving would load: sha256 of every file against its
    manifest, a ``model.onnx`` present, and every golden pair through ONNX Runtime and the task's
    post-processing (the very :func:`serving.loading.load_model` each worker runs);
(b) **bars**: every quality bar recorded in its ``metrics.json`` passes (re-read from the bar,
    the operator and the value, not from the recorded verdict);
(c) **not worse than stable**: both versions score the rows that lie in *both* recorded test
    splits (rows neither version trained or early-stopped on; a challenger whose split differs
    is never judged on rows it trained on) through ONNX Runtime, and on every key metric of the
    model's training recipe the challenger may be worse by at most the card's
    ``promotion_tolerance``. The data comes from ``--data-dir`` / ``DLQR_DATA_DIR`` and
    training's own loaders; without data (or without the training extras) the recorded test
    figures are compared instead, which is said in the verdict and needs ``--force``.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlqr import card as cards
from dlqr.bundle import TEST_SPLIT, BundleError, read_json

#: Metrics where a smaller value is better (every other key metric: greater is better).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mae_scaled", "rmse_scaled", "log_loss"})
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass
class Check:
    """One gate check: its name, whether it passed, a one-line reason and its evidence."""

    name: str
    ok: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """The gate's answer for one version."""

    model: str
    version: str
    checks: list[Check]
    #: True when a check could not be done properly (no data): ``--force`` is needed even if all pass.
    needs_force: bool = False

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not self.needs_force

    def evidence(self) -> dict[str, Any]:
        """What the history records."""
        return {"version": self.version, "passed": self.ok, "needs_force": self.needs_force,
                "checks": [asdict(c) for c in self.checks]}  # fmt: skip

    def lines(self) -> list[str]:
        """Human-readable verdict, one line per check."""
        out = [f"{c.name:8} {'pass' if c.ok else 'FAIL'}  {c.detail}" for c in self.checks]
        if self.needs_force and all(c.ok for c in self.checks):
            out.append("needs --force: the comparison used the recorded figures, not the data")
        return out


def _validator(name: str):
    from serving.schemas import build_schemas

    card = cards.get(name)
    return build_schemas((card,), 1)[name].instance_adapter.validate_python


def load_checked(name: str, bundle_dir: Path):
    """Verify, load and self-test one bundle exactly as a worker does; LoadedModel or an exception."""
    from serving.loading import load_model

    return load_model(cards.get(name), Path(bundle_dir), _validator(name))


def check_verify(name: str, bundle_dir: Path) -> tuple[Check, Any]:
    """(a): sha256 of every file, model.onnx present, golden pairs through ONNX Runtime."""
    from serving.loading import LoadError

    try:
        model = load_checked(name, bundle_dir)
    except (BundleError, LoadError) as exc:
        where = f" ({Path(exc.path).name})" if exc.path else ""
        return Check("verify", False, f"{exc}{where}"), None
    files = len(model.bundle.manifest.get("files", {}))
    return Check(
        "verify",
        True,
        f"{files} files match their sha256, model.onnx loads, "
        f"{model.selftest['golden_pairs']} golden pairs reproduced by ONNX Runtime",
        {"files": files, "onnx_sha256": model.bundle.onnx_sha256, **model.selftest},
    ), model


def check_bars(metrics: dict[str, Any]) -> Check:
    """(b): every quality bar in metrics.json, recomputed from its value, operator and bar."""
    bars = metrics.get("quality_bars")
    if not isinstance(bars, dict) or not bars:
        return Check("bars", False, "metrics.json records no quality bars")
    results, failed = {}, []
    for metric, bar in sorted(bars.items()):
        try:
            passed = bool(_OPS[bar["op"]](float(bar["value"]), float(bar["bar"])))
        except (KeyError, TypeError, ValueError):
            return Check("bars", False, f"quality bar {metric!r} is malformed: {bar!r}")
        results[metric] = {"value": bar["value"], "op": bar["op"], "bar": bar["bar"], "passed": passed}
        if not passed:
            failed.append(f"{metric} {float(bar['value']):.4g} (needs {bar['op']} {float(bar['bar']):.4g})")
    if failed:
        return Check("bars", False, "misses " + "; ".join(failed), results)
    return Check("bars", True, f"all {len(results)} bars pass", results)


def worse_by(metric: str, challenger: float, stable: float) -> float:
    """How much worse the challenger is (> 0: worse), in the metric's units."""
    return challenger - stable if metric in LOWER_IS_BETTER else stable - challenger


def compare_metrics(
    name: str, challenger: dict[str, Any], stable: dict[str, Any], keys: tuple[str, ...]
) -> tuple[bool, dict[str, Any], list[str]]:
    """Per key metric: both values, the tolerance from the card, and whether the challenger is worse."""
    tolerance = cards.get(name).promotion_tolerance
    rows, worse = {}, []
    for k in keys:
        if not isinstance(challenger.get(k), int | float) or not isinstance(stable.get(k), int | float):
            rows[k] = {"challenger": challenger.get(k), "stable": stable.get(k), "worse": True}
            worse.append(f"{k} is not recorded for both versions")
            continue
        c, s = float(challenger[k]), float(stable[k])
        tol = float(tolerance.get(k, 0.0))
        bad = worse_by(k, c, s) > tol
        rows[k] = {"challenger": c, "stable": s, "tolerance": tol, "worse": bad}
        if bad:
            worse.append(f"{k} {c:.4g} vs stable {s:.4g} (tolerance {tol:g})")
    return not worse, rows, worse


def common_test_ids(challenger_dir: Path, stable_dir: Path) -> list:
    """Row ids in both versions' recorded test splits, in the challenger's order."""
    a = read_json(Path(challenger_dir) / TEST_SPLIT)["test_ids"]
    b = {json.dumps(i) for i in read_json(Path(stable_dir) / TEST_SPLIT)["test_ids"]}
    return [i for i in a if json.dumps(i) in b]


def _key_metrics(name: str, metrics: dict[str, Any]) -> tuple[str, ...]:
    try:
        from training import recipes

        return tuple(recipes.get(name).key_metrics)
    except ImportError:  # a serving-only install: the bars' metrics stand in for the recipe's
        return tuple(k for k in (metrics.get("quality_bars") or {}) if k in (metrics.get("test") or {}))


def score_on_data(name: str, models: dict[str, Any], ids: list, data_dir: Path) -> dict[str, dict[str, Any]]:
    """Each loaded model's test metrics on the rows ``ids`` of the real dataset (training's loaders)."""
    from training import evaluate_bundle as EB
    from training import train as T

    raw, y = EB.test_rows(name, ids, T.load_dataset(name, data_dir))
    return {
        role: EB.metrics_from_outputs(name, m.bundle.preprocessing, y, m.forward(m.model_input(raw)))
        for role, m in models.items()
    }


def check_vs_stable(name: str, model: Any, stable: Any, data_dir: Path | None) -> tuple[Check, bool]:
    """(c): the challenger against the stable version; returns the check and whether --force is needed."""
    if stable is None:
        return Check("vs-stable", True, "no stable version to compare with"), False
    if stable.version == model.version:
        return Check("vs-stable", True, f"{model.version} is the stable version"), False
    keys = _key_metrics(name, model.bundle.metrics)
    ids = common_test_ids(model.bundle.root, stable.bundle.root)
    reason = None
    if data_dir is None:
        reason = "no data directory (--data-dir or DLQR_DATA_DIR)"
    elif not ids:
        reason = "the two test splits share no row"
    else:
        try:
            got = score_on_data(name, {"challenger": model, "stable": stable}, ids, data_dir)
        except ImportError as exc:
            reason = f"the training extras are not installed ({exc.name})"
        except Exception as exc:  # the loaders raise DataError, OSError, ...: fall back and say why
            reason = f"the data could not be read: {type(exc).__name__}: {exc}"
    if reason is not None:
        ok, rows, worse = compare_metrics(
            name, model.bundle.metrics.get("test", {}), stable.bundle.metrics.get("test", {}), keys
        )
        detail = f"recorded test figures only ({reason}): " + (
            "not worse than " + stable.version if ok else "; ".join(worse))  # fmt: skip
        evidence = {"stable": stable.version, "source": "recorded", "why": reason, "metrics": rows}
        return Check("vs-stable", ok, detail, evidence), True
    ok, rows, worse = compare_metrics(name, got["challenger"], got["stable"], keys)
    detail = (f"not worse than {stable.version} on {len(ids)} shared test rows" if ok
              else f"worse than {stable.version} on {len(ids)} shared test rows: " + "; ".join(worse))  # fmt: skip
    evidence = {"stable": stable.version, "source": "data", "rows": len(ids), "metrics": rows}
    return Check("vs-stable", ok, detail, evidence), False


def run(name: str, bundle_dir: Path, stable_dir: Path | None, data_dir: Path | None) -> Verdict:
    """The whole gate for ``bundle_dir`` against the stable version at ``stable_dir`` (None: none)."""
    verify, model = check_verify(name, bundle_dir)
    version = model.version if model is not None else Path(bundle_dir).name
    checks = [verify]
    try:
        metrics = model.bundle.metrics if model is not None else read_json(Path(bundle_dir) / "metrics.json")
        checks.append(check_bars(metrics))
    except BundleError as exc:
        checks.append(Check("bars", False, str(exc)))
    if model is None:
        checks.append(Check("vs-stable", False, "not compared: the bundle does not verify"))
        return Verdict(name, version, checks)
    stable = None
    if stable_dir is not None and Path(stable_dir).resolve() != Path(bundle_dir).resolve():
        sv, stable = check_verify(name, stable_dir)
        if stable is None:
            checks.append(Check("vs-stable", False, f"the stable version does not verify: {sv.detail}"))
            return Verdict(name, version, checks)
    elif stable_dir is not None:
        stable = model
    check, needs_force = check_vs_stable(name, model, stable, data_dir)
    checks.append(check)
    return Verdict(name, version, checks, needs_force=needs_force)
