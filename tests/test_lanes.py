"""The test lanes follow from a test file's path (tests/conftest.py), not from hand-placed markers."""

from __future__ import annotations

import pytest

from tests.conftest import LANE_ORDER, SLOW_LANES, lane_of


@pytest.mark.parametrize(
    ("relpath", "lane"),
    [
        ("serving/test_app.py", "fast"),
        ("serving/test_gunicorn.py", "gunicorn"),
        ("serving/test_lifecycle_gunicorn.py", "gunicorn"),
        ("docs/test_samples_gunicorn.py", "gunicorn"),
        ("serving/gunicorn_helpers.py", "fast"),
        ("reliability/test_chaos.py", "reliability"),
        ("e2e/test_docs_page.py", "e2e"),
        ("deploy/test_container.py", "deploy"),
        ("deploy/test_k8s.py", "fast"),
        ("training/test_pipeline.py", "training"),
        ("training/test_console.py", "fast"),
    ],
)
def test_lane_of(relpath, lane):
    assert lane_of(relpath) == lane


def test_every_slow_lane_has_a_place_in_the_order():
    assert LANE_ORDER[0] == "fast"
    assert set(LANE_ORDER[1:]) == set(SLOW_LANES)


def test_every_listed_path_exists(repo_root):
    # a renamed test file must not drop silently out of its slow lane into the fast one
    for paths in SLOW_LANES.values():
        for p in paths:
            assert (repo_root / "tests" / p).exists(), p
