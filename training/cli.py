"""Command line: ``python -m training {train,evaluate,fetch,gpu-check,add-onnx,add-reference}``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dlqr.card import names as model_names
from training import promotion

REPO_ROOT = Path(__file__).resolve().parents[1]


def _quiet_tf(verbose: bool = False) -> None:
    # Before TensorFlow is imported: keep its start-up chatter out of the output unless -v.
    from training.device import quiet_backend_logs

    quiet_backend_logs(verbose)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true", help="show TensorFlow's start-up and C++ log messages"
    )


def _add_bundle_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that re-seals existing bundles from the data."""
    p.add_argument(
        "bundles", type=Path, nargs="+", help="bundle directories, e.g. artifacts/wine/2026.11.27.002728"
    )
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--cache-dir", type=Path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export the models; fetch their datasets; check a GPU.",
    )
    sub = ap.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,fetch,gpu-check,add-onnx,add-reference}"
    )

    tr = sub.add_parser(
        "train",
        help="train, evaluate and export one model or all three",
        description="Train on the real data, evaluate on train/val/test and export a verified bundle.",
    )
    tr.add_argument("model", choices=[*model_names(), "all"])
    tr.add_argument("--epochs", type=int, help="override the recipe's maximum epochs")
    tr.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    tr.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    tr.add_argument("--steps-per-execution", type=int, help="override steps_per_execution")
    tr.add_argument("--seed", type=int, help="override the split and training seed")
    tr.add_argument("--config", type=Path, help="recipe TOML file (only with a single model)")
    tr.add_argument(
        "--split",
        choices=["grouped", "rows"],
        help="override the recipe's split: 'grouped' (wine: by identical inputs, seizure: by recording; "
        "the default recipes) or 'rows' (the book's random rows)",
    )
    tr.add_argument(
        "--recipe", default="default", help="shipped recipe name: 'default' or 'book' (default: %(default)s)"
    )
    tr.add_argument(
        "--data-dir",
        type=Path,
        help="directory with <dataset>/<file> (default: $DLQR_DATA_DIR, else download into the cache; "
        "offline, point this at a local copy)",
    )
    tr.add_argument(
        "--cache-dir", type=Path, help="download cache (default: $DLQR_CACHE_DIR or ~/.cache/dlqr)"
    )
    tr.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "artifacts",
        help="each bundle goes to a new version directory OUT/<model>/<version> (default: artifacts/)",
    )
    tr.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO_ROOT / "runs",
        help="TensorBoard logs, checkpoints and history (default: runs/, not in git)",
    )
    tr.add_argument("--max-rows", type=int, help="subsample each split to at most N rows (quick checks only)")
    tr.add_argument(
        "--version", help="bundle version, also its directory name (default: UTC timestamp YYYY.MM.DD.HHMMSS)"
    )
    tr.add_argument(
        "--baseline-workers",
        type=int,
        default=default_baseline_workers(),
        help="processes that fit the scikit-learn baselines while the networks train (same figures; "
        "0: fit each inline after its network; default: a quarter of the CPU cores, at most 4, so 0 on a "
        "2-core machine where training already uses both: %(default)s)",
    )
    tr.add_argument(
        "--book-workers",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: train the book's-row-split comparison network in a second process while the main "
        "network trains (same figures; on a GPU both share it); 0: after it, in this process "
        "(default: %(default)s)",
    )
    tr.add_argument(
        "--skip-onnx",
        action="store_true",
        help="write bundles without model.onnx where it cannot be exported (e.g. Keras on JAX without "
        "TensorFlow); serving needs it, so add it later with `python -m training add-onnx`. Without "
        "this flag such a run stops before training",
    )
    tr.add_argument(
        "--no-deterministic",
        dest="deterministic",
        action="store_false",
        help="allow non-deterministic GPU kernels (XLA_FLAGS --xla_gpu_deterministic_ops and "
        "TensorFlow's op determinism are on by default, so the same seed gives the same weights)",
    )
    tr.add_argument("-q", "--quiet", action="store_true", help="no per-epoch output")
    promotion.add_arguments(tr)
    _add_verbose(tr)

    ev = sub.add_parser("evaluate", help="recompute a bundle's test metrics from the data and compare")
    ev.add_argument("model", choices=[*model_names(), "all"])
    ev.add_argument("--artifacts", type=Path, default=REPO_ROOT / "artifacts")
    ev.add_argument("--version", help="version to evaluate (default: the greatest under ARTIFACTS/<model>)")
    ev.add_argument("--data-dir", type=Path)
    ev.add_argument("--cache-dir", type=Path)
    _add_verbose(ev)

    fe = sub.add_parser("fetch", help="download (or locate) and verify the datasets")
    fe.add_argument("model", choices=[*model_names(), "all"], nargs="?", default="all")
    fe.add_argument("--data-dir", type=Path)
    fe.add_argument("--cache-dir", type=Path)

    gc = sub.add_parser(
        "gpu-check", help="train each model for a few epochs and print per-epoch times and the device"
    )
    gc.add_argument("--epochs", type=int, default=3)
    gc.add_argument("--data-dir", type=Path)
    gc.add_argument("--cache-dir", type=Path)
    _add_verbose(gc)

    ao = sub.add_parser(
        "add-onnx",
        help="add model.onnx to existing bundles (needs TensorFlow), re-sealing each manifest atomically",
        description="Export model.onnx from each bundle's model.h5 and check ONNX Runtime against Keras "
        "within 1e-5 on the golden pairs and on every row of the recorded test split (when the data "
        "is available), then re-seal the manifest. For bundles trained where ONNX export was impossible "
        "(e.g. on the JAX backend without TensorFlow).",
    )
    _add_bundle_args(ao)
    ao.add_argument(
        "--golden-only", action="store_true", help="check on the golden pairs only (no dataset needed)"
    )
    _add_verbose(ao)

    ar = sub.add_parser(
        "add-reference",
        help="add the drift reference profile (reference.json) to existing bundles, re-sealing atomically",
        description="Profile each bundle's training rows (every row of the dataset neither in the "
        "recorded test nor validation ids) and the outputs of its model.onnx on them, write "
        "reference.json and re-seal the manifest. Every other file keeps its bytes.",
    )
    _add_bundle_args(ar)
    return ap


