"""Routing file: schema, atomic write, history and the writers' lock."""

from __future__ import annotations

import json

import pytest

from dlqr import routing as R


def test_schema_accepts_stable_canary_shadow():
    r = R.parse('{"stable": "v1", "canary": {"version": "v2", "percent": 10}, '
                '"shadow": {"version": "v3", "percent": 100}}')  # fmt: skip
    assert r.versions() == ("v1", "v2", "v3")
    assert r.missing(["v1", "v2"]) == ["v3"]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("{", "not JSON"),
        ("{}", "stable"),
        ('{"stable": "../x"}', "not a version name"),
        ('{"stable": "v1", "canary": {"version": "v2", "percent": 150}}', "canary.percent"),
        ('{"stable": "v1", "canary": {"version": "v2", "percent": -1}}', "canary.percent"),
        ('{"stable": "v1", "canary": {"version": "v2", "percent": 0}}', "canary.percent"),
        ('{"stable": "v1", "canary": {"version": "v1", "percent": 5}}', "is the stable version"),
        ('{"stable": "v1", "shadow": {"version": "v1", "percent": 5}}', "is the stable version"),
        ('{"stable": "v1", "extra": 1}', "extra"),
        ('{"stable": "v1", "format": 9}', "unknown routing format"),
    ],
)
def test_schema_refuses(doc, needle):
    with pytest.raises(R.RoutingError, match=needle):
        R.parse(doc)


def test_write_read_roundtrip_is_atomic_and_leaves_no_temp(tmp_path):
    assert R.read(tmp_path) is None
    r = R.Routing(stable="v1", shadow=R.Split(version="v2", percent=5))
    R.write(tmp_path, r)
    assert R.read(tmp_path) == r
    assert sorted(p.name for p in tmp_path.iterdir()) == [R.ROUTING_FILE]
    key = R.file_key(tmp_path)
    R.write(tmp_path, R.Routing(stable="v2"))
    assert R.file_key(tmp_path) != key
    assert R.read(tmp_path).stable == "v2"


def test_read_names_the_file_when_malformed(tmp_path):
    (tmp_path / R.ROUTING_FILE).write_text('{"stable": 1}')
    with pytest.raises(R.RoutingError, match="routing.json: stable"):
        R.read(tmp_path)


def test_history_appends_lines(tmp_path):
    a, b = R.Routing(stable="v1"), R.Routing(stable="v2", previous_stable="v1")
    R.append_history(tmp_path, R.history_entry("promote", a, b, "better", {"ok": True}, user="u", now=0))
    R.append_history(tmp_path, R.history_entry("rollback", b, a, None, user="u", now=60))
    lines = (tmp_path / R.HISTORY_FILE).read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {
        "time": "1970-01-01T00:00:00Z", "user": "u", "action": "promote", "from": {"stable": "v1"},
        "to": {"stable": "v2", "previous_stable": "v1"}, "reason": "better", "forced": False,
        "evidence": {"ok": True},
    }  # fmt: skip
    assert [e["action"] for e in R.read_history(tmp_path)] == ["promote", "rollback"]


def test_second_writer_is_refused_at_once(tmp_path):
    held = R.writer_lock(tmp_path)
    held.__enter__()
    try:
        with pytest.raises(R.RoutingLocked, match="another command is changing"), R.writer_lock(tmp_path):
            pass
    finally:
        held.__exit__(None, None, None)
    with R.writer_lock(tmp_path):  # released: the next writer gets it
        pass
