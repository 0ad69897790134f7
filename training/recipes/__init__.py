"""Training recipes: everything the training side knows about one model, one module per model.

Each module ``training/recipes/<name>.py`` defines ``RECIPE``, a :class:`Recipe`
for the model card of the same name (:mod:`dlqr.card`): which dataset to fetch
and load, how to turn it into model-ready splits, the quality bars, the
scikit-learn baseline, the model card's prose and the report's plot titles.
Generic training code (pipeline, CLI, baselines, evaluation, model card)
dispatches on the recipe and on the card's task kind; nothing outside a card
file, a recipe file or ``training/configs/`` branches on a model's name.
Hyper-parameters stay in ``training/configs/<name>.toml``.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class Recipe:
    """Per-model training facts and hooks; see the module docstring."""

    name: str
    #: Dataset name in :data:`training.data.FILES` that ``python -m training fetch`` downloads.
    dataset: str
    #: ``(data_dir, cache_dir) -> dataset`` (verified, parsed).
    load: Callable[..., Any]
    #: ``(cfg, dataset, max_rows, **kw) -> training.train.Prepared``.
    prepare: Callable[..., Any]
    #: ``(recorded test ids, dataset) -> (raw inputs in API units, natural-unit targets)``.
    test_rows: Callable[[list, Any], tuple[Any, Any]]
    #: ``(test_split.json, dataset) -> raw training inputs in API units``: the rows neither in
    #: the recorded test nor validation ids (``python -m training add-reference``).
    train_rows: Callable[[Mapping[str, Any], Any], Any]
    #: Quality bar on the test split: {"metric": str | [str], "op": "<=" | ">=", "value": ...}.
    quality_bar: Mapping[str, Any]
    #: scikit-learn baseline: hyper-parameters and ``(seed, **params) -> estimator``.
    baseline_params: Mapping[str, Any]
    baseline_estimator: Callable[..., Any]
    #: Metrics ``python -m training evaluate`` recomputes and compares.
    key_metrics: tuple[str, ...]
    #: Model card prose: title, intended use, known caveats.
    title: str
    intended_use: str
    caveats: tuple[str, ...] = ()
    #: Metric on which the network must also match its baseline (None: no such bar).
    baseline_bar: str | None = None
    #: Self-test rows: None -> the first few test rows; n -> n test rows of every class.
    golden_per_class: int | None = None
    #: ``--split`` of ``python -m training train`` -> the config's ``[split] strategy`` (empty: ignored).
    split_strategies: Mapping[str, str] = field(default_factory=dict)
    #: Whether ``[split] compare_row_split`` can retrain on the book's random row split.
    row_split_comparison: bool = False
    #: Regression only: also report test rows whose inputs never occur in train.
    report_unseen_inputs: bool = False
    #: Units of a regression target, as the model card and the CLI show them.
    units: str = ""
    #: Plot titles of the report, by plot ("roc_test", "roc_val", "confusion_test").
    plot_titles: Mapping[str, str] = field(default_factory=dict)


_RECIPES: dict[str, Recipe] = {}
_LOCK = threading.Lock()
_LOADED = False


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_"):
                continue
            recipe = getattr(importlib.import_module(f"{__name__}.{info.name}"), "RECIPE", None)
            if isinstance(recipe, Recipe):
                _RECIPES.setdefault(recipe.name, recipe)
        _LOADED = True


def register(recipe: Recipe) -> Recipe:
    """Add (or replace) a recipe, e.g. from a test or an installed package."""
    _load()
    _RECIPES[recipe.name] = recipe
    return recipe


def get(name: str) -> Recipe:
    """The recipe of model ``name``; raises KeyError naming the known ones."""
    _load()
    try:
        return _RECIPES[name]
    except KeyError:
        raise KeyError(f"no training recipe for model {name!r}; known: {', '.join(_RECIPES)}") from None


def find(name: str | None) -> Recipe | None:
    """The recipe of ``name``, or None."""
    _load()
    return _RECIPES.get(name or "")


def names() -> Sequence[str]:
    _load()
    return tuple(_RECIPES)
