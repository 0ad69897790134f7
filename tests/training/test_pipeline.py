"""End to end: train briefly, export, reload the bundle and reproduce its golden outputs."""

from __future__ import annotations

import numpy as np
import pytest

from dlqr import bundle as B
from dlqr import card as cards
from dlqr import processing
from training import baselines, recipes
from training import config as C
from training import data as D
from training import pipeline as P
from training import train as T


def _synthetic(name: str):
    rng = np.random.default_rng(0)
    if name == "wine":
        x = np.abs(rng.normal(1.0, 0.3, (300, 10)))
        x[:, 7] = 0.99 + 0.01 * rng.random(300)  # density
        x[:, 8] = 3.0 + 0.3 * rng.random(300)  # pH
        x[250:] = x[:50]  # exact duplicate inputs, as in the real table
        return D.WineData(x, 10 + 2 * x[:, 0] - x[:, 3] + 0.1 * rng.normal(size=300), {"synthetic": "0"})
    if name == "seizure":
        groups = np.repeat([f"V{i}" for i in range(40)], 10)
        y = np.repeat((np.arange(40) % 4 == 0).astype(int), 10)
        x = rng.normal(0, 50, (400, 178)) * (1 + 4 * y[:, None])
        ids = np.array([f"X{i % 10 + 1}.{g}" for i, g in enumerate(groups)])
        return D.SeizureData(np.round(x), y, np.where(y == 1, 1, 3), ids, groups, {"synthetic": "0"})
    y_tr, y_te = rng.integers(0, 10, 600), rng.integers(0, 10, 100)

    def imgs(y):
        base = rng.integers(0, 40, (len(y), 28, 28))
        for i, d in enumerate(y):
            base[i, 2 * d : 2 * d + 4, :] = 255  # a class-dependent bar
        return base.astype(np.uint8)

    return D.MnistData(imgs(y_tr), y_tr, imgs(y_te), y_te, {"synthetic": "0"})


