"""Fixtures for the training tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _environ_restored():
    """Undo what a test leaves in ``os.environ``.

    ``serving.create_app`` (the add-onnx tests serve their bundle) sets thread and
    oneDNN defaults there. This process's TensorFlow was configured before them, but a
    process spawned later (the book-split pool) would start with them and train to
    slightly different figures (1e-9): ``pytest tests/training`` then failed the
    book-split test, which the whole suite did not (tests/serving/conftest.py sets
    the oneDNN default before anything imports TensorFlow).
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
