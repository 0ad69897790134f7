"""Model cards: one declaration per model, read by generic training and serving code.

A :class:`ModelCard` says what a model takes (a pydantic instance schema, the
feature names in API units, extra request media types), what it returns (a
:class:`~dlqr.tasks.Task` configured with the output key names) and how to
show it (title, description, an example instance). Serving builds its routes,
``/models``, OpenAPI, the docs page and the metrics from the registered cards;
training builds the output layer and golden pairs from them. Nothing outside a
card file (and a training recipe) branches on a model's name.

Cards are registered by :func:`register`. The built-in ones are the modules
of :mod:`dlqr.cards` (each defines ``CARD``), found on first use; installed
packages can add cards through the ``dlqr.cards`` entry-point group; a test or
an embedding application can call :func:`register` directly.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from dlqr.tasks import Task

#: A raw-body decoder: (body bytes, validation context) -> one (1, d) row in API units.
MediaDecoder = Callable[[bytes, Mapping[str, Any]], np.ndarray]


def _rows_by_feature(instances: Sequence[Any], features: Sequence[str]) -> np.ndarray:
    """Default: one validated pydantic object per instance, one attribute per feature."""
    return np.array([[getattr(inst, f) for f in features] for inst in instances], dtype=np.float64)


def _number(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _instance_by_feature(card: ModelCard, row: np.ndarray, features: Sequence[str]) -> dict[str, Any]:
    return {f: _number(v) for f, v in zip(features, row, strict=True)}


# eq=False: cards compare and hash by identity (they hold dicts and callables).
@dataclass(frozen=True, eq=False)
class ModelCard:
    """What one model takes and returns; see the module docstring."""

    name: str
    title: str
    description: str
    task: Task
    #: pydantic type (model, or annotated union) of one request instance.
    instance: Any
    #: Input features in the model's order, in API units (the network's input width).
    features: tuple[str, ...]
    #: One valid instance, used by the docs, OpenAPI and examples.
    example: Mapping[str, Any]
    #: Validated instances (+ the bundle's feature order) -> (n, d) float64 rows in API units.
    to_rows: Callable[[Sequence[Any], Sequence[str]], np.ndarray] = _rows_by_feature
    #: One row in API units -> the JSON instance a client would POST (golden pairs, examples).
    to_instance: Callable[[ModelCard, np.ndarray, Sequence[str]], dict[str, Any]] = _instance_by_feature
    #: Extra request media types besides JSON, each with its decoder (e.g. image/png for digit).
    media: Mapping[str, MediaDecoder] = field(default_factory=dict)
    #: Range for random cross-check inputs when the bundle records no training ranges.
    input_range: tuple[float, float] | None = None
    #: Datatype of the input tensor in the Open Inference Protocol ("FP64", "UINT8", ...).
    input_datatype: str = "FP64"
    #: Name of that input tensor in the Open Inference Protocol.
    input_name: str = "input"
    #: Optional input shape beyond the flat feature vector (e.g. (28, 28)), row-major.
    input_shape: tuple[int, ...] | None = None
    #: Discriminator tags inside ``instance`` (stripped from error locations shown to clients).
    schema_tags: frozenset[str] = frozenset()
    #: Free-form facts shown by /models (units, sampling rate, ...).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Promotion gate: how much worse than the stable version a challenger may be on each key
    #: test metric, in the metric's own units, when both are scored on the same held-out rows
    #: (:mod:`serving.gate`). A metric not listed here has no tolerance (0).
    promotion_tolerance: Mapping[str, float] = field(default_factory=dict)
    #: Drift profile (:mod:`dlqr.drift`): rows -> per-row summaries, profiled instead of the
    #: raw features where those mean nothing one by one (pixels). None: the features themselves.
    profile: Callable[[np.ndarray], np.ndarray] | None = None
    #: Names of the columns ``profile`` returns.
    profile_features: tuple[str, ...] = ()

    @property
    def input_dim(self) -> int:
        return len(self.features)

    @property
    def output_dim(self) -> int:
        return self.task.output_dim()

    def rows(self, instances: Sequence[Any], features: Sequence[str] | None = None) -> np.ndarray:
        """Validated instances -> (n, d) float64 array in the bundle's feature order."""
        return self.to_rows(instances, tuple(features or self.features))

    def instance_from_row(self, row: np.ndarray, features: Sequence[str] | None = None) -> dict[str, Any]:
        """One row in API units -> a JSON instance."""
        return self.to_instance(self, np.asarray(row), tuple(features or self.features))

    def check_preprocessing(self, prep: Mapping[str, Any]) -> str | None:
        """A problem with the bundle's preprocessing.json for this card, or None."""
        if prep.get("task") != self.task.kind:
            return f"task {prep.get('task')!r}, expected {self.task.kind!r}"
        feats = prep.get("features") or []
        if prep.get("input_dim") != self.input_dim or sorted(feats) != sorted(self.features):
            return f"input_dim/features do not match the card's {self.input_dim} inputs"
        ranges = prep.get("feature_ranges")
        if ranges is not None and (
            len(ranges.get("min", [])) != self.input_dim or len(ranges.get("max", [])) != self.input_dim
        ):
            return "feature_ranges min/max must have one entry per feature"
        return self.task.check_preprocessing(dict(prep))


# ------------------------------------------------------------------ registry

_CARDS: dict[str, ModelCard] = {}
_LOCK = threading.Lock()
_BUILTINS_LOADED = False
ENTRY_POINT_GROUP = "dlqr.cards"


class UnknownModel(KeyError):
    """No card is registered under that name."""


def register(card: ModelCard, *, replace: bool = False) -> ModelCard:
    """Add a card to the registry (``replace=True`` to redefine one)."""
    _load_builtins()
    with _LOCK:
        if card.name in _CARDS and not replace and _CARDS[card.name] is not card:
            raise ValueError(f"a card named {card.name!r} is already registered")
        _CARDS[card.name] = card
    return card


def unregister(name: str) -> None:
    """Remove a card (tests that register temporary models)."""
    with _LOCK:
        _CARDS.pop(name, None)


def get(name: str) -> ModelCard:
    """The card registered as ``name``; raises :class:`UnknownModel`."""
    _load_builtins()
    try:
        return _CARDS[name]
    except KeyError:
        raise UnknownModel(name) from None


def names() -> tuple[str, ...]:
    """Registered model names, built-in ones first in their declared order."""
    _load_builtins()
    return tuple(_CARDS)


def all_cards() -> tuple[ModelCard, ...]:
    _load_builtins()
    return tuple(_CARDS.values())


def _load_builtins() -> None:
    """Import every module of :mod:`dlqr.cards` and the entry points, once."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    with _LOCK:
        if _BUILTINS_LOADED:
            return
        import dlqr.cards as pkg

        found: list[ModelCard] = []
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            card = getattr(module, "CARD", None)
            if isinstance(card, ModelCard):
                found.append(card)
        found.sort(key=lambda c: (pkg.ORDER.index(c.name) if c.name in pkg.ORDER else len(pkg.ORDER), c.name))
        for card in found:
            _CARDS.setdefault(card.name, card)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            card = ep.load()
            if isinstance(card, ModelCard):
                _CARDS.setdefault(card.name, card)
        _BUILTINS_LOADED = True
