"""A fourth model, declared only by its card and its bundle, served without touching serving code.

The card (4 float features, three species) is registered with :func:`dlqr.card.register`
for the duration of the test; its bundle is written in ``tmp_path`` by the real export
(Keras model, model.onnx checked against it, golden pairs). Routes, validation, /models,
OpenAPI, the docs page and the metrics must all follow from the card.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from pydantic import ConfigDict, create_model

from dlqr import card as cards
from dlqr.card import ModelCard
from dlqr.schema import STRICT, bounded_field
from dlqr.tasks import Multiclass
from tests.conftest import REPO_ROOT
from tests.serving import bundles

NAME = "iris"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
#: Typical flowers (cm) per species: the cluster centres of the synthetic training data.
CENTRES = np.array([[5.0, 3.4, 1.5, 0.25], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
EXAMPLE = dict(zip(FEATURES, CENTRES[0].tolist(), strict=True))


def make_card() -> ModelCard:
    instance = create_model(
        "IrisInstance",
        __config__=ConfigDict(**STRICT, title="IrisInstance"),
        **{f: bounded_field(f"{f.replace('_', ' ').capitalize()}, cm", gt=0, le=100) for f in FEATURES},
    )
    return ModelCard(
        name=NAME,
        title="Iris species",
        description="3-way classification of an iris flower from four measurements (Fisher 1936).",
        task=Multiclass(label="species", classes=SPECIES, description="iris species"),
        instance=instance,
        features=FEATURES,
        example=EXAMPLE,
        extra={"class_labels": list(SPECIES), "units": "cm"},
    )


def preprocessing() -> dict:
    return {
        "model": NAME,
        "task": "multiclass",
        "features": list(FEATURES),
        "input_dim": len(FEATURES),
        "input_scaler": {
            "type": "standard",
            "mean": [5.84, 3.06, 3.76, 1.2],
            "scale": [0.83, 0.43, 1.76, 0.76],
        },
        "class_labels": list(SPECIES),
        "feature_ranges": {"min": [4.3, 2.0, 1.0, 0.1], "max": [7.9, 4.4, 6.9, 2.5]},
    }


def trained_model(prep: dict):
    """A small MLP fitted on clusters around CENTRES (so its answers mean something)."""
    import keras

    from dlqr import processing

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    raw = CENTRES[y] + rng.normal(0, 0.12, size=(300, 4))
    model = bundles.build_model(NAME, hidden=(8,), seed=0)  # sizes and softmax from the card
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(processing.model_input(raw, prep), y, epochs=40, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def iris_app(tmp_path_factory, artifacts):
    card = cards.register(make_card())
    try:
        root = tmp_path_factory.mktemp("fourth") / "artifacts"
        prep = preprocessing()
        rows = np.round(CENTRES + np.array([[0.1, -0.1, 0.05, 0.0]]), 2)  # golden inputs, one per species
        bundles.write_bundle(root / NAME, NAME, model=trained_model(prep), prep=prep, rows=rows)
        shutil.copytree(artifacts / "wine", root / "wine")
        from serving.app import create_app

        app = create_app({"ARTIFACTS_DIR": root, "MODEL_LOADING": "sync", "MODELS": [NAME, "wine"]})
        yield app, card, root
    finally:
        cards.unregister(NAME)
    assert NAME not in cards.names()


@pytest.fixture
def client(iris_app):
    return iris_app[0].test_client()


def _metric(text: str, name: str, **labels) -> float:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    assert values, f"{name}{labels} not in metrics"
    return sum(values)


def test_serving_code_knows_nothing_about_it():
    for path in (REPO_ROOT / "serving").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".html"):
            assert "iris" not in path.read_text().lower(), path


def test_it_loads_and_is_ready(iris_app, client):
    app = iris_app[0]
    assert app.extensions["dlqr"].registry.names == (NAME, "wine")
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and set(body["models"]) == {NAME, "wine"}
    model = app.extensions["dlqr"].registry.states[NAME].model
    assert model.selftest["golden_pairs"] == 3 and model.selftest["golden_max_abs_diff"] <= 1e-5


def test_predict_single_and_batch(client, iris_app):
    card = iris_app[1]
    single = client.post(f"/predict/{NAME}", json=EXAMPLE)
    assert single.status_code == 200, single.data
    body = single.get_json()
    assert body["model"] == NAME and body["version"] == "2026.01.01.000000"
    (pred,) = body["predictions"]
    assert tuple(pred) == card.task.output_keys() == ("species", "confidence", "probabilities")
    assert len(pred["probabilities"]) == 3 and sum(pred["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert pred["species"] == int(np.argmax(pred["probabilities"])) and pred["confidence"] == max(
        pred["probabilities"]
    )
    instances = [dict(zip(FEATURES, c.tolist(), strict=True)) for c in CENTRES[::-1]]
    batch = client.post(f"/predict/{NAME}", json={"instances": instances}).get_json()["predictions"]
    assert [p["species"] for p in batch] == [2, 1, 0]  # each typical flower is its species, in request order
    assert batch[2]["probabilities"] == pytest.approx(pred["probabilities"], abs=1e-6)


def test_requests_are_validated_by_the_card_schema(client):
    bad = client.post(f"/predict/{NAME}", json={"instances": [EXAMPLE, {**EXAMPLE, "petal_width": -1.0}]})
    assert bad.status_code == 422 and bad.content_type == "application/problem+json"
    assert bad.get_json()["errors"][0]["loc"] == ["instances", 1, "petal_width"]
    missing = {k: v for k, v in EXAMPLE.items() if k != "sepal_width"}
    assert client.post(f"/predict/{NAME}", json=missing).get_json()["errors"][0]["loc"] == ["sepal_width"]
    assert client.post(f"/predict/{NAME}", data=b"x", content_type="image/png").status_code == 415
    assert client.post("/predict/seizure", json={"eeg": [0] * 178}).status_code == 404  # not served here
    assert (
        client.post(
            "/predict/wine", json=bundles.api_instance("wine", bundles.sample_rows("wine", 1)[0])
        ).status_code
        == 200
    )


def test_models_list_and_detail(client, iris_app):
    _, card, root = iris_app
    models = client.get("/models").get_json()["models"]
    assert [m["name"] for m in models] == [NAME, "wine"]
    manifest = json.loads((root / NAME / "manifest.json").read_text())
    iris = models[0]
    assert iris["title"] == "Iris species" and iris["task"] == "multiclass" and iris["ready"] is True
    assert iris["endpoint"] == f"/predict/{NAME}" and iris["onnx_sha256"] == manifest["files"]["model.onnx"]
    detail = client.get(f"/models/{NAME}").get_json()
    assert detail["description"] == card.description and detail["media_types"] == ["application/json"]
    assert tuple(detail["input_schema"]["properties"]) == FEATURES
    assert set(detail["output"]["schema"]["properties"]) == {"species", "confidence", "probabilities"}
    assert "3-way" in detail["output"]["description"]
    assert detail["class_labels"] == list(SPECIES) and detail["units"] == "cm"
    assert detail["features"] == list(FEATURES) and detail["metrics"]["test"]["accuracy"] == 0.9
    assert detail["runtime"]["input"]["shape"][-1] == 4 and detail["runtime"]["output"]["shape"][-1] == 3


def test_openapi_documents_it(client):
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"][f"/predict/{NAME}"]["post"]
    assert op["operationId"] == f"predict_{NAME}" and "Iris species" in op["summary"]
    assert op["requestBody"]["content"]["application/json"]["examples"]["single"]["value"] == EXAMPLE
    assert list(op["requestBody"]["content"]) == ["application/json"]
    schemas = spec["components"]["schemas"]
    assert {"IrisInstance", "IrisBatch", "IrisResponse", "IrisPrediction"} <= set(schemas)
    assert set(schemas["IrisPrediction"]["properties"]) == {"species", "confidence", "probabilities"}
    assert set(schemas["IrisInstance"]["properties"]) == set(FEATURES)
    assert spec["paths"]["/models/{name}"]["get"]["parameters"][0]["schema"]["enum"] == [NAME, "wine"]
    assert "/predict/seizure" not in spec["paths"]
    jsonschema = pytest.importorskip("jsonschema")
    schema = {**op["requestBody"]["content"]["application/json"]["schema"], "components": spec["components"]}
    jsonschema.validate(EXAMPLE, schema)
    jsonschema.validate({"instances": [EXAMPLE, EXAMPLE]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**EXAMPLE, "sepal_length": "5"}, schema)


def test_docs_page_has_its_section(client):
    html = client.get("/docs").get_data(as_text=True)
    assert f'id="predict_{NAME}"' in html and f"<code>/predict/{NAME}</code>" in html
    assert f'id="body-{NAME}"' in html and f'data-model="{NAME}"' in html
    assert "Iris species" in html and "IrisInstance" in html
    example = re.search(rf'<textarea id="body-{NAME}"[^>]*>([^<]*)</textarea>', html).group(1)
    assert json.loads(example.replace("&#34;", '"').replace("&quot;", '"')) == EXAMPLE
    assert 'id="pad"' not in html  # the drawing pad belongs to an image model only


def test_metrics_count_its_predictions_by_class_label(iris_app):
    app, _, root = iris_app
    c = app.test_client()
    instances = [dict(zip(FEATURES, c_.tolist(), strict=True)) for c_ in CENTRES[[0, 0, 1, 2]]]
    before = c.get("/metrics").get_data(as_text=True)
    base = {s: _metric(before, "dlqr_model_predictions_total", model=NAME, outcome=s) for s in SPECIES}
    assert c.post(f"/predict/{NAME}", json={"instances": instances}).status_code == 200
    c.post(f"/predict/{NAME}", json={**EXAMPLE, "sepal_length": 1e9})  # 422: not counted
    text = c.get("/metrics").get_data(as_text=True)
    got = {s: _metric(text, "dlqr_model_predictions_total", model=NAME, outcome=s) - base[s] for s in SPECIES}
    assert got == {"setosa": 2, "versicolor": 1, "virginica": 1}
    assert _metric(text, "dlqr_model_ready", model=NAME) == 1
    sha = json.loads((root / NAME / "manifest.json").read_text())["files"]["model.onnx"]
    assert _metric(text, "dlqr_model_info", model=NAME, version="2026.01.01.000000", sha256=sha) == 1
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint=f"/predict/{NAME}", method="POST", status="200")
        >= 1
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint=f"/predict/{NAME}", method="POST", status="422")
        >= 1
    )
    assert _metric(text, "dlqr_model_batch_size_count", model=NAME) >= 1
    assert f'dlqr_model_predicted_value_count{{model="{NAME}"}}' not in text  # multiclass: no scalar value