def default_baseline_workers() -> int:
    """Baseline processes beside the training process: a quarter of the cores, at most 4.

    On a GPU host the CPU idles while the networks train, so the baselines (about a
    minute of single-threaded CPU in all) cost no wall time there. On this project's
    2-core CPU the training already keeps both cores busy: a measured ``train all``
    with one baseline process was not faster (its fits slowed down by what the
    baselines took), so there the default is 0, fitting each inline after its network.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cores // 4)


def _process_pool(workers: int, verbose: bool = False):
    """A pool of ``workers`` processes for the baselines or the book-split fits, or None for 0.

    Spawned, not forked: the parent runs TensorFlow, which does not survive fork.
    """
    if workers <= 0:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from training.device import import_backend_quietly

    # Each worker imports the backend with its start-up notices dropped, like this process.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=import_backend_quietly,
        initargs=(verbose,),
    )


def _models(arg: str) -> list[str]:
    return list(model_names()) if arg == "all" else [arg]


def _fmt(name: str, m: dict) -> str:
    """One line of test figures, by the model's task kind."""
    from dlqr.card import get as get_card
    from training import recipes

    t = m["test"]
    b = (m.get("baseline") or {}).get("test")
    kind = get_card(name).task.kind
    if kind == "regression":
        units = recipes.get(name).units.replace(" ", "")
        s = f"test MAE {t['mae']:.3f} {units} ({t['mae_scaled']:.3f} sd), RMSE {t['rmse']:.3f}"
        return s + (f"; baseline MAE {b['mae_scaled']:.3f} sd" if b else "")
    if kind == "binary":
        s = f"test AUC {t['roc_auc']:.4f}, acc {t['accuracy']:.4f}, F1 {t['f1']:.4f} @ t={t['threshold']:.3f}"
        return s + (f"; baseline AUC {b['roc_auc']:.4f}, acc {b['accuracy']:.4f}" if b else "")
    return f"test accuracy {t['accuracy']:.4f}" + (f"; baseline {b['accuracy']:.4f}" if b else "")


