"""The .dockerignore keeps data, venvs, logs and checkpoints out of the build context,
while every file the Dockerfiles use is still sent."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D

PATTERNS = D.read_dockerignore(REPO_ROOT / ".dockerignore")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "data/wine/winequality-white.csv",
        "runs/digit/20240101/events.out",
        "checkpoints/best.weights.h5",
        "serving/__pycache__/app.cpython-311.pyc",
        "training/runs/x/checkpoint.weights.h5",
        "server.log",
        "artifacts/.wine.tmp-abc123/model.h5",
        "artifacts/wine/.2026.01.01.000000.tmp-abc123/model.h5",
        "artifacts/digit/report/train.log",
        ".cache/dlqr/mnist.gz",
        "tests/deploy/test_dockerignore.py",
        "examples/wine.json",
        ".env",
        "notebooks/scratch.ipynb",
    ],
)
def test_kept_out_of_the_context(path):
    assert D.is_ignored(path, PATTERNS), path


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "requirements/constraints.txt",
        "serving/app.py",
        "serving/gunicorn.conf.py",
        "training/configs/digit.toml",
        "artifacts/wine/model.h5",
        "artifacts/wine/manifest.json",
        "artifacts/wine/2026.11.27.002728/model.onnx",
        "artifacts/digit/report/confusion.png",
        "deploy/docker/install-serve.sh",
        "deploy/docker/healthcheck.py",
    ],
)
def test_sent_with_the_context(path):
    assert not D.is_ignored(path, PATTERNS), path


@pytest.mark.parametrize("dockerfile", ["Dockerfile.serve", "Dockerfile.gpu"])
def test_every_copied_source_is_in_the_context(dockerfile):
    context = set(D.context_files(REPO_ROOT, PATTERNS))
    df = D.parse(REPO_ROOT / dockerfile)
    for stage in df.stages:
        for copy in D.copies(stage):
            if copy.from_stage:
                continue
            for src in copy.sources:
                rel = src.strip("/")
                assert rel in context or any(f.startswith(rel + "/") for f in context), (
                    f"{dockerfile}:{copy.lineno}: {src} is missing or excluded by .dockerignore"
                )
    # Dockerfile.gpu bind-mounts the context to install the package: it needs these.
    for needed in (
        "pyproject.toml",
        "requirements/constraints.txt",
        "training/cli.py",
        "serving/app.py",
        "dlqr/bundle.py",
    ):
        assert needed in context


def test_context_is_small():
    context = D.context_files(REPO_ROOT, PATTERNS)
    size = sum((REPO_ROOT / f).stat().st_size for f in context)
    # The bundles are a few MB; anything near this means data or a venv slipped in.
    assert size < 200 * 1024 * 1024, size
    assert not any(f.startswith((".venv/", ".git/", "data/", "runs/")) for f in context)


def test_matcher_follows_docker_semantics():
    pats = D.read_dockerignore_lines(["*", "!keep/", "keep/**/*.tmp", "!keep/x.tmp", "/abs", "dir/"])
    assert D.is_ignored("a.txt", pats) and D.is_ignored("sub/a.txt", pats)
    assert not D.is_ignored("keep/a.txt", pats) and not D.is_ignored("keep/deep/b.txt", pats)
    assert D.is_ignored("keep/deep/c.tmp", pats) and D.is_ignored("keep/c.tmp", pats)
    assert not D.is_ignored("keep/x.tmp", pats)
