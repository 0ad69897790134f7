"""OpenAPI 3.1 document generated from the pydantic models, and a self-contained docs page.

``/openapi.json`` is built once per app from :mod:`serving.schemas` (so the
documented batch limit is the configured one). ``/docs`` renders the same
document server-side with an inline stylesheet and a small inline script for
"try it": no CDN or other external resource, so it works air-gapped, and a
Content-Security-Policy header enforces that.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from flask import Flask, Response, render_template
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import TypeAdapter

from serving.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES, problem_statuses, problem_type
from serving.schemas import ModelSchemas, Problem

REF = "#/components/schemas/{model}"

DOCS_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


_PREFIX = REF.format(model="")
#: JSON Schema keywords that bound a value, shown per field on /docs.
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems",
          "minLength", "maxLength", "pattern", "enum", "const")  # fmt: skip


def inline_refs(schema: Any, components: dict[str, Any], _seen: tuple[str, ...] = ()) -> Any:
    """A copy of ``schema`` with every ``#/components/schemas/...`` reference replaced by its schema.

    A schema that refers to itself (none does today) keeps its reference at the second visit.
    """
    if isinstance(schema, list):
        return [inline_refs(v, components, _seen) for v in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_PREFIX) and ref[len(_PREFIX) :] not in _seen:
        name = ref[len(_PREFIX) :]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {
            **inline_refs(components[name], components, (*_seen, name)),
            **inline_refs(rest, components, _seen),
        }
    return {k: inline_refs(v, components, _seen) for k, v in schema.items()}


def field_rows(schema: dict[str, Any], path: str = "") -> list[tuple[str, str, str]]:
    """``(field, type, bounds)`` for every typed node of an inlined schema, in document order."""
    rows: list[tuple[str, str, str]] = []
    for alt in schema.get("anyOf", []) + schema.get("oneOf", []):
        rows += field_rows(alt, path)
    kind = schema.get("type")
    if kind is not None and path:
        bounds = ", ".join(f"{k} {json.dumps(schema[k])}" for k in BOUNDS if k in schema)
        rows.append((path, kind if isinstance(kind, str) else " | ".join(kind), bounds))
    for name, sub in schema.get("properties", {}).items():
        rows += field_rows(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        rows += field_rows(schema["items"], f"{path}[]")
    return list(dict.fromkeys(rows))


_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def markdown(text: str) -> Markup:
    """Render a Markdown description for /docs (raw HTML in it is escaped, not passed through)."""
    return Markup(_MARKDOWN.render(text or ""))


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}},
    }


def build_openapi(schemas: dict[str, ModelSchemas], version: str) -> dict[str, Any]:
    """The OpenAPI document for the configured models and limits."""
    inputs = []
    for name, ms in schemas.items():
        inputs.append(((name, "request"), "validation", ms.request_adapter))
        inputs.append(((name, "response"), "serialization", TypeAdapter(ms.response)))
    inputs.append((("problem", "problem"), "serialization", TypeAdapter(Problem)))
    keyed, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    components = dict(defs.get("$defs", {}))
    paths: dict[str, Any] = {}
    # Every status a problem type can answer with (serving/errors.py's table), so the document
    # lists the hardening answers (408, 503 overloaded, 504, ...) as well as the API's own.
    common_errors = {
        str(status): _problem_response(
            "; ".join(f"{PROBLEM_TYPES[slug][0]} (`{problem_type(slug)}`)" for slug in slugs)
        )
        for status, slugs in problem_statuses().items()
    }
    for name, ms in schemas.items():
        card = ms.card
        max_batch = ms.max_batch
        example = dict(card.example)
        content: dict[str, Any] = {
            "application/json": {
                "schema": keyed[((name, "request"), "validation")],
                "examples": {
                    "single": {"summary": "One instance", "value": example},
                    "batch": {"summary": "A batch", "value": {"instances": [example, example]}},
                },
            }
        }
        for media in card.media:
            content[media] = {"schema": {"type": "string", "format": "binary"}}
        paths[f"/predict/{name}"] = {
            "post": {
                "operationId": f"predict_{name}",
                "tags": ["predict"],
                "summary": f"Predict with the {name} model: {card.title}",
                "description": (
                    f"{card.description} {card.task.describe()} "
                    f'Body: one instance, or `{{"instances": [...]}}` with 1..{max_batch} instances. '
                    "Predictions come back in request order."
                    + (
                        f" A raw body of type {' or '.join(card.media)} is one instance."
                        if card.media
                        else ""
                    )
                ),  # fmt: skip
                "requestBody": {"required": True, "content": content},
                "responses": {
                    "200": {
                        "description": "Predictions",
                        "content": {
                            "application/json": {"schema": keyed[((name, "response"), "serialization")]}
                        },
                    },
                    **common_errors,
                },
            }
        }
    simple = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/models"] = {"get": {"operationId": "list_models", "tags": ["models"],
                                "summary": "Every model: status, version, sha256s, test metrics, threshold",
                                "responses": {"200": simple}}}  # fmt: skip
    paths["/models/{name}"] = {
        "get": {
            "operationId": "get_model",
            "tags": ["models"],
            "summary": "One model in full: input JSON Schema, output description, metrics, runtime, self-test",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(schemas)},
                }
            ],  # fmt: skip
            "responses": {"200": simple, "404": _problem_response("Unknown model")},
        }
    }
    paths["/models/{name}/card"] = {
        "get": {
            "operationId": "get_model_card",
            "tags": ["models"],
            "summary": "The served bundle's model card (Markdown): intended use, data, metrics vs baseline, caveats",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(schemas)},
                }
            ],
            "responses": {
                "200": {"description": "OK", "content": {"text/markdown": {"schema": {"type": "string"}}}},
                "404": _problem_response("Unknown model, or a bundle without MODEL_CARD.md"),
            },
        }
    }
    paths["/healthz"] = {"get": {"operationId": "healthz", "tags": ["ops"], "summary": "Liveness (process answers)",
                                 "responses": {"200": simple}}}  # fmt: skip
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "tags": ["ops"],
            "summary": "Readiness: all bundles verified, loaded and self-tested",
            "responses": {"200": simple, "503": _problem_response("Not ready, with the reason per model")},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "tags": ["ops"],
            "summary": "Prometheus text format, aggregated over all Gunicorn workers",
            "responses": {
                "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
            },
        }
    }
    components["Problem"] = keyed[(("problem", "problem"), "serialization")]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DLQR model serving",
            "version": version,
            "description": "; ".join(f"{ms.card.name}: {ms.card.title}" for ms in schemas.values())
            + ". Errors are RFC 9457 problem details; every response carries X-Request-ID.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2)


def init_app(
    app: Flask, schemas: dict[str, ModelSchemas], version: str, extra_paths: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Routes /openapi.json (built at app creation) and /docs (rendered on its first request).

    ``extra_paths`` are other doors' routes (the Open Inference Protocol's, :func:`serving.v2.openapi_paths`).

    Compiling and rendering the docs template costs about 80 ms, on every worker start (and
    restart) if done here; the page is asked for rarely, so the first ``/docs`` pays it once.
    """
    spec = build_openapi(schemas, version)
    spec["paths"].update(extra_paths or {})
    spec_json = json.dumps(spec, separators=(",", ":"))

    @functools.cache  # two concurrent first requests may both render: same page, no harm
    def page() -> str:
        return render_template(
            "docs.html",
            spec=spec,
            pretty=_pretty,
            markdown=markdown,
            # request schemas with their $refs inlined, so the page shows every field and bound
            requests={
                f"/predict/{name}": inline_refs(
                    spec["paths"][f"/predict/{name}"]["post"]["requestBody"]["content"]["application/json"][
                        "schema"
                    ],
                    spec["components"]["schemas"],
                )
                for name in schemas
            },
            field_rows=field_rows,
            problems=[
                (slug, problem_type(slug), title, text) for slug, (title, text) in PROBLEM_TYPES.items()
            ],
            models=list(schemas),
            examples={name: json.dumps(dict(ms.card.example)) for name, ms in schemas.items()},
            # the drawing pad goes to the first model that takes a PNG body and has a 2-D input
            pad_model=next(
                (n for n, ms in schemas.items() if "image/png" in ms.card.media and ms.card.input_shape), None
            ),
        )

    def openapi_json() -> Response:
        return Response(spec_json, content_type="application/json")

    def docs() -> Response:
        resp = Response(page(), content_type="text/html; charset=utf-8")
        resp.headers["Content-Security-Policy"] = DOCS_CSP
        return resp

    app.add_url_rule("/openapi.json", "openapi", openapi_json, methods=["GET"])
    app.add_url_rule("/docs", "docs", docs, methods=["GET"])
    return spec
