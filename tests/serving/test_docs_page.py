"""What /docs shows: request fields with types and bounds, Markdown rendered, a real digit as the example."""

from __future__ import annotations

import html
import json
import re

from serving.openapi import field_rows, inline_refs, markdown


def test_inline_refs_replaces_every_reference():
    comps = {
        "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
        "B": {"type": "integer", "maximum": 3},
    }
    out = inline_refs({"$ref": "#/components/schemas/A"}, comps)
    assert out == {"type": "object", "properties": {"b": {"type": "integer", "maximum": 3}}}
    assert inline_refs(
        {"$ref": "#/components/schemas/A"}, {"A": {"items": {"$ref": "#/components/schemas/A"}}}
    ) == {"items": {"$ref": "#/components/schemas/A"}}  # a self-reference stops at the second visit


def test_field_rows_lists_fields_types_and_bounds():
    schema = {
        "type": "object",
        "properties": {"xs": {"type": "array", "maxItems": 2, "items": {"type": "number", "minimum": 0}}},
    }
    assert field_rows(schema) == [("xs", "array", "maxItems 2"), ("xs[]", "number", "minimum 0")]


def test_markdown_is_rendered_and_raw_html_escaped():
    assert str(markdown("a `b`")) == "<p>a <code>b</code></p>\n"
    assert "<script>" not in str(markdown("<script>x</script>"))


def test_docs_page_shows_request_fields_with_bounds(client):
    page = client.get("/docs").get_data(as_text=True)
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>([^<]+)</td><td>([^<]*)</td></tr>", page)
    assert ("instances[].ph", "number", "minimum 0, maximum 14") in rows
    assert any(f == "eeg" and "minItems 178" in b for f, _, b in rows)
    fields = page.split("Request fields", 1)[1].split("</details>", 1)[0]
    assert "$ref" not in fields
    assert "<code>{&quot;instances&quot;: [...]}</code>" in page  # Markdown in the descriptions


def test_the_digit_example_is_a_real_digit(client):
    page = client.get("/docs").get_data(as_text=True)
    body = html.unescape(re.search(r'<textarea id="body-digit"[^>]*>([^<]*)</textarea>', page).group(1))
    pixels = json.loads(body)["pixels"]
    assert sum(map(sum, pixels)) > 10_000  # ink, not a blank image
    answer = client.post("/predict/digit", json=json.loads(body)).get_json()
    assert answer["predictions"][0]["digit"] in range(10)
