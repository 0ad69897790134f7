"""The settings table of docs/operations.md lists every setting of serving/settings.py, with its default, and no other."""

from __future__ import annotations

import re

from pydantic_core import PydanticUndefined

from serving.settings import ENV_PREFIX, Settings
from tests.conftest import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "operations.md"
# Defaults computed at start (default_factory): what the table must say instead of a value.
COMPUTED = {"artifacts_dir": "`artifacts/` beside the package"}


def documented() -> dict[str, str]:
    """``{DLQR_NAME: default cell}`` of the table under "## Settings"."""
    section = PAGE.read_text(encoding="utf-8").split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(DLQR_[A-Z_]+)`\s*\|([^|]*)\|", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} listed twice"
            rows[m.group(1)] = m.group(2).strip()
    return rows


def shown(default: object) -> str:
    """How the table writes a default: the environment value, in backticks."""
    if isinstance(default, bool):
        text = str(default).lower()
    elif isinstance(default, float) and default.is_integer():
        text = str(int(default))
    elif default == "":
        text = '""'
    else:
        text = str(default)
    return f"`{text}`"


def test_every_setting_is_documented_and_no_other():
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    rows = documented()
    assert sorted(fields - rows.keys()) == [], "settings missing from the docs table"
    assert sorted(rows.keys() - fields) == [], "the docs table lists settings that do not exist"


def test_every_documented_default_is_the_real_one():
    rows = documented()
    for name, field in Settings.model_fields.items():
        cell = rows[ENV_PREFIX + name.upper()]
        if field.default is PydanticUndefined:
            assert COMPUTED[name] in cell, (name, cell)
        else:
            assert cell.startswith(shown(field.default)), (name, cell, shown(field.default))


def test_the_default_worker_class_is_the_one_documented():
    # The log line at start prints worker_class; the table must not contradict it.
    assert documented()["DLQR_WORKER_CLASS"].startswith(f"`{Settings.model_fields['worker_class'].default}`")