def _check_bundle(dest, name):
    import keras
    from pydantic import TypeAdapter

    from serving.loading import OnnxForward, ort_session

    card = cards.get(name)
    b = B.load_bundle(dest, name)
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    onnx = OnnxForward(ort_session(b.onnx_path.read_bytes()))
    assert b.manifest["golden"], "bundle must carry golden pairs"
    adapter = TypeAdapter(card.instance)
    for g in b.manifest["golden"]:
        row = card.rows([adapter.validate_python(g["input"])], b.preprocessing["features"])
        x = processing.model_input(row, b.preprocessing)
        for runtime, out in (("keras", np.asarray(model.predict(x, verbose=0))), ("onnx", onnx(x))):
            np.testing.assert_allclose(out[0], g["raw_output"], rtol=1e-5, atol=1e-6, err_msg=runtime)
            got = card.task.postprocessor(b.preprocessing)(np.asarray(out, dtype=np.float64))[0]
            assert set(got) == set(g["prediction"])
            assert card.task.compare(got, g["prediction"], b.preprocessing) is None, runtime
            for key, expected in g["prediction"].items():
                if isinstance(expected, bool | int) and not isinstance(expected, float):
                    assert got[key] == expected, key  # class / decision must match exactly
                else:
                    np.testing.assert_allclose(got[key], expected, rtol=1e-5, atol=1e-6)
    # model.onnx was checked against Keras on the golden pairs and every test row
    n_test = len(B.read_json(dest / B.TEST_SPLIT)["test_ids"])
    assert b.manifest["onnx"]["rows_checked"] == len(b.manifest["golden"]) + n_test
    assert b.manifest["onnx"]["max_abs_diff_vs_keras"] <= 1e-5
    assert b.manifest["library_versions"]["tf2onnx"] and b.manifest["library_versions"]["onnxruntime"]
    for key in ("version", "created", "git_commit", "library_versions", "data", "split", "hyperparameters"):
        assert key in b.manifest
    assert set(b.metrics) >= {"train", "val", "test", "quality_bars"}
    return b


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_train_export_reload_on_synthetic_data(tmp_path, name):
    cfg = C.apply_overrides(C.load_config(name), epochs=2)
    cfg["split"]["compare_row_split"] = False
    cfg["split"]["validation_size"] = 100
    summary = P.run_model(name, cfg, _synthetic(name), tmp_path / "art", tmp_path / "runs", verbose=0)
    b = _check_bundle(tmp_path / "art" / name, name)
    assert summary["epochs_run"] == 2
    report = {p.name for p in (b.root / "report").iterdir()}
    assert {"training_curves.png", "history.csv"} <= report
    assert (tmp_path / "runs" / name / summary["version"] / "history.csv").exists()
    if name == "seizure":
        op = b.preprocessing["threshold"]
        assert 0.0 <= op["value"] <= 1.0 and op["policy"] == "max_f1"
    # The baseline's figures are in metrics.json and recomputable from the same data and seed.
    again = baselines.fit_baseline(T.prepare(name, cfg, _synthetic(name)), 42, cfg.get("operating_point"))
    assert b.metrics["baseline"]["test"] == again["test"]
    assert b.metrics["baseline"]["model"] == again["model"]
    # The model card is part of the sealed bundle and quotes the bundle's own test figure.
    card = (b.root / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "MODEL_CARD.md" in b.manifest["files"]
    key = {"wine": "mae_scaled", "seizure": "roc_auc", "digit": "accuracy"}[name]
    assert f"{b.metrics['test'][key]:.4f}" in card
    assert f"{b.metrics['baseline']['test'][key]:.4f}" in card
    # The drift reference profile of the training split is sealed in the bundle too.
    from dlqr import drift

    assert drift.REFERENCE_FILE in b.manifest["files"]
    ref = drift.parse_reference(B.read_json(b.root / drift.REFERENCE_FILE))
    assert ref.rows == b.manifest["split"]["sizes"]["train"]
    assert ref.names == drift.profile_names(cards.get(name))


@pytest.mark.slow
def test_wine_book_row_split_comparison_on_synthetic_data(tmp_path):
    cfg = C.apply_overrides(C.load_config("wine"), epochs=2)
    assert cfg["split"]["strategy"] == "grouped_inputs" and cfg["split"]["compare_row_split"]
    P.run_model("wine", cfg, _synthetic("wine"), tmp_path / "art", tmp_path / "runs", verbose=0)
    b = B.load_bundle(tmp_path / "art" / "wine", "wine")
    book = b.metrics["book_row_split"]
    assert book["split"]["strategy"] == "random_rows" and book["test"]["n"] > 0
    assert book["baseline"]["model"] == "HistGradientBoostingRegressor"
    assert b.manifest["split"]["strategy"] == "grouped_inputs"
    assert b.manifest["split"]["test_inputs_also_in_train_or_val"] == 0
    assert "book's random row split" in (b.root / "MODEL_CARD.md").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_train_export_reload_on_real_data_subset(tmp_path, name, real_data_dir):
    cfg = C.apply_overrides(C.load_config(name), epochs=1)
    ds = T.load_dataset(name, real_data_dir)
    P.run_model(name, cfg, ds, tmp_path / "art", tmp_path / "runs", max_rows=400, verbose=0)
    b = _check_bundle(tmp_path / "art" / name, name)
    assert b.manifest["data"]["payload_sha256"] == D.payload_checksums(
        {"wine": "wine", "seizure": "seizure", "digit": "mnist"}[name]
    )
    if name == "seizure":
        assert "book_row_split" in b.metrics  # the comparison run on the book's row split
        split = b.manifest["split"]
        assert split["strategy"] == "grouped"


def test_seizure_prepare_grouped_has_disjoint_recordings():
    ds = _synthetic("seizure")
    p = recipes.get("seizure").prepare(C.load_config("seizure"), ds)
    sides = [{i.split(".", 1)[1] for i in p.ids[k]} for k in T.SPLITS]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])


