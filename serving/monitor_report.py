"""``python -m serving monitor report <model> --logs DIR [--labels FILE] --out DIR``.

Reads the payload logs (:mod:`serving.payload_log`) of every process and replica in
``DIR`` (``payload-*.jsonl`` and their rotated files), orders the lines by time,
cuts the model's rows into windows of ``--window-rows`` rows and writes
``DIR_OUT/index.html`` with PNG plots:

- each profiled feature's distribution over the reference bins, training
  reference against each window (the features with the highest PSI);
- a PSI table (window x feature) and the KS distance of the worst feature;
- prediction drift over time (PSI of the predictions, and their mean);
- with ``--labels`` (CSV ``request_id,label[,index]``; ``index`` is the instance's
  position in its request, 0 if absent): live quality per window beside the
  bundle's test figures, computed by the training code's own metric functions
  (:func:`training.evaluate_bundle.metrics_from_outputs`), so all labelled rows
  together give what ``python -m training evaluate`` gives on the same rows.

Bad input never stops the report: a line that is not JSON (a truncated last
line of a full disk), an instance that is redacted or invalid, a label naming
an unknown request id are each counted, named in a message (first few file:line)
and left out; the report covers the good lines. The PSI/KS are
:mod:`dlqr.drift`'s, as the live monitor computes them. Plotting needs
matplotlib, part of the training extra (``pip install '.[train]'``).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from dlqr import bundle as B
from dlqr import drift, repository
from dlqr.card import get as get_card
from serving.monitor import Profile, Window, window_statistics
from serving.payload_log import FILE_PREFIX

#: Messages show at most this many example locations per problem.
EXAMPLES = 3


class ReportError(Exception):
    """Nothing to report on (no log files, no line of the model, unknown model...)."""


@dataclass
class Problems:
    """What was left out, with a few example locations each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < EXAMPLES:
            ex.append(where)

    def lines(self) -> list[str]:
        return [
            f"{n} {kind} left out (e.g. {', '.join(self.examples[kind])})" for kind, n in self.counts.items()
        ]


@dataclass
class Rows:
    """The model's logged rows in time order."""

    version: str
    times: list[str]
    request_ids: list[str]
    index: list[int]  #: position of the instance in its request
    rows: np.ndarray  #: (n, d) API units, bundle feature order
    outputs: np.ndarray  #: (n, k) raw outputs


def log_files(logs: Path) -> list[Path]:
    """Every payload log file in ``logs`` (current and rotated, all hosts and pids)."""
    if not logs.is_dir():
        raise ReportError(f"--logs {logs}: not a directory")
    files = sorted(
        p for p in logs.iterdir() if p.is_file() and p.name.startswith(FILE_PREFIX) and ".jsonl" in p.name
    )
    if not files:
        raise ReportError(f"--logs {logs}: no payload log files ({FILE_PREFIX}*.jsonl*) in it")
    return files


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_lines(
    files: list[Path], model: str, problems: Problems, every: int = 10_000
) -> Iterator[dict[str, Any]]:
    """The model's parsed lines; bad lines are counted in ``problems``. Prints progress on long inputs."""
    seen, t0 = 0, time.monotonic()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for no, text in enumerate(fh, 1):
                seen += 1
                if seen % every == 0:
                    progress(f"  read {seen:,} lines ({time.monotonic() - t0:.0f} s)")
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                    ok = isinstance(rec, dict) and {"model", "version", "inputs", "outputs"} <= rec.keys()
                except json.JSONDecodeError:
                    ok = False
                if not ok:
                    problems.add("unreadable lines (truncated or not a payload record)", f"{path.name}:{no}")
                    continue
                if rec["model"] == model:
                    rec["_where"] = f"{path.name}:{no}"
                    yield rec
    progress(f"  read {seen:,} lines from {len(files)} file(s)")


