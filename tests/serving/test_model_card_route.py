"""GET /models/<name>/card: the served bundle's MODEL_CARD.md, linked from /docs."""

from __future__ import annotations

import json

from tests.serving import bundles


def test_card_is_the_bundle_file_as_markdown(client, artifacts):
    for name in bundles.MODEL_NAMES:
        r = client.get(f"/models/{name}/card")
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.content_type.startswith("text/markdown")
        text = r.get_data(as_text=True)
        assert text == (artifacts / name / "MODEL_CARD.md").read_text(encoding="utf-8")
        version = json.loads((artifacts / name / "manifest.json").read_text())["version"]
        assert version in text


def test_unknown_model_card_is_a_404_problem(client):
    r = client.get("/models/beer/card")
    assert r.status_code == 404 and r.content_type == "application/problem+json"
    assert r.get_json()["type"].endswith("unknown-model")


def test_docs_and_openapi_link_the_cards(client):
    page = client.get("/docs").get_data(as_text=True)
    for name in bundles.MODEL_NAMES:
        assert f'href="/models/{name}/card"' in page
    assert "/models/{name}/card" in client.get("/openapi.json").get_json()["paths"]