def cmd_train(args) -> int:
    import os

    t_run = time.perf_counter()
    from training import device

    # Before any backend starts (here or in a spawned worker, which inherits os.environ).
    os.environ.update(device.backend_environment(args.deterministic))
    _quiet_tf(args.verbose)
    from training import config as C
    from training import pipeline as P
    from training import recipes
    from training import train as T

    models = _models(args.model)
    if args.config is not None and len(models) > 1:
        raise C.ConfigError("--config applies to a single model, not 'all'")
    cfgs = {}
    for name in models:  # validate every recipe before spending minutes on training
        cfg = C.load_config(name, args.config, args.recipe)
        cfgs[name] = C.apply_overrides(
            cfg,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            steps_per_execution=args.steps_per_execution,
            seed=args.seed,
        )
        strategies = recipes.get(name).split_strategies  # --split name -> this recipe's strategy
        if args.split is not None and strategies:
            cfgs[name]["split"]["strategy"] = strategies.get(args.split, args.split)
    if args.max_rows is not None and args.max_rows < 10:
        raise C.ConfigError("--max-rows must be at least 10")
    from training import console
    from training import export as X

    device.require_gpu_if_asked()  # DLQR_REQUIRE_GPU=1: stop before any data is loaded
    X.require_onnx_export(args.skip_onnx)  # an unservable bundle only when asked for
    print(f"== device: {device.device_description()}", flush=True)
    promotion.pin_current(args.out, models)
    rows = []
    pool = _process_pool(args.baseline_workers, args.verbose)
    book_pool = _process_pool(args.book_workers, args.verbose)
    try:
        datasets, started, t_start = {}, {}, {}
        if pool is not None:  # every model's baselines start now and fit while the networks train
            for name in models:
                t0 = time.perf_counter()
                print(f"== {name}: loading data, starting its baselines", flush=True)
                datasets[name] = T.load_dataset(name, args.data_dir, args.cache_dir)
                started[name] = P.start_baselines(pool, name, cfgs[name], datasets[name], args.max_rows)
                t_start[name] = time.perf_counter() - t0
        # Every model trains before the first is finished: the comparison fits on the
        # book's split (another process) then overlap the next models' main fits.
        pending = []
        for name in models:
            t0 = time.perf_counter()
            if name in datasets:
                ds = datasets.pop(name)
            else:
                print(f"== {name}: loading data", flush=True)
                ds = T.load_dataset(name, args.data_dir, args.cache_dir)
            load_seconds = t_start.get(name, 0.0) + time.perf_counter() - t0
            finish = P.start_model(
                name,
                cfgs[name],
                ds,
                args.out,
                args.runs_dir,
                max_rows=args.max_rows,
                version=args.version,
                verbose=0 if args.quiet else None,
                versioned=True,
                pool=pool,
                early_baselines=started.get(name),
                book_pool=book_pool,
                skip_onnx=args.skip_onnx,
            )
            pending.append((name, finish, load_seconds, time.perf_counter() - t0 + t_start.get(name, 0.0)))
        for name, finish, load_seconds, start_seconds in pending:
            t0 = time.perf_counter()
            summary = finish()
            summary["total_seconds"] = start_seconds + time.perf_counter() - t0
            summary["phase_seconds"] = {"load": load_seconds, **summary["phase_seconds"]}
            rows.append(summary)
            bars = summary["metrics"]["quality_bars"]
            status = console.bar_verdict(bars)
            print(
                f"== {name}: {_fmt(name, summary['metrics'])} [{status}] -> {summary['bundle']}", flush=True
            )
    finally:
        for p in (pool, book_pool):
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
    print("\n" + "\n".join(console.summary_table(rows, time.perf_counter() - t_run)))
    phase_lines = console.phase_table(rows)
    if phase_lines:
        print("\n" + "\n".join(phase_lines))
    return promotion.finish(rows, args.out, args.data_dir or promotion.default_data_dir(), promote=args.promote,
                            allow_below_bar=args.allow_below_bar)  # fmt: skip


def cmd_evaluate(args) -> int:
    _quiet_tf(args.verbose)
    from dlqr import repository
    from training import evaluate_bundle

    ok = True
    for name in _models(args.model):
        model_dir = args.artifacts / name
        found = (
            repository.version_dir(model_dir, args.version)
            if args.version
            else repository.latest_dir(model_dir)
        )
        res = evaluate_bundle.recompute(name, found or model_dir, args.data_dir, args.cache_dir)
        print(json.dumps(res, indent=2))
        ok &= res["matches_bundle"]
    return 0 if ok else 1