def collect(model: str, records: list[dict[str, Any]], features: tuple[str, ...], version: str | None,
            problems: Problems) -> Rows:  # fmt: skip
    """Rows of one version (the named one, else the most logged) in time order."""
    if not records:
        raise ReportError(f"no line of model {model!r} in the logs")
    versions: dict[str, int] = {}
    for r in records:
        versions[r["version"]] = versions.get(r["version"], 0) + 1
    version = version or max(versions, key=lambda v: versions[v])
    if version not in versions:
        raise ReportError(f"no line of {model} version {version} in the logs (logged: {', '.join(versions)})")
    for v, n in versions.items():
        if v != version:
            problems.add(f"lines of other versions than {version}", f"{n} of {v}")
    card = get_card(model)
    adapter = TypeAdapter(card.instance)
    keep = sorted((r for r in records if r["version"] == version), key=lambda r: r.get("time") or "")
    times, rids, index, rows, outs = [], [], [], [], []
    for r in keep:
        for i, (inst, out) in enumerate(zip(r["inputs"], r["outputs"], strict=False)):
            try:
                row = card.rows([adapter.validate_python(inst)], features)[0]
            except (ValidationError, ValueError, TypeError):
                problems.add("instances redacted or invalid", f"{r['_where']} #{i}")
                continue
            times.append(r.get("time") or "")
            rids.append(str(r.get("request_id")))
            index.append(i)
            rows.append(row)
            outs.append(out)
    if not rows:
        raise ReportError(f"no usable instance of {model} {version} in the logs")
    return Rows(version, times, rids, index, np.asarray(rows, np.float64), np.asarray(outs, np.float64))


def read_labels(path: Path, rows: Rows, problems: Problems) -> np.ndarray:
    """Labels aligned with ``rows`` (NaN where none); unknown request ids are counted."""
    pos = {(rid, i): k for k, (rid, i) in enumerate(zip(rows.request_ids, rows.index, strict=True))}
    y = np.full(len(rows.request_ids), np.nan)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"request_id", "label"} <= set(reader.fieldnames):
            raise ReportError(
                f"--labels {path}: needs a header with request_id and label (and optionally index)"
            )
        for no, rec in enumerate(reader, 2):
            try:
                key = (rec["request_id"], int(rec.get("index") or 0))
                value = float(rec["label"])
            except (TypeError, ValueError):
                problems.add("unreadable label lines", f"{path.name}:{no}")
                continue
            if key not in pos:
                problems.add("labels with request ids not in the logs", f"{path.name}:{no} {key[0]}")
                continue
            y[pos[key]] = value
    return y


@dataclass
class WindowStats:
    start: str
    end: str
    rows: int
    psi: dict[str, float]
    ks: dict[str, float]
    counts: np.ndarray  #: (k, 10) feature bin counts
    prediction_counts: np.ndarray
    prediction_mean: float
    live: dict[str, float] | None = None
    labelled: int = 0


def windows(prof: Profile, rows: Rows, size: int) -> list[WindowStats]:
    """Consecutive windows of ``size`` rows (the last one may be shorter), as the monitor computes them."""
    out = []
    values = drift.profile_rows(prof.card, rows.rows, prof.features)
    preds = drift.prediction_values(prof.reference.task, rows.outputs, prof.prep)
    for s in range(0, len(values), size):
        v, p = values[s : s + size], preds[s : s + size]
        w = Window(0.0, 1, len(v), prof.feature_bins(v), prof.reference.prediction.bins(p), [v], [p])
        psi, ks = window_statistics(prof, w)
        out.append(WindowStats(rows.times[s], rows.times[min(s + size, len(values)) - 1], len(v), psi, ks,
                               w.feature_counts, w.prediction_counts, float(np.mean(p))))  # fmt: skip
    return out


