"""Property-based: no request body, however strange, yields a 5xx or a non-problem error."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlqr.cards import wine as WINE
from tests.serving.bundles import MODEL_NAMES

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 255, 256, -1, 14, 14.0000001, 1e-320, 1e308, -1e308]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20)),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=40,
)
wine_like = st.fixed_dictionaries({}, optional={f: st.one_of(numbers, json_values) for f in WINE.FEATURES})
seizure_like = st.fixed_dictionaries(
    {"eeg": st.one_of(st.lists(numbers, min_size=170, max_size=180), json_values)}
)
pixels = st.one_of(
    st.lists(st.integers(-2, 300), min_size=780, max_size=790),
    st.lists(st.lists(st.integers(-1, 256), min_size=27, max_size=29), min_size=27, max_size=29),
    json_values,
)
digit_like = st.one_of(
    st.fixed_dictionaries({"pixels": pixels}),
    st.fixed_dictionaries(
        {
            "image": st.one_of(
                st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=50)
            )
        }
    ),
)
instance_like = {"wine": wine_like, "seizure": seizure_like, "digit": digit_like}


def _dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity tokens on purpose


def _check(resp) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code >= 400:
        assert resp.content_type == "application/problem+json"
        body = resp.get_json(force=True)
        assert body["status"] == resp.status_code and "Traceback" not in json.dumps(body)


@pytest.mark.parametrize("name", MODEL_NAMES)
@SETTINGS
@given(body=json_values)
def test_random_json_never_5xx(client, name, body):
    _check(client.post(f"/predict/{name}", data=_dumps(body), content_type="application/json"))


@pytest.mark.parametrize("name", MODEL_NAMES)
@SETTINGS
@given(data=st.data())
def test_near_valid_instances_never_5xx(client, name, data):
    inst = instance_like[name]
    body = data.draw(st.one_of(inst, st.fixed_dictionaries({"instances": st.lists(inst, max_size=4)})))
    _check(client.post(f"/predict/{name}", data=_dumps(body), content_type="application/json"))


@SETTINGS
@given(
    body=st.binary(max_size=300),
    ctype=st.sampled_from(
        ["application/json", "image/png", "image/jpeg", "text/plain", "application/octet-stream", ""]
    ),
    path=st.sampled_from(["/predict/wine", "/predict/digit", "/predict/x", "/models/digit", "/readyz"]),
)
def test_random_bytes_never_5xx(client, body, ctype, path):
    _check(client.post(path, data=body, content_type=ctype or None))
