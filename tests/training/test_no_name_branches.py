"""Outside the card and recipe files, no training code branches on a model's name.

Greps ``training/*.py`` (``training/recipes/`` and ``training/configs/`` excluded)
for comparisons with, or dict keys / membership tuples of, every registered
model name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlqr import card
from training import recipes

TRAINING = Path(__file__).resolve().parents[2] / "training"


def _patterns(name: str) -> list[re.Pattern]:
    q = rf"""["']{re.escape(name)}["']"""
    return [
        re.compile(rf"[!=]=\s*{q}"),  # name == "wine"
        re.compile(rf"{q}\s*[!=]="),  # "wine" == name
        re.compile(rf"{q}\s*:"),  # {"wine": ...}
        re.compile(rf"\bin\s*[\(\[\{{][^\)\]\}}]*{q}"),  # name in ("wine", ...)
        re.compile(rf"\(\s*\w+\s*,[^)]*\)\s*==\s*\(\s*{q}"),  # (name, x) == ("wine", ...)
    ]


@pytest.mark.parametrize("name", card.names())
def test_no_training_module_branches_on_model_name(name):
    offenders = []
    for path in sorted(TRAINING.glob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in _patterns(name)):
                offenders.append(f"{path.name}:{no}: {line.strip()}")
    assert not offenders, f"training code branches on model name {name!r}:\n" + "\n".join(offenders)


@pytest.mark.parametrize("name", card.names())
def test_every_registered_model_has_a_recipe(name):
    r = recipes.get(name)
    assert r.name == name
    assert r.key_metrics and r.quality_bar["metric"]


def test_the_grep_would_catch_a_branch():
    bad = ['if name == "wine":', 'BARS = {"wine": 1}', 'if name not in ("wine", "seizure"):']
    assert all(any(p.search(line) for p in _patterns("wine")) for line in bad)
