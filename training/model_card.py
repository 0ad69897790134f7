"""MODEL_CARD.md for a bundle, rendered only from the bundle's own facts.

:func:`render` is a pure function of the bundle's documents (manifest,
metrics, preprocessing): every figure on the card is read from them, so the
card can never disagree with ``metrics.json``. Export writes the card into the
bundle before sealing it, so ``manifest.json`` hashes it like every other file.
The only prose not taken from the bundle is each model's title, intended use
and known caveats, declared in its training recipe (:mod:`training.recipes`).
"""

from __future__ import annotations

from typing import Any

from training import recipes

CARD_FILE = "MODEL_CARD.md"

BASELINE_NAMES = {
    "HistGradientBoostingRegressor": "gradient-boosted trees (scikit-learn HistGradientBoostingRegressor)",
    "HistGradientBoostingClassifier": "gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)",
    "LogisticRegression": "multinomial logistic regression (scikit-learn LogisticRegression)",
}


def _f(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _kind(name: str | None) -> str | None:
    """The task kind of a registered model, or None for an unknown name."""
    from dlqr import card

    try:
        return card.get(name or "").task.kind
    except card.UnknownModel:
        return None


def _metric_rows(name: str, m: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of one metrics entry, by the model's task kind."""
    if not m:
        return []
    kind = _kind(name)
    if kind == "regression":
        units = recipes.get(name).units
        return [
            (f"MAE ({units})", _f(m.get("mae"))),
            ("MAE (sd)", _f(m.get("mae_scaled"))),
            (f"RMSE ({units})", _f(m.get("rmse"))),
            ("R²", _f(m.get("r2"))),
        ]
    if kind == "binary":
        return [
            ("ROC AUC", _f(m.get("roc_auc"))),
            ("accuracy", _f(m.get("accuracy"))),
            ("precision", _f(m.get("precision"))),
            ("recall", _f(m.get("recall"))),
            ("F1", _f(m.get("f1"))),
            ("threshold", _f(m.get("threshold"))),
        ]
    return [("accuracy", _f(m.get("accuracy")))]


def _metrics_table(name: str, metrics: dict[str, Any]) -> list[str]:
    base = metrics.get("baseline") or {}
    book = metrics.get("book_row_split") or {}
    cols = [
        ("network, test", metrics.get("test")),
        ("network, val", metrics.get("val")),
        ("baseline, test", base.get("test")),
    ]
    if book:
        cols.append(("network on the book's random row split, test", book.get("test")))
    cols = [(label, m) for label, m in cols if m]
    rows = {label: dict(_metric_rows(name, m)) for label, m in cols}
    keys = [k for k, _ in _metric_rows(name, metrics.get("test", {}))]
    lines = [
        "| metric | " + " | ".join(label for label, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(rows[label].get(k, "") for label, _ in cols) + " |")
    if metrics.get("test", {}).get("n"):
        lines += [
            "",
            f"Test rows: {_f(metrics['test']['n'])} (the test split was evaluated once, after training).",
        ]
    return lines


def _split_lines(split: dict[str, Any]) -> list[str]:
    lines = [f"- strategy: `{split.get('strategy')}`, seed {split.get('seed')}"]
    sizes = split.get("sizes") or {}
    if sizes:
        lines.append("- rows: " + ", ".join(f"{k} {_f(v)}" for k, v in sizes.items()))
    for key, label in (
        ("recordings", "recordings"),
        ("distinct_inputs", "distinct input vectors"),
        ("positives", "positives"),
    ):
        if split.get(key):
            lines.append(f"- {label}: " + ", ".join(f"{k} {_f(v)}" for k, v in split[key].items()))
    if "test_inputs_also_in_train_or_val" in split:
        lines.append(
            f"- test input vectors also present in train or val: {split['test_inputs_also_in_train_or_val']}"
        )
    if split.get("groups"):
        lines.append(f"- grouping: {split['groups']}")
    if split.get("id_kind"):
        lines.append(f"- ids in `test_split.json`: {split['id_kind']}")
    return lines


def _model_lines(manifest: dict[str, Any], prep: dict[str, Any]) -> list[str]:
    hp = manifest.get("hyperparameters", {})
    model = hp.get("model", {})
    train = hp.get("train", {})
    members = int(model.get("members", 1))
    arch = "-".join(str(u) for u in model.get("hidden", []))
    lines = [
        f"- recipe `{manifest.get('recipe')}`: {manifest.get('description', '')}",
        f"- dense network, hidden layers {arch} ({model.get('activation')})"
        + (
            f"; an average of {members} such networks trained side by side, folded into one Dense model"
            if members > 1
            else ""
        ),
        f"- dropout {model.get('dropout', 0)}, L2 {model.get('l2', 0)}; loss `{train.get('loss')}`, "
        f"optimizer {train.get('optimizer')} (lr {train.get('learning_rate')}), batch {train.get('batch_size')}",
    ]
    if prep.get("input_transform"):
        lines.append(
            f"- input transform `{prep['input_transform']['type']}` (applied by the shared preprocessing "
            "before the scaler, in training and serving alike)"
        )
    logs = (prep.get("input_scaler") or {}).get("log1p_features")
    if logs:
        lines.append(f"- log1p before scaling: {', '.join(logs)}")
    tr = manifest.get("training", {})
    if tr:
        lines.append(
            f"- trained {tr.get('epochs_run')} epochs (best {tr.get('best_epoch')}) in {_f(tr.get('seconds'), 1)} s, "
            f"Keras backend {manifest.get('backend')}"
        )
    return lines


def render(bundle: dict[str, Any]) -> str:
    """The model card of one bundle: ``{"manifest": ..., "metrics": ..., "preprocessing": ...}``."""
    manifest, metrics, prep = bundle["manifest"], bundle["metrics"], bundle["preprocessing"]
    name = manifest.get("model") or prep.get("model")
    recipe = recipes.find(name)
    out = [
        f"# Model card: {recipe.title if recipe else name}",
        "",
        f"Version `{manifest.get('version')}`, created {manifest.get('created')}, "
        f"git commit `{manifest.get('git_commit')}`. Every figure below is read from this bundle's "
        "`metrics.json`, `preprocessing.json` and `manifest.json`.",
        "",
        "## Intended use and limits",
        "",
        recipe.intended_use if recipe else "",
        "",
        "## Data and split",
        "",
        f"- data set: {manifest.get('data', {}).get('dataset')}, payload sha256 "
        + ", ".join(
            f"`{k}` {v[:16]}..." for k, v in (manifest.get("data", {}).get("payload_sha256") or {}).items()
        ),
        *_split_lines(manifest.get("split") or {}),
    ]
    if manifest.get("subsampled_max_rows"):
        out.append(
            f"- **subsampled** to at most {manifest['subsampled_max_rows']} rows per split (a quick check)"
        )
    out += ["", "## Model", "", *_model_lines(manifest, prep), "", "## Metrics", ""]
    out += _metrics_table(name, metrics)
    base = metrics.get("baseline")
    if base:
        out += [
            "",
            f"Baseline: {BASELINE_NAMES.get(base.get('model'), base.get('model'))}, fitted on the same "
            f"train split and the same network inputs ({base.get('n_iter', '-')} iterations, "
            f"{_f(base.get('fit_seconds'), 1)} s); figures only, no model file.",
        ]
    bars = metrics.get("quality_bars") or {}
    if bars:
        out += ["", "Quality bars on the test split:"]
        out += [
            f"- {k} {_f(v['value'])} {v['op']} {v['bar']:.4g}: {'passed' if v['passed'] else 'NOT met'}"
            for k, v in bars.items()
        ]
    op = metrics.get("operating_point")
    if op:
        how = (
            "the threshold maximising F1 on the validation split"
            if op.get("policy") == "max_f1"
            else f"the highest threshold whose validation recall is >= {op.get('min_recall')}"
        )
        out += [
            "",
            "## Operating point",
            "",
            f"`seizure` is true when the probability is >= **{_f(op['value'])}**, chosen as {how} "
            f"(policy `{op.get('policy')}`; the test split played no part). On validation: precision "
            f"{_f(op.get('val_precision'))}, recall {_f(op.get('val_recall'))}, F1 {_f(op.get('val_f1'))}.",
        ]
    out += ["", "## Caveats", ""]
    out += [f"- {c}" for c in (recipe.caveats if recipe else ())]
    book = metrics.get("book_row_split")
    if book:
        out.append(
            "- The *book's random row split* column is the same recipe trained and tested on the book's "
            "leaky split: a comparison, not this bundle's model."
        )
    out += [
        "",
        "## Provenance",
        "",
        f"Library versions: {', '.join(f'{k} {v}' for k, v in (manifest.get('library_versions') or {}).items())}. "
        "`manifest.json` records the hyper-parameters, data checksums, split seed and the sha256 of every "
        "file in the bundle, this card included; `test_split.json` lists the test rows so anyone can "
        "recompute the test figures (`python -m training evaluate`).",
        "",
    ]
    return "\n".join(out)
