"""Model cards and their registry; the shared package imports neither training nor serving."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ConfigDict, TypeAdapter, create_model

from dlqr import card as cards
from dlqr.card import ModelCard, UnknownModel
from dlqr.schema import STRICT, bounded_field
from dlqr.tasks import Multiclass, Regression
from tests.conftest import REPO_ROOT
from tests.serving import bundles

BUILTIN = ("wine", "seizure", "digit")


def make_card(name: str = "toy", **kw) -> ModelCard:
    features = ("a", "b")
    instance = create_model(
        f"{name.capitalize()}Instance",
        __config__=ConfigDict(**STRICT),
        **{f: bounded_field(f"feature {f}") for f in features},
    )
    defaults = dict(
        name=name,
        title="Toy",
        description="A toy model for tests.",
        task=Regression(target="y"),
        instance=instance,
        features=features,
        example={"a": 1.0, "b": 2.0},
    )
    return ModelCard(**{**defaults, **kw})


@pytest.fixture
def registered():
    """Cards registered by a test, removed afterwards whatever happens."""
    names: list[str] = []

    def add(card: ModelCard, **kw) -> ModelCard:
        names.append(card.name)
        return cards.register(card, **kw)

    yield add
    for n in names:
        cards.unregister(n)
    assert cards.names() == BUILTIN


def test_builtin_cards_are_found_in_their_declared_order():
    assert cards.names() == BUILTIN
    assert tuple(c.name for c in cards.all_cards()) == BUILTIN
    from dlqr.cards import digit, seizure, wine

    assert (cards.get("wine"), cards.get("seizure"), cards.get("digit")) == (
        wine.CARD,
        seizure.CARD,
        digit.CARD,
    )
    assert {c.task.kind for c in cards.all_cards()} == {"regression", "binary", "multiclass"}


def test_register_get_and_unregister(registered):
    toy = registered(make_card("toy"))
    assert cards.get("toy") is toy
    assert cards.names() == (*BUILTIN, "toy")  # built-ins first, then registration order
    registered(make_card("another"))
    assert cards.names() == (*BUILTIN, "toy", "another")
    cards.unregister("toy")
    assert cards.names() == (*BUILTIN, "another")
    with pytest.raises(UnknownModel):
        cards.get("toy")
    cards.unregister("toy")  # removing twice is harmless


def test_register_a_duplicate_name_raises(registered):
    first = registered(make_card("toy"))
    assert cards.register(first) is first  # the same card again is a no-op
    with pytest.raises(ValueError, match="already registered"):
        cards.register(make_card("toy"))
    with pytest.raises(ValueError, match="'wine' is already registered"):
        cards.register(make_card("wine"))
    assert cards.get("toy") is first and cards.get("wine").title == "White wine alcohol"
    second = registered(make_card("toy", title="Toy 2"), replace=True)
    assert cards.get("toy") is second


def test_unknown_model_is_a_key_error():
    with pytest.raises(KeyError):
        cards.get("nope")
    with pytest.raises(UnknownModel, match="nope"):
        cards.get("nope")


def test_cards_compare_by_identity():
    a, b = make_card("toy"), make_card("toy")
    assert a != b and len({a, b}) == 2 and a == a


def test_dims_come_from_the_features_and_the_task():
    assert (cards.get("wine").input_dim, cards.get("wine").output_dim) == (10, 1)
    assert (cards.get("seizure").input_dim, cards.get("seizure").output_dim) == (178, 1)
    assert (cards.get("digit").input_dim, cards.get("digit").output_dim) == (784, 10)
    toy = make_card(task=Multiclass(label="k", classes=("x", "y", "z")))
    assert (toy.input_dim, toy.output_dim) == (2, 3)


@pytest.mark.parametrize("name", BUILTIN)
def test_rows_and_instances_round_trip(name):
    card = cards.get(name)
    prep = bundles.preprocessing(name)
    rows = bundles.sample_rows(name, 5, seed=3)
    adapter = TypeAdapter(card.instance)
    instances = [adapter.validate_python(card.instance_from_row(r, prep["features"])) for r in rows]
    assert np.array_equal(card.rows(instances, prep["features"]), rows)
    adapter.validate_python(dict(card.example))  # the documented example is a valid instance


def test_default_rows_follow_the_bundle_feature_order():
    card = make_card()
    inst = TypeAdapter(card.instance).validate_python({"a": 1.0, "b": 2.0})
    assert card.rows([inst]).tolist() == [[1.0, 2.0]]
    assert card.rows([inst], ("b", "a")).tolist() == [[2.0, 1.0]]
    assert card.instance_from_row(np.array([2.0, 1.5]), ("b", "a")) == {"b": 2, "a": 1.5}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({}, None),
        ({"task": "binary"}, "task 'binary', expected 'regression'"),
        ({"input_dim": 3}, "input_dim/features"),
        ({"features": ["a", "c"]}, "input_dim/features"),
        ({"feature_ranges": {"min": [0.0], "max": [1.0, 2.0]}}, "feature_ranges"),
        ({"target_scaler": {"mean": 0.0, "scale": -1.0}}, "target_scaler"),
    ],
)
def test_check_preprocessing(change, fragment):
    prep = {
        "task": "regression",
        "features": ["b", "a"],  # any order: the bundle's order is used for rows
        "input_dim": 2,
        "target_scaler": {"mean": 0.0, "scale": 1.0},
        "feature_ranges": {"min": [0.0, 0.0], "max": [1.0, 1.0]},
        **change,
    }
    problem = make_card().check_preprocessing(prep)
    assert problem is None if fragment is None else fragment in problem


def test_the_shared_package_imports_neither_half_nor_a_framework():
    code = (
        "import sys, numpy as np\n"
        "import dlqr, dlqr.bundle, dlqr.card, dlqr.images, dlqr.processing, dlqr.schema, dlqr.tasks\n"
        "from dlqr import card\n"
        "for c in card.all_cards():\n"
        "    c.task.postprocessor({'target_scaler': {'mean': 0, 'scale': 1}, 'threshold': {'value': 0.5}})\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('training', 'serving', 'tensorflow', 'keras', 'onnxruntime', 'flask', 'tf2onnx'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
