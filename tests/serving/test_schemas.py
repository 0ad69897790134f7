"""Request schemas: what is accepted, what is refused, and where errors point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from dlqr import card as cards
from dlqr.cards import digit as DIGIT
from dlqr.cards import seizure as SEIZURE
from dlqr.cards import wine as WINE
from dlqr.cards.digit import DigitPixelsInstance
from dlqr.cards.wine import EXAMPLE as WINE_EXAMPLE
from dlqr.schema import MAX_ABS
from serving.schemas import ModelSchemas, build_schemas, model_schemas
from tests.serving.bundles import MODEL_NAMES

S = build_schemas(tuple(cards.get(n) for n in MODEL_NAMES), 8)


def validate(name: str, body) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return S[name].request_adapter.validate_json(raw, context={"max_image_pixels": 10_000})


def errors(name: str, body) -> list[dict]:
    with pytest.raises(ValidationError) as exc:
        validate(name, body)
    return S[name].field_errors(exc.value)


def test_schemas_are_built_per_card_and_cached():
    assert list(S) == list(MODEL_NAMES)
    assert all(isinstance(ms, ModelSchemas) and ms.name == n and ms.max_batch == 8 for n, ms in S.items())
    assert model_schemas(cards.get("wine"), 8) is S["wine"]  # built once per (card, batch limit)
    assert model_schemas(cards.get("wine"), 9) is not S["wine"]
    assert S["wine"].response.__name__ == "WineResponse" and S["digit"].batch.__name__ == "DigitBatch"


def test_wine_fields_are_the_card_features():
    assert tuple(S["wine"].instance_adapter.json_schema()["properties"]) == WINE.FEATURES
    assert cards.get("wine").features == WINE.FEATURES


def test_prediction_schemas_take_their_keys_from_the_card():
    for name in MODEL_NAMES:
        card = cards.get(name)
        assert tuple(S[name].prediction.model_json_schema()["properties"]) == card.task.output_keys()
    assert tuple(S["seizure"].prediction.model_json_schema()["properties"]) == (
        "probability",
        "seizure",
        "threshold",
    )


def test_wine_single_and_batch_accepted():
    single = validate("wine", WINE_EXAMPLE)
    batch = validate("wine", {"instances": [WINE_EXAMPLE, {**WINE_EXAMPLE, "ph": 3}]})
    assert single.ph == 3.0
    assert len(batch.instances) == 2 and batch.instances[1].ph == 3.0
    rows = cards.get("wine").rows(batch.instances, WINE.FEATURES)
    assert rows.shape == (2, 10) and rows[0, WINE.FEATURES.index("density")] == 1.001
    # the bundle's feature order wins over the API's
    reordered = cards.get("wine").rows(batch.instances, WINE.FEATURES[::-1])
    assert np.array_equal(reordered, rows[:, ::-1])


@pytest.mark.parametrize(
    ("field", "value", "type_"),
    [
        ("fixed_acidity", -0.1, "greater_than_equal"),  # negative concentration
        ("chlorides", -1e-9, "greater_than_equal"),
        ("total_sulfur_dioxide", -5, "greater_than_equal"),
        ("ph", 14.01, "less_than_equal"),
        ("ph", -0.5, "greater_than_equal"),
        ("density", 0, "greater_than"),
        ("density", -1.0, "greater_than"),
        ("sulphates", MAX_ABS * 10, "less_than_equal"),
        ("residual_sugar", "20.7", "float_type"),  # no string coercion
        ("residual_sugar", True, "float_type"),  # no booleans as numbers
        ("residual_sugar", None, "float_type"),
    ],
)
def test_wine_impossible_or_mistyped_values(field, value, type_):
    errs = errors("wine", {**WINE_EXAMPLE, field: value})
    assert errs == [{"loc": [field], "msg": errs[0]["msg"], "type": type_}]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_nan_and_infinity_tokens_are_refused(token):
    body = json.dumps({**WINE_EXAMPLE, "ph": 0}).encode().replace(b'"ph": 0', b'"ph": ' + token)
    errs = errors("wine", body)
    assert errs[0]["loc"] == ["ph"] and errs[0]["type"] == "finite_number"


def test_batch_error_locations_point_at_the_instance_and_field():
    errs = errors(
        "wine", {"instances": [WINE_EXAMPLE, WINE_EXAMPLE, WINE_EXAMPLE, {**WINE_EXAMPLE, "ph": 20}]}
    )
    assert errs[0]["loc"] == ["instances", 3, "ph"]


def test_misspelt_and_missing_fields():
    body = dict(WINE_EXAMPLE)
    body["pH"] = body.pop("ph")
    errs = errors("wine", body)
    assert {tuple(e["loc"]): e["type"] for e in errs} == {("ph",): "missing", ("pH",): "extra_forbidden"}


def test_batch_limits():
    assert errors("wine", {"instances": []})[0]["type"] == "too_short"
    with pytest.raises(ValidationError) as exc:
        validate("wine", {"instances": [WINE_EXAMPLE] * 9})
    assert any(e["type"] == "too_long" for e in exc.value.errors())


@pytest.mark.parametrize("body", [[WINE_EXAMPLE], "wine", 3, None])
def test_body_must_be_an_object(body):
    assert errors("wine", body)[0]["type"] == "request_shape"


def test_seizure_needs_exactly_178_finite_samples():
    ok = validate("seizure", {"eeg": list(range(SEIZURE.N_SAMPLES))})
    assert len(ok.eeg) == 178
    assert errors("seizure", {"eeg": [0] * 177})[0] == {
        "loc": ["eeg"],
        "msg": "List should have at least 178 items after validation, not 177",
        "type": "too_short",
    }
    assert errors("seizure", {"eeg": [0] * 179})[0]["type"] == "too_long"
    body = json.dumps({"eeg": [0] * 178}).encode().replace(b"[0, 0", b"[0, NaN", 1)
    assert errors("seizure", body)[0]["loc"] == ["eeg", 1]
    assert errors("seizure", {"eeg": [0] * 177 + ["1"]})[0]["loc"] == ["eeg", 177]


def test_digit_flat_and_nested_pixels_give_the_same_row():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(28, 28))
    flat = validate("digit", {"pixels": img.reshape(-1).tolist()})
    nested = validate("digit", {"pixels": img.tolist()})
    assert isinstance(flat, DigitPixelsInstance)
    a = cards.get("digit").rows([flat])
    b = cards.get("digit").rows([nested])
    assert a.shape == (1, DIGIT.N_PIXELS) and np.array_equal(a, b) and np.array_equal(a[0], img.reshape(-1))


@pytest.mark.parametrize(
    ("pixels", "loc", "type_"),
    [
        ([0] * 783 + [256], ["pixels", 783], "less_than_equal"),
        ([-1] + [0] * 783, ["pixels", 0], "greater_than_equal"),
        ([0.0] * 784, ["pixels", 0], "int_type"),  # integers only
        ([True] + [0] * 783, ["pixels", 0], "int_type"),
        ([0] * 783, ["pixels"], "too_short"),
        ([[0] * 28] * 27, ["pixels"], "too_short"),
        ([[0] * 28] * 27 + [[0] * 27 + [300]], ["pixels", 27, 27], "less_than_equal"),
        ([[0] * 28] * 27 + [[0] * 29], ["pixels", 27], "too_long"),
    ],
)
def test_digit_pixel_errors(pixels, loc, type_):
    errs = errors("digit", {"pixels": pixels})
    assert errs[0]["loc"] == loc and errs[0]["type"] == type_


def test_digit_needs_pixels_or_image_not_both():
    assert errors("digit", {})[0]["type"] == "digit_instance"
    assert errors("digit", {"pixel": [0] * 784})[0]["type"] == "digit_instance"
    both = errors("digit", {"pixels": [0] * 784, "image": "aGk="})
    assert both == [{"loc": ["image"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]


def test_digit_image_errors_are_located():
    errs = errors("digit", {"instances": [{"pixels": [0] * 784}, {"image": "not base64!"}]})
    assert errs[0]["loc"] == ["instances", 1, "image"] and errs[0]["type"] == "image_invalid"


def test_field_errors_never_echo_input_or_internal_tags():
    errs = errors("digit", {"instances": [{"pixels": [[0] * 28] * 28}, {"pixels": [999] * 784}]})
    for e in errs:
        assert set(e) == {"loc", "msg", "type"}
        assert not {"batch", "single", "pixels-flat", "pixels-28x28", "pixels-instance"} & set(
            map(str, e["loc"])
        )


def test_input_schema_documents_the_rules():
    wine = S["wine"].instance_adapter.json_schema()
    assert wine["additionalProperties"] is False
    assert wine["properties"]["ph"]["minimum"] == 0 and wine["properties"]["ph"]["maximum"] == 14
    assert wine["properties"]["density"]["exclusiveMinimum"] == 0
    digit = json.dumps(S["digit"].instance_adapter.json_schema())
    assert '"maximum": 255' in digit and '"minItems": 784' in digit


@pytest.mark.parametrize(
    "body",
    [
        WINE_EXAMPLE,
        {"instances": [WINE_EXAMPLE]},
        {"instances": [WINE_EXAMPLE], "extra": 1},
        {**WINE_EXAMPLE, "ph": "instances"},
        {**WINE_EXAMPLE, "instances": []},
        [WINE_EXAMPLE],
        {"instances": "instances"},
    ],
)
def test_parse_shortcut_agrees_with_the_discriminated_union(body):
    raw = json.dumps(body).encode()
    for variant in (
        raw,
        raw.replace(b'"instances"', b'"\\u0069nstances"'),
    ):  # escaped key defeats the byte peek
        try:
            want = validate("wine", variant)
            want = want.instances if hasattr(want, "instances") else [want]
        except ValidationError as exc:
            with pytest.raises(ValidationError) as got:
                S["wine"].parse(variant)
            assert S["wine"].field_errors(got.value) == S["wine"].field_errors(exc)
        else:
            assert S["wine"].parse(variant) == want
