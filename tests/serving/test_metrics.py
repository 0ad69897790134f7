"""Metrics: generic over the cards, and the one adapter onto prometheus_client internals.

``Metrics.observe_many`` is the only place that touches prometheus_client's private
histogram attributes (``_upper_bounds``, ``_buckets``, ``_sum``); these tests fail if the
library changes underneath it.
"""

from __future__ import annotations

import numpy as np
import pytest

from dlqr import card as cards
from serving.metrics import Metrics, predicted_value_buckets
from tests.serving.bundles import MODEL_NAMES

BUILTIN = tuple(cards.get(n) for n in MODEL_NAMES)
BUCKETS = predicted_value_buckets(BUILTIN)


def _samples(hist) -> dict:
    return {(s.name, s.labels.get("le")): s.value for m in hist.collect() for s in m.samples}


def test_predicted_value_buckets_are_the_union_of_the_tasks():
    wine = cards.get("wine").task.value_buckets
    seizure = cards.get("seizure").task.value_buckets
    assert cards.get("digit").task.value_buckets is None  # multiclass: no scalar value
    assert tuple(sorted(set(wine) | set(seizure))) == BUCKETS
    assert list(BUCKETS) == sorted(BUCKETS) and len(set(BUCKETS)) == len(BUCKETS)
    assert predicted_value_buckets([cards.get("digit")]) == (0.5, 1.0)  # prometheus needs some buckets


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 0.5, 0.99, 1.0, 1.0000001, 8.0, 12.3, 15.0, 99.0, 0.0, -1.0],
        list(np.random.default_rng(0).uniform(0, 16, 300)),
        list(BUCKETS) * 3,  # exactly on every bound: le is inclusive
        [0.3, 0.7],  # short lists take the plain observe() loop
    ],
)
def test_observe_many_matches_observe(values):
    from prometheus_client import CollectorRegistry, Histogram

    reg = CollectorRegistry()
    a = Histogram("a", "a", buckets=BUCKETS, registry=reg)
    b = Histogram("b", "b", buckets=BUCKETS, registry=reg)
    for v in values:
        a.observe(v)
    Metrics.observe_many(b, values)
    sa = {(k[0][1:], k[1]): v for k, v in _samples(a).items() if k[0] != "a_created"}
    sb = {(k[0][1:], k[1]): v for k, v in _samples(b).items() if k[0] != "b_created"}
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sb[key] == pytest.approx(sa[key], rel=1e-12), key


def test_the_private_histogram_attributes_observe_many_relies_on_still_exist():
    """Fails loudly (rather than silently using the slow path) if prometheus_client changes."""
    from prometheus_client import CollectorRegistry, Histogram

    child = Histogram("h", "h", ["model"], buckets=BUCKETS, registry=CollectorRegistry()).labels("m")
    assert list(child._upper_bounds) == [*BUCKETS, float("inf")]
    assert len(child._buckets) == len(child._upper_bounds)
    assert all(hasattr(b, "inc") for b in child._buckets) and hasattr(child._sum, "inc")


def test_observe_prediction_uses_the_tasks_outcomes_and_values():
    m = Metrics(BUILTIN)
    m.observe_prediction("seizure", 3, 0.001, [
        {"probability": 0.9, "seizure": True, "threshold": 0.5},
        {"probability": 0.2, "seizure": False, "threshold": 0.5},
        {"probability": 0.6, "seizure": True, "threshold": 0.5},
    ])  # fmt: skip
    m.observe_prediction("digit", 2, 0.002, [
        {"digit": 7, "confidence": 0.9, "probabilities": []},
        {"digit": 7, "confidence": 0.8, "probabilities": []},
    ])  # fmt: skip
    m.observe_prediction("wine", 1, 0.001, [{"alcohol": 10.2}])
    reg = m.registry

    def value(name, **labels):
        return reg.get_sample_value(name, labels)

    assert value("dlqr_model_predictions_total", model="seizure", outcome="positive") == 2
    assert value("dlqr_model_predictions_total", model="seizure", outcome="negative") == 1
    assert value("dlqr_model_predictions_total", model="digit", outcome="7") == 2  # the card's class label
    assert value("dlqr_model_predictions_total", model="digit", outcome="3") == 0  # pre-created, bounded
    assert value("dlqr_model_predictions_total", model="wine", outcome="value") == 1
    assert value("dlqr_model_predicted_probability_sum", model="seizure") == pytest.approx(1.7)
    assert value("dlqr_model_predicted_value_sum", model="wine") == pytest.approx(10.2)
    assert value("dlqr_model_predicted_value_count", model="digit") is None  # no scalar: no series
    assert value("dlqr_model_batch_size_sum", model="digit") == 2
    assert value("dlqr_model_ready", model="wine") == 0  # until the registry says so
    m.set_served_versions("wine", True, [("v1", "abc")])
    assert value("dlqr_model_ready", model="wine") == 1
    assert value("dlqr_model_info", model="wine", version="v1", sha256="abc") == 1
