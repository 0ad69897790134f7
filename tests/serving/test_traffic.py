"""Per-request routing choices and shadow disagreement (pure functions)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import binomtest

from dlqr.routing import Routing, Split
from serving import traffic

CANARY10 = Routing(stable="1", canary=Split(version="2", percent=10))


def test_no_routing_or_no_canary_is_stable():
    assert traffic.choose("wine", None) == (None, "stable")
    assert traffic.choose("wine", Routing(stable="1"), "k") == ("1", "stable")


def test_canary_share_lies_in_the_binomial_interval():
    rng = random.Random(7)
    n = 20_000
    hits = sum(traffic.choose("wine", CANARY10, rng=rng)[1] == "canary" for _ in range(n))
    low, high = binomtest(hits, n, 0.10).proportion_ci(confidence_level=0.999)
    assert low <= 0.10 <= high


def test_a_routing_key_always_gets_the_same_version_and_keys_spread():
    versions = {traffic.choose("wine", CANARY10, "user-0")[0]}
    for _ in range(50):
        assert {traffic.choose("wine", CANARY10, "user-0")[0]} == versions
    share = np.mean([traffic.choose("wine", CANARY10, f"user-{i}")[1] == "canary" for i in range(20_000)])
    assert 0.09 < share < 0.11
    # growing the percent keeps every key that was on the canary there
    wider = Routing(stable="1", canary=Split(version="2", percent=30))
    for i in range(2000):
        if traffic.choose("wine", CANARY10, f"u{i}")[1] == "canary":
            assert traffic.choose("wine", wider, f"u{i}")[1] == "canary"


def test_shadow_sampling():
    r = Routing(stable="1", shadow=Split(version="3", percent=100))
    assert all(traffic.shadow_sampled(r) == "3" for _ in range(100))
    assert traffic.shadow_sampled(Routing(stable="1")) is None
    rng = random.Random(1)
    half = Routing(stable="1", shadow=Split(version="3", percent=50))
    share = np.mean([traffic.shadow_sampled(half, rng) is not None for _ in range(10_000)])
    assert 0.47 < share < 0.53


def test_disagreement_per_task():
    multi = traffic.disagreement("multiclass", [[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]], {})
    assert multi["label_differs"].tolist() == [False, True]
    # the same network with another threshold: only the rows between the thresholds flip
    prep = {"threshold": {"value": 0.5}, "shadow_threshold": 0.7}
    out = np.array([[0.2], [0.6], [0.9]])
    binary = traffic.disagreement("binary", out, out, prep)
    assert binary["decision_flips"].tolist() == [False, True, False]
    assert binary["prob_diff"].tolist() == [0, 0, 0]
    reg = traffic.disagreement(
        "regression", [[0.0], [1.0]], [[0.5], [1.0]], {"target_scaler": {"scale": [2.0]}}
    )
    assert reg["abs_diff"].tolist() == pytest.approx([1.0, 0.0])


def test_regression_disagreement_undoes_each_versions_own_target_scaler():
    prep = {
        "target_scaler": {"mean": 10.0, "scale": 2.0},
        "shadow_target_scaler": {"mean": 11.0, "scale": 1.0},
    }
    # answer 10 + 2*0.5 = 11.0; shadow 11 + 1*0.5 = 11.5
    assert traffic.disagreement("regression", [[0.5]], [[0.5]], prep)["abs_diff"].tolist() == [0.5]
