"""Metrics helpers: bulk histogram observation equals one observe() per value."""

from __future__ import annotations

import numpy as np
import pytest

from serving.metrics import PREDICTED_VALUE_BUCKETS, Metrics


def _samples(hist) -> dict:
    return {(s.name, s.labels.get("le")): s.value for m in hist.collect() for s in m.samples}


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 0.5, 0.99, 1.0, 1.0000001, 8.0, 12.3, 15.0, 99.0, 0.0, -1.0],
        list(np.random.default_rng(0).uniform(0, 16, 300)),
        list(PREDICTED_VALUE_BUCKETS) * 3,  # exactly on every bound: le is inclusive
    ],
)
def test_observe_many_matches_observe(values):
    from prometheus_client import CollectorRegistry, Histogram

    reg = CollectorRegistry()
    a = Histogram("a", "a", buckets=PREDICTED_VALUE_BUCKETS, registry=reg)
    b = Histogram("b", "b", buckets=PREDICTED_VALUE_BUCKETS, registry=reg)
    for v in values:
        a.observe(v)
    Metrics.observe_many(b, values)
    sa = {(k[0][1:], k[1]): v for k, v in _samples(a).items() if k[0] != "a_created"}
    sb = {(k[0][1:], k[1]): v for k, v in _samples(b).items() if k[0] != "b_created"}
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sb[key] == pytest.approx(sa[key], rel=1e-12), key