def live_quality(model: str, prep: dict[str, Any], y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Key test metrics of the labelled rows (the training code's own functions)."""
    from training.evaluate_bundle import key_metrics, metrics_from_outputs

    try:
        m = metrics_from_outputs(model, prep, y, out)
    except ValueError:  # e.g. ROC AUC of a window with one class only
        return {k: float("nan") for k in key_metrics(model)}
    return {k: float(m[k]) for k in key_metrics(model)}


# ------------------------------------------------------------------- plotting


def _plt():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ReportError(
            "the report's plots need matplotlib, part of the training extra: pip install '.[train]'"
        ) from None
    matplotlib.use("Agg")  # headless; never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_feature(f: drift.FeatureRef, i: int | None, ws: list[WindowStats], path: Path, title: str) -> None:
    """Bin shares: the reference as bars, each window as a line (at most 8, evenly spread)."""
    plt = _plt()
    ref = f.counts / f.counts.sum()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(f.n_bins)
    ax.bar(x, ref, color="#bbbbbb", label="training reference")
    shown = ws if len(ws) <= 8 else [ws[int(j)] for j in np.linspace(0, len(ws) - 1, 8)]
    for w in shown:
        c = (w.counts[i, : f.n_bins] if i is not None else w.prediction_counts[: f.n_bins]).astype(float)
        ax.plot(x, c / max(c.sum(), 1), marker="o", ms=3, alpha=0.8, label=f"window {ws.index(w) + 1}")
    if f.numeric:
        edges = [f"{e:.3g}" for e in f.edges]
        labels = [f"<={edges[0]}", *[f"<={e}" for e in edges[1:]], f">{edges[-1]}"] if edges else ["all"]
    else:
        labels = [str(j) for j in range(f.n_bins)]
    ax.set_xticks(x, labels, rotation=45, fontsize=7, ha="right")
    ax.set_ylabel("share of rows")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_series(xs: list[int], series: dict[str, list[float]], path: Path, title: str, ylabel: str,
                lines: dict[str, float] | None = None) -> None:  # fmt: skip
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    for name, y in (lines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="grey")
        ax.annotate(name, (xs[0], y), fontsize=7, va="bottom")
    ax.set_xlabel("window")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------- report


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.3f}"


def report(model: str, logs: Path, out: Path, *, labels: Path | None = None, artifacts: Path | None = None,
           version: str | None = None, window_rows: int = 500, top: int = 8) -> dict[str, Any]:  # fmt: skip
    """Write ``out/index.html`` and its PNGs; returns a summary (windows, PSI, live figures, problems)."""
    from serving.monitor import load_profile
    from serving.settings import default_artifacts_dir

    _plt()  # fail first, before reading anything, when matplotlib is missing
    card = get_card(model)
    problems = Problems()
    files = log_files(logs)
    progress(f"reading {len(files)} payload log file(s) from {logs}")
    records = list(read_lines(files, model, problems))
    artifacts = artifacts or default_artifacts_dir()
    vnames = {r["version"] for r in records}
    probe_version = version or (
        max(vnames, key=lambda v: sum(r["version"] == v for r in records)) if vnames else None
    )
    vdir = repository.version_dir(artifacts / model, probe_version) if probe_version else None
    if vdir is None:
        if not records:
            raise ReportError(f"no line of model {model!r} in the logs")
        raise ReportError(f"no bundle of {model} version {probe_version} under {artifacts / model}")
    b = B.load_bundle(vdir, model)
    features = tuple(b.preprocessing["features"])
    rows = collect(model, records, features, probe_version, problems)

    @dataclass
    class _Loaded:  # what load_profile reads of a loaded model
        card: Any
        bundle: Any
        prep: dict[str, Any]
        features: tuple[str, ...]

    prof = load_profile(_Loaded(card, b, b.preprocessing, features))
    if prof is None:
        raise ReportError(f"{vdir} has no reference.json: python -m training add-reference {vdir}")
    ws = windows(prof, rows, window_rows)
    progress(f"{len(rows.rows):,} rows of {model} {rows.version} in {len(ws)} window(s) of {window_rows}")
    y = read_labels(labels, rows, problems) if labels is not None else None
    live_all = None
    if y is not None:
        for j, w in enumerate(ws):
            sl = slice(j * window_rows, j * window_rows + w.rows)
            have = ~np.isnan(y[sl])
            w.labelled = int(have.sum())
            if have.any():
                w.live = live_quality(model, b.preprocessing, y[sl][have], rows.outputs[sl][have])
        have = ~np.isnan(y)
        if have.any():
            live_all = live_quality(model, b.preprocessing, y[have], rows.outputs[have])
            live_all["rows"] = int(have.sum())
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in prof.reference.features]
    worst = sorted(names, key=lambda n: -max((w.psi[n] for w in ws if np.isfinite(w.psi[n])), default=0.0))
    shown = worst[:top]
    imgs = []
    for n in [*shown, drift.PREDICTION]:
        i = names.index(n) if n != drift.PREDICTION else None
        f = prof.reference.features[i] if i is not None else prof.reference.prediction
        p = out / f"dist_{n}.png"
        plot_feature(f, i, ws, p, f"{model} {rows.version}: {n}, reference vs windows")
        imgs.append(p.name)
    xs = list(range(1, len(ws) + 1))
    plot_series(xs, {"PSI of the predictions": [w.psi[drift.PREDICTION] for w in ws],
                     "highest feature PSI": [max(w.psi[n] for n in names) for w in ws]},
                out / "prediction_drift.png", f"{model}: drift over time", "PSI", {"alert line 0.2": 0.2})  # fmt: skip
    plot_series(xs, {"mean prediction": [w.prediction_mean for w in ws]}, out / "prediction_mean.png",
                f"{model}: mean prediction per window", "prediction")  # fmt: skip
    test = b.metrics.get("test", {})
    if y is not None and any(w.live for w in ws):
        keys = list(live_all or {})
        keys = [k for k in keys if k != "rows"]
        plot_series(xs, {k: [(w.live or {}).get(k, float("nan")) for w in ws] for k in keys},
                    out / "live_quality.png", f"{model}: live quality per window (dashed: bundle test)", "value",
                    {f"test {k}": float(test[k]) for k in keys if k in test})  # fmt: skip
    html_text = render_html(model, rows, ws, names, shown, imgs, test, live_all, problems, y is not None)
    (out / "index.html").write_text(html_text, encoding="utf-8")
    return {
        "model": model,
        "version": rows.version,
        "rows": int(len(rows.rows)),
        "windows": len(ws),
        "max_psi": max(max(v for v in w.psi.values() if np.isfinite(v)) for w in ws),
        "live": live_all,
        "problems": problems.lines(),
        "out": str(out / "index.html"),
    }


