"""Every request shown in the docs, sent to the app on the committed bundles: the answers shown must hold.

In-process (Flask's test client) on ``artifacts/``, the bundles `make serve` serves;
tests/docs/test_samples_gunicorn.py sends the same samples to a real Gunicorn server.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO_ROOT
from tests.docs import samples as S

SAMPLES = S.collect()


@pytest.fixture(scope="module")
def client():
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": REPO_ROOT / "artifacts", "MODEL_LOADING": "sync"})
    assert app.extensions["dlqr"].registry.all_ready
    return app.test_client()


def send(client, sample: S.Sample) -> tuple[int, bytes]:
    resp = client.open(sample.path, method=sample.method, headers=sample.headers, data=sample.body)
    return resp.status_code, resp.get_data()


def check(sample: S.Sample, status: int, body: bytes) -> None:
    """The answer shown must match; a sample shown without an answer must still succeed."""
    if sample.expected is None:
        assert status < 400, f"{sample.where}: HTTP {status}: {body[:300]!r}"
        return
    actual = json.loads(body)
    problems = S.mismatches(sample.expected, actual)
    assert not problems, (
        f"{sample.where}: the answer shown is stale: {problems}\nactual: {json.dumps(actual)}"
    )


def test_the_docs_show_requests_with_answers_for_every_model():
    answered = {s.path for s in SAMPLES if s.expected is not None}
    for model in ("wine", "seizure", "digit"):
        assert f"/predict/{model}" in answered, model
    assert any(p.startswith("/v2/") for p in answered)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_sample_answer_matches(client, sample):
    check(sample, *send(client, sample))


# --- the harness itself -----------------------------------------------------------------------


def _doc(tmp_path, text: str):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(text)
    (tmp_path / "body.json").write_text('{"a": 1}')
    return tmp_path


def test_a_curl_the_harness_cannot_read_fails_collection(tmp_path):
    root = _doc(tmp_path, "```sh\ncurl -s --compressed localhost:8000/models\n```\n")
    with pytest.raises(S.SampleError, match="--compressed"):
        S.collect(root)


def test_a_shown_answer_that_is_not_json_fails_collection(tmp_path):
    root = _doc(tmp_path, '```sh\ncurl -s localhost:8000/models\n# {"model": wine}\n```\n')
    with pytest.raises(S.SampleError, match="not JSON"):
        S.collect(root)


def test_samples_are_parsed_with_method_headers_body_and_answer(tmp_path):
    root = _doc(
        tmp_path,
        "text\n```bash\ncurl -s localhost:8000/predict/wine?version=1 -H 'Content-Type: application/json' \\\n"
        '     -d @body.json   # explained\n# {"x": 1.5}   (prose)\n'
        "curl -s localhost:9090/api   # not the server\n```\n",
    )
    (sample,) = S.collect(root)
    assert (sample.method, sample.path, sample.body) == ("POST", "/predict/wine?version=1", b'{"a": 1}')
    assert sample.headers == {"Content-Type": "application/json"}
    assert sample.expected == {"x": 1.5} and sample.where == "README.md:3"


def test_mismatches_compares_shown_keys_within_the_tolerance():
    shown = {"v": 9.497, "ok": True, "xs": [1, 2], "request_id": "abc"}
    assert S.mismatches(shown, {"v": 9.49699, "ok": True, "xs": [1, 2], "request_id": "zz", "more": 1}) == []
    assert S.mismatches(shown, {"v": 9.6, "ok": True, "xs": [1, 2], "request_id": ""}) == [
        "$.v: shown 9.497, got 9.6"
    ]
    assert S.mismatches({"ok": True}, {"ok": 1}) == ["$.ok: shown True, got 1"]
    assert S.mismatches({"xs": [1, 2]}, {"xs": [1]})[0].startswith("$.xs")
    assert S.mismatches({"k": 1}, {}) == ["$.k: missing from the answer"]