def test_wine_scalers_fitted_on_train_only():
    ds = _synthetic("wine")
    p = recipes.get("wine").prepare(C.load_config("wine"), ds)
    tr = ds.x[p.ids["train"]].copy()
    log_cols = p.preprocessing["input_scaler"]["log1p"]
    assert log_cols, "the default wine recipe log-transforms the skewed inputs"
    tr[:, log_cols] = np.log1p(tr[:, log_cols])
    np.testing.assert_allclose(p.preprocessing["input_scaler"]["mean"], tr.mean(axis=0))
    # serving's model_input applies the same transform: train rows come out standardised
    np.testing.assert_allclose(p.x["train"].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(p.preprocessing["target_scaler"]["mean"], ds.y[p.ids["train"]].mean())
    assert "quality" not in p.preprocessing["features"] and len(p.preprocessing["features"]) == 10
    assert p.preprocessing["features"][-1] == "sulphates"  # the book's slice dropped it


def test_config_loading_and_errors(tmp_path):
    assert C.load_config("digit", recipe="book")["recipe"] == "book"
    with pytest.raises(C.ConfigError, match="unknown model"):
        C.load_config("cat")
    with pytest.raises(C.ConfigError, match="no recipe"):
        C.load_config("wine", recipe="nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "digit"\n[model]\nhidden=[1]\n')
    with pytest.raises(C.ConfigError, match=r"\[model\] lacks"):
        C.load_config("digit", bad)
    with pytest.raises(C.ConfigError, match="not 'wine'"):
        C.load_config("wine", bad)
    with pytest.raises(C.ConfigError, match="must be positive"):
        C.apply_overrides(C.load_config("wine"), epochs=0)


@pytest.mark.slow
def test_baselines_started_early_in_a_pool_give_the_inline_figures(tmp_path):
    """`train all` starts every baseline first, in worker processes: the bundle's figures do not change."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cfg = C.apply_overrides(C.load_config("wine"), epochs=2)
    inline = P.run_model("wine", cfg, _synthetic("wine"), tmp_path / "a", tmp_path / "runs", verbose=0)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        started = P.start_baselines(pool, "wine", cfg, _synthetic("wine"))
        assert set(started) == {"main", "book"}
        pooled = P.run_model(
            "wine",
            cfg,
            _synthetic("wine"),
            tmp_path / "b",
            tmp_path / "runs",
            verbose=0,
            pool=pool,
            early_baselines=started,
        )

    def figures(m):
        base = {k: v for k, v in m["baseline"].items() if k != "fit_seconds"}
        return base, m["book_row_split"]["baseline"], m["test"], m["book_row_split"]["test"]

    assert figures(pooled["metrics"]) == figures(inline["metrics"])
    assert {"prepare", "fit", "baseline", "book_fit", "book_baseline", "export"} <= set(
        pooled["phase_seconds"]
    )


@pytest.mark.slow
def test_book_split_fit_beside_the_main_one_gives_the_same_figures(tmp_path):
    """`--book-workers 1`: the book-split network trains in another process, with the same result."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cfg = C.apply_overrides(C.load_config("wine"), epochs=2)
    inline = P.run_model("wine", cfg, _synthetic("wine"), tmp_path / "a", tmp_path / "runs-a", verbose=0)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as book_pool:
        pooled = P.run_model(
            "wine",
            cfg,
            _synthetic("wine"),
            tmp_path / "b",
            tmp_path / "runs-b",
            verbose=0,
            book_pool=book_pool,
        )
    book = pooled["metrics"]["book_row_split"]
    assert book == inline["metrics"]["book_row_split"]
    assert book["epochs_run"] == 2 and book["split"]["strategy"] == "random_rows"
    assert {"book_wait", "book_fit", "book_baseline"} <= set(pooled["phase_seconds"])
    assert "book_wait" not in inline["phase_seconds"]
    # The other process wrote its run files where an inline fit writes them.
    assert list((tmp_path / "runs-b" / "wine").glob("*/row_split/*"))