def render_html(model, rows, ws, names, shown, imgs, test, live_all, problems, labelled) -> str:
    e = html.escape
    head = ["window", "rows", "from", "to", "prediction", *shown]
    trs = []
    for j, w in enumerate(ws, 1):
        cells = [str(j), str(w.rows), e(w.start), e(w.end), _fmt(w.psi[drift.PREDICTION])]
        cells += [f'<td class="{"hot" if w.psi[n] > 0.2 else ""}">{_fmt(w.psi[n])}</td>' for n in shown]
        trs.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells[:5]) + "".join(cells[5:]) + "</tr>")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(model)} monitoring report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;font-size:13px}.hot{background:#fcc}</style></head><body>",
        f"<h1>{e(model)} {e(rows.version)}: monitoring report</h1>",
        f"<p>{len(rows.rows):,} logged rows in {len(ws)} windows; PSI and KS against the bundle's training "
        "reference (the drift monitor's statistics). PSI above 0.2 is highlighted.</p>",
    ]
    if problems.counts:
        parts.append(
            "<h2>Left out</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in problems.lines()) + "</ul>"
        )
    parts.append(
        f"<h2>PSI per window</h2><p>The {len(shown)} features with the highest PSI of {len(names)}.</p>"
    )
    parts.append(
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>" + "".join(trs) + "</table>"
    )
    parts.append(
        "<h2>Prediction drift over time</h2><img src='prediction_drift.png'><img src='prediction_mean.png'>"
    )
    if labelled:
        parts.append("<h2>Live quality</h2>")
        if live_all:
            rows_ = "".join(f"<tr><td>{e(k)}</td><td>{_fmt(v)}</td><td>{_fmt(float(test.get(k, 'nan')))}</td></tr>"
                            for k, v in live_all.items() if k != "rows")  # fmt: skip
            parts.append(f"<p>{live_all['rows']:,} labelled rows.</p><table><tr><th>metric</th><th>live</th>"
                         f"<th>bundle test</th></tr>{rows_}</table><img src='live_quality.png'>")  # fmt: skip
        else:
            parts.append("<p>No label matched a logged row.</p>")
    parts.append("<h2>Distributions: reference vs windows</h2>")
    parts += [f"<img src='{e(i)}'>" for i in imgs]
    parts.append("</body></html>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving monitor", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("report", help="HTML drift (and live quality) report from payload logs")
    rp.add_argument("model")
    rp.add_argument("--logs", type=Path, required=True, help="directory of payload log files (all replicas)")
    rp.add_argument("--labels", type=Path, help="CSV with request_id,label[,index]")
    rp.add_argument("--out", type=Path, required=True, help="directory for index.html and the PNGs")
    rp.add_argument("--artifacts", type=Path, help="model repository (default: DLQR_ARTIFACTS_DIR's default)")
    rp.add_argument("--version", help="version to report on (default: the most logged one)")
    rp.add_argument("--window-rows", type=int, default=500, help="rows per window (default 500)")
    args = ap.parse_args(argv)
    try:
        get_card(args.model)
        res = report(args.model, args.logs, args.out, labels=args.labels, artifacts=args.artifacts,
                     version=args.version, window_rows=max(1, args.window_rows))  # fmt: skip
    except (ReportError, B.BundleError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in res["problems"]:
        print(f"warning: {line}", file=sys.stderr)
    print(json.dumps({k: v for k, v in res.items() if k != "problems"}, indent=2))
    return 0
