"""One model end to end: prepare -> fit -> evaluate -> report -> export.

Kept separate from the CLI so tests can drive it with synthetic datasets.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import repository
from dlqr.card import get as get_card
from training import baselines, recipes
from training import evaluate as E
from training import export as X
from training import train as T


@contextlib.contextmanager
def _phase(phases: dict[str, float], name: str):
    """Add the wall time of the ``with`` body to ``phases[name]`` (printed, never written to the bundle)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def check_bars(
    name: str, test: dict[str, Any], baseline_test: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Compare test metrics with the quality bars; returns {metric: {value, bar, passed}}.

    The bars are the model's recipe's (:attr:`training.recipes.Recipe.quality_bar`).
    With ``baseline_test``, a recipe with a ``baseline_bar`` also gets a
    ``<metric>_vs_baseline`` entry: the network must do at least as well.
    """
    recipe = recipes.get(name)
    bar = recipe.quality_bar
    metrics = bar["metric"] if isinstance(bar["metric"], list) else [bar["metric"]]
    values = bar["value"] if isinstance(bar["value"], list) else [bar["value"]]
    out = {}
    for m, v in zip(metrics, values, strict=True):
        got = float(test[m])
        out[m] = {
            "value": got,
            "bar": v,
            "op": bar["op"],
            "passed": got <= v if bar["op"] == "<=" else got >= v,
        }
    key = recipe.baseline_bar
    if key and baseline_test:
        got, ref = float(test[key]), float(baseline_test[key])
        out[f"{key}_vs_baseline"] = {"value": got, "bar": ref, "op": bar["op"], "passed": got <= ref}
    return out


def predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=4096, verbose=0), dtype=np.float64)


def evaluate_splits(
    p: T.Prepared, model, op_cfg: dict | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics for train/val/test, by task kind; a binary model's operating point is chosen on val only."""
    out = {k: predict(model, p.x[k]) for k in T.SPLITS}
    metrics: dict[str, Any] = {}
    kind = get_card(p.name).task.kind
    if kind == "regression":
        ts = p.preprocessing["target_scaler"]
        for k in T.SPLITS:
            pred = out[k][:, 0] * ts["scale"] + ts["mean"]
            metrics[k] = E.regression_metrics(p.y_true[k], pred, ts["scale"])
            if k == "test" and recipes.get(p.name).report_unseen_inputs:
                # The UCI table has exact duplicate rows, which a random split puts
                # on both sides; also report test rows whose inputs never occur in train
                # (on the grouped split that is every test row, so nothing to add).
                seen = {tuple(r) for r in p.raw["train"].tolist()}
                unseen = np.array([tuple(r) not in seen for r in p.raw["test"].tolist()])
                if unseen.any() and not unseen.all():
                    metrics["test_unseen_inputs"] = E.regression_metrics(
                        p.y_true[k][unseen], pred[unseen], ts["scale"]
                    )
    elif kind == "binary":
        op_cfg = op_cfg or {}
        op = E.choose_threshold(
            p.y_true["val"], out["val"][:, 0], op_cfg.get("policy", "max_f1"), op_cfg.get("min_recall", 0.95)
        )
        p.preprocessing["threshold"] = op
        metrics["operating_point"] = op
        for k in T.SPLITS:
            metrics[k] = E.binary_metrics(p.y_true[k], out[k][:, 0], op["value"])
    else:
        for k in T.SPLITS:
            metrics[k] = E.multiclass_metrics(p.y_true[k], out[k])
    return metrics, out


def _golden_rows(p: T.Prepared, k: int = 4) -> np.ndarray:
    """A few test rows for the self-test; for classifiers, cover several classes."""
    y = p.y_true["test"]
    per_class = recipes.get(p.name).golden_per_class  # e.g. seizure: 2 of each class; digit: 1 of each
    if per_class is None:
        idx = list(range(min(k, len(y))))
    else:
        idx = sorted(i for cls in np.unique(y) for i in np.flatnonzero(y == cls)[:per_class].tolist())
    return p.raw["test"][idx]


def training_reference(p: T.Prepared, train_outputs: np.ndarray) -> dict[str, Any]:
    """The drift reference profile (:mod:`dlqr.drift`) of the training split and the model's outputs on it."""
    from dlqr import drift

    source = {"split": "train", "rows": int(len(p.raw["train"]))}
    return drift.build_reference(get_card(p.name), p.raw["train"], train_outputs, p.preprocessing, source)


def write_report(
    p: T.Prepared, fitres: T.FitResult, metrics: dict, out: dict, run_dir: Path
) -> dict[str, Path]:
    """Plots (by task kind, titled by the recipe) and the history CSV; returns {file name in report/: path}."""
    rep = run_dir / "report"
    rep.mkdir(parents=True, exist_ok=True)
    files = {"training_curves.png": rep / "training_curves.png", "history.csv": run_dir / "history.csv"}
    E.plot_history(fitres.history, files["training_curves.png"], f"{p.name}: training curves")
    kind = get_card(p.name).task.kind
    titles = recipes.get(p.name).plot_titles
    if kind == "regression":
        ts = p.preprocessing["target_scaler"]
        pred = out["val"][:, 0] * ts["scale"] + ts["mean"]
        files["val_histogram.png"] = rep / "val_histogram.png"
        files["val_scatter.png"] = rep / "val_scatter.png"
        E.plot_wine(p.y_true["val"], pred, files["val_histogram.png"], files["val_scatter.png"])
    elif kind == "binary":
        files["roc_test.png"] = rep / "roc_test.png"
        files["roc_val.png"] = rep / "roc_val.png"
        t = metrics["operating_point"]["value"]
        E.plot_roc(
            p.y_true["test"],
            out["test"][:, 0],
            t,
            files["roc_test.png"],
            titles.get("roc_test", f"{p.name}: test ROC"),
        )
        E.plot_roc(
            p.y_true["val"],
            out["val"][:, 0],
            t,
            files["roc_val.png"],
            titles.get("roc_val", f"{p.name}: validation ROC"),
        )
    else:
        files["confusion_test.png"] = rep / "confusion_test.png"
        cm = metrics["test"]["confusion_matrix"]
        E.plot_confusion(
            cm["matrix"],
            cm["labels"],
            files["confusion_test.png"],
            titles.get("confusion_test", f"{p.name}: test confusion matrix"),
        )
    return {k: v for k, v in files.items() if v.exists()}


def compares_row_split(name: str, cfg: dict) -> bool:
    """Whether a run of ``cfg`` also trains on the book's random row split (see below)."""
    sp = cfg["split"]
    return bool(
        sp.get("compare_row_split")
        and sp.get("strategy") != "rows"
        and recipes.get(name).row_split_comparison
    )


def start_baselines(
    pool: Executor, name: str, cfg: dict, dataset, max_rows: int | None = None
) -> dict[str, Callable[[], dict[str, Any]]]:
    """Start every baseline fit of a run of ``cfg`` in ``pool`` now; pass the result to :func:`run_model`.

    ``{"main": ..., "book": ...}`` (``book`` only with the row-split comparison): the
    same seeded splits :func:`run_model` prepares, so the same figures, but the fits
    can start before the model's turn comes (``train all`` starts all of them first).
    """
    seed, op_cfg = int(cfg["train"]["seed"]), cfg.get("operating_point")
    out = {"main": start_baseline(pool, T.prepare(name, cfg, dataset, max_rows), seed, op_cfg)}
    if compares_row_split(name, cfg):
        pr = T.prepare(name, cfg, dataset, max_rows, strategy="rows")
        out["book"] = start_baseline(pool, pr, seed, op_cfg, splits=("test",))
    return out


def book_split_fit(
    name: str,
    cfg: dict,
    dataset,
    max_rows: int | None,
    run_dir: Path,
    verbose: int | None,
    pr: T.Prepared | None = None,
) -> dict[str, Any]:
    """Train and test the recipe on the book's random row split: ``{"figures", "phases"}``.

    Plain, picklable results (no model), so that it can run in a process of its own
    (:func:`start_book_split`); the baseline on this split is fitted elsewhere. ``pr``:
    the split already prepared (inline runs prepare it once for the fit and the baseline).
    """
    phases: dict[str, float] = {}
    with _phase(phases, "book_prepare"):
        if pr is None:
            pr = T.prepare(name, cfg, dataset, max_rows, strategy="rows")
    with _phase(phases, "book_fit"):
        fr = T.fit(pr, cfg, run_dir / "row_split", verbose)
    with _phase(phases, "book_evaluate"):
        m_rows, _ = evaluate_splits(pr, fr.model, cfg.get("operating_point"))
    figures = {"test": m_rows["test"], "split": pr.split_info, "epochs_run": len(fr.epoch_times)}
    for key in ("operating_point", "test_unseen_inputs"):
        if key in m_rows:
            figures[key] = m_rows[key]
    return {"figures": figures, "phases": phases}


def start_book_split(
    name: str,
    cfg: dict,
    dataset,
    max_rows: int | None,
    run_dir: Path,
    book_pool: Executor,
) -> Callable[[], dict[str, Any]] | None:
    """Start :func:`book_split_fit` in ``book_pool`` now; returns a function that waits for it.

    None unless the recipe supports the comparison (:func:`compares_row_split`). The
    second network then trains while this process trains the first: on a CPU the two
    fits together keep the cores busier than either alone (the CLI's ``--book-workers``).
    The pool's process has the same seeds and thread settings as this one, so the
    figures are the ones a fit here gives.
    """
    if not compares_row_split(name, cfg):
        return None
    # Quiet (verbose 0) over there: its per-epoch lines would interleave with this process's.
    return book_pool.submit(book_split_fit, name, cfg, dataset, max_rows, run_dir, 0).result


def book_split_comparison(
    name: str,
    cfg: dict,
    dataset,
    max_rows: int | None,
    run_dir: Path,
    verbose: int | None,
    phases: dict[str, float] | None = None,
    pool: Executor | None = None,
    baseline: Callable[[], dict[str, Any]] | None = None,
    started: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The same recipe trained and tested on the book's random row split, for comparison.

    The book's split leaks: copies of a wine's input vector, or chunks of one EEG
    recording, land on both sides. Its figures (network and baseline) go to
    ``metrics.json["book_row_split"]`` so the README can show the difference.
    None unless the recipe supports it (``row_split_comparison``), its config asks for it
    (``[split] compare_row_split``) and its own split is not already the row split.
    ``baseline`` waits for a baseline already started on this split (:func:`start_baselines`),
    ``started`` for a fit already started (:func:`start_book_split`).
    """
    if not compares_row_split(name, cfg):
        return None
    phases = {} if phases is None else phases
    pr = None
    if baseline is None:
        pr = T.prepare(name, cfg, dataset, max_rows, strategy="rows")
        seed, op_cfg = int(cfg["train"]["seed"]), cfg.get("operating_point")
        baseline = start_baseline(pool, pr, seed, op_cfg, splits=("test",))
    if started is None:
        book = book_split_fit(name, cfg, dataset, max_rows, run_dir, verbose, pr)
    else:
        with _phase(phases, "book_wait"):  # what the other process's fit still had to do
            book = started()
    phases.update(book["phases"])
    with _phase(phases, "book_baseline"):
        base = baseline()
    fig = book["figures"]
    out = {k: fig[k] for k in ("test", "split", "epochs_run")}
    out["baseline"] = {"model": base["model"], "test": base["test"]}
    out.update({k: fig[k] for k in ("operating_point", "test_unseen_inputs") if k in fig})
    return out


def start_baseline(
    pool: Executor | None, p: T.Prepared, seed: int, op_cfg: dict | None, splits=("val", "test")
) -> Callable[[], dict[str, Any]]:
    """Start the baseline fit on ``p``; returns a function that waits for its figures.

    With ``pool`` (the CLI's process pool) the fit runs in another process while
    the network trains: the baseline is seeded and single-threaded, and sees a copy
    of the same arrays, so its figures are the ones an inline fit gives (only
    ``fit_seconds`` depends on the load). Without a pool it runs inline when waited
    for.
    """
    if pool is None:
        return lambda: baselines.fit_baseline(p, seed, op_cfg, splits)
    # Only what the baseline reads, copied now (evaluation later sets p's threshold).
    slim = dataclasses.replace(
        p, raw={}, ids={}, preprocessing=copy.deepcopy(p.preprocessing), data_info={}, extra={}
    )
    return pool.submit(baselines.fit_baseline, slim, seed, op_cfg, splits).result


def start_model(
    name: str,
    cfg: dict,
    dataset,
    out_dir: Path,
    runs_dir: Path,
    *,
    max_rows: int | None = None,
    version: str | None = None,
    verbose: int | None = None,
    versioned: bool = False,
    pool: Executor | None = None,
    early_baselines: dict[str, Callable[[], dict[str, Any]]] | None = None,
    book_pool: Executor | None = None,
    skip_onnx: bool = False,
) -> Callable[[], dict[str, Any]]:
    """Train and evaluate one model now; returns a function that finishes it: the summary.

    What is left for the returned function is what may wait on other processes (the
    book-split comparison) and the report and export. ``train all`` starts every model
    before it finishes the first, so the main networks train one after another while the
    comparison fits run beside them (on a GPU host, wine's comparison fit alone took 44 s
    longer than its main fit). :func:`run_model` does both at once.

    The bundle goes to ``out_dir/<name>``, or with ``versioned`` (what ``python -m training
    train`` does) to a new version directory ``out_dir/<name>/<version>`` of the model
    repository (:mod:`dlqr.repository`), renamed into place once complete; a flat bundle
    already at ``out_dir/<name>`` is first moved to its own version directory.
    With ``pool`` (a process pool), the scikit-learn baselines fit in it while the
    networks train (:func:`start_baseline`); the figures are the same either way.
    ``early_baselines`` holds baselines already started for this run (:func:`start_baselines`).
    With ``book_pool``, the fit on the book's row split runs there beside this one
    (:func:`start_book_split`). ``skip_onnx`` writes the bundle without ``model.onnx``;
    otherwise a run that could not export it stops here, before the training.
    """
    if not skip_onnx:
        X.require_onnx_export()
    early = early_baselines or {}
    started = dt.datetime.now(dt.UTC)
    version = repository.check_version_name(version or X.new_version(started))
    dest = out_dir / name
    if versioned:
        repository.migrate_flat(dest)
        dest = dest / version
        if dest.exists():
            raise ValueError(f"{dest} already exists: versions are immutable, pick another --version")
    run_dir = runs_dir / name / version
    phases: dict[str, float] = {}
    seed = int(cfg["train"]["seed"])
    with _phase(phases, "prepare"):
        p = T.prepare(name, cfg, dataset, max_rows)
        baseline_result = early.get("main") or start_baseline(pool, p, seed, cfg.get("operating_point"))
        # Beside this fit in the book pool; without one, after it (book_split_comparison).
        book_started = book_pool and start_book_split(name, cfg, dataset, max_rows, run_dir, book_pool)
    with _phase(phases, "fit"):
        fitres = T.fit(p, cfg, run_dir, verbose)
    with _phase(phases, "evaluate"):
        metrics, out = evaluate_splits(p, fitres.model, cfg.get("operating_point"))
    with _phase(phases, "baseline"):
        metrics["baseline"] = baseline_result()

    def finish() -> dict[str, Any]:
        """The rest: book-split comparison, bars, report and the sealed bundle."""
        book = book_split_comparison(
            name, cfg, dataset, max_rows, run_dir, verbose, phases, pool, early.get("book"), book_started
        )
        if book is not None:
            metrics["book_row_split"] = book
            if get_card(name).task.kind == "binary":  # restore the grouped model's threshold
                p.preprocessing["threshold"] = metrics["operating_point"]
        metrics["quality_bars"] = check_bars(name, metrics["test"], metrics["baseline"]["test"])
        with _phase(phases, "report"):
            report = write_report(p, fitres, metrics, out, run_dir)
            golden = X.golden_pairs(name, fitres.model, _golden_rows(p), p.preprocessing)
        train_summary = {
            "epochs_run": len(fitres.epoch_times),
            "best_epoch": fitres.best_epoch + 1,
            "seconds": round(fitres.seconds, 2),
            "mean_epoch_seconds": round(float(np.mean(fitres.epoch_times)), 3)
            if fitres.epoch_times
            else None,
        }
        manifest = {
            "version": version,
            "created": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": X.git_commit(),
            "recipe": cfg.get("recipe", "custom"),
            "description": cfg.get("description", ""),
            "library_versions": X.library_versions(),
            "backend": X.library_versions()["keras_backend"],
            "data": p.data_info,
            "split": p.split_info,
            "hyperparameters": {
                k: cfg[k] for k in ("features", "model", "train", "split", "operating_point") if k in cfg
            },
            "training": train_summary,
            "subsampled_max_rows": max_rows,
            "golden": golden,
        }
        test_split = {"split": p.split_info, "val_ids": p.ids["val"], "test_ids": p.ids["test"]}
        with _phase(phases, "export"):
            sealed = X.export_bundle(
                dest,
                name=name,
                model=fitres.model,
                preprocessing=p.preprocessing,
                metrics=metrics,
                test_split=test_split,
                manifest=manifest,
                report_files=report,
                # ONNX Runtime must reproduce Keras on every test row, not just the goldens.
                check_x=p.x["test"],
                skip_onnx=skip_onnx,
                reference=training_reference(p, out["train"]),
            )
        return {
            "model": name,
            "bundle": str(sealed),
            "version": version,
            "metrics": metrics,
            "phase_seconds": phases,
            **train_summary,
        }

    return finish


def run_model(name: str, cfg: dict, dataset, out_dir: Path, runs_dir: Path, **kw: Any) -> dict[str, Any]:
    """Train, evaluate and export one model; returns a summary for the timing table.

    The same as :func:`start_model` finished at once; see it for the arguments.
    """
    return start_model(name, cfg, dataset, out_dir, runs_dir, **kw)()