def cmd_fetch(args) -> int:
    from training import data as D
    from training import recipes

    datasets = {recipes.get(m).dataset for m in _models(args.model)}
    for spec in D.FILES.values():
        if spec.dataset in datasets:
            path, payload = D.fetch(spec.name, args.data_dir, args.cache_dir)
            print(
                f"ok  {spec.dataset}/{spec.name}  {len(payload):,} bytes  sha256 {spec.payload_sha256[:16]}...  {path}"
            )
    return 0


def cmd_gpu_check(args) -> int:
    _quiet_tf(args.verbose)
    from training import device, gpu_check

    device.require_gpu_if_asked()

    return gpu_check.main(args.epochs, args.data_dir, args.cache_dir)


def cmd_add_onnx(args) -> int:
    _quiet_tf(args.verbose)
    from dlqr import bundle as B
    from dlqr import processing
    from training import evaluate_bundle
    from training import export as X
    from training import train as T

    for bundle_dir in args.bundles:
        b = B.load_bundle(bundle_dir)
        check_x = None
        if not args.golden_only:
            split = B.read_json(Path(bundle_dir) / B.TEST_SPLIT)
            dataset = T.load_dataset(b.name, args.data_dir, args.cache_dir)
            raw, _ = evaluate_bundle.test_rows(b.name, split["test_ids"], dataset)
            check_x = processing.model_input(raw, b.preprocessing)
        info = X.add_onnx(Path(bundle_dir), check_x)
        print(
            f"ok  {b.name} {b.version}: model.onnx added, ONNX Runtime vs Keras max abs diff "
            f"{info['max_abs_diff_vs_keras']:.2e} on {info['rows_checked']} rows -> {bundle_dir}",
            flush=True,
        )
    return 0


def cmd_add_reference(args) -> int:
    from dlqr import bundle as B
    from training import export as X
    from training import recipes
    from training import train as T

    for bundle_dir in args.bundles:
        b = B.load_bundle(bundle_dir)
        if not b.has_onnx:  # before minutes of data loading
            raise B.BundleError("no model.onnx (add it first: python -m training add-onnx)", bundle_dir)
        split = B.read_json(Path(bundle_dir) / B.TEST_SPLIT)
        if "val_ids" not in split or "test_ids" not in split:
            raise B.BundleError(
                "test_split.json records no test_ids/val_ids to rebuild the training split", bundle_dir
            )
        rows = recipes.get(b.name).train_rows(split, T.load_dataset(b.name, args.data_dir, args.cache_dir))
        expected = (split.get("split") or {}).get("sizes", {}).get("train")
        if expected is not None and expected != len(rows):
            raise B.BundleError(
                f"{len(rows)} training rows rebuilt from the data, but the split recorded {expected}",
                bundle_dir,
            )
        ref = X.add_reference(Path(bundle_dir), rows)
        print(
            f"ok  {b.name} {b.version}: reference.json added ({ref['rows']} training rows, "
            f"{len(ref['features'])} profiled features) -> {bundle_dir}",
            flush=True,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dlqr.bundle import BundleError
    from training.config import ConfigError
    from training.data import DataError
    from training.device import DeviceError
    from training.export import OnnxExportError

    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "fetch": cmd_fetch,
        "gpu-check": cmd_gpu_check,
        "add-onnx": cmd_add_onnx,
        "add-reference": cmd_add_reference,
    }
    try:
        return handlers[args.command](args)
    except (BundleError, ConfigError, DataError, DeviceError, OnnxExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # e.g. a serving-only install (make install-serve)
        print(f"error: {missing_module_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no bundle was written for the model in progress", file=sys.stderr)
        return 130


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """What to do when a training dependency is not installed (the serving-only venv lacks them)."""
    return (
        f"the Python module {exc.name or str(exc)!r} is not installed; training needs the training "
        "dependencies (Keras, TensorFlow, scikit-learn...). Run `make install` "
        "(or: pip install -e '.[cpu,train]')"
    )
