"""Request/response schemas for the HTTP API, built from the registered model cards.

A card declares one instance's pydantic type (:mod:`dlqr.cards`); this module
wraps it into the request body (one instance, or ``{"instances": [...]}`` up
to the batch limit), the response (``{"model", "version", "predictions"}``
with the task's prediction schema) and the RFC 9457 problem body. The same
models generate the OpenAPI document and the JSON Schemas shown by
``/models``.

Request bodies are parsed and validated in one pass by pydantic-core
(``TypeAdapter.validate_json``), about twice as fast as ``json.loads``
followed by validation; adapters are built once per model and batch limit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, ValidationError, create_model

from dlqr.card import ModelCard
from dlqr.schema import STRICT

#: Discriminator tags of the request wrapper; never shown to clients in error locations.
REQUEST_TAGS = frozenset({"batch", "single"})


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Path to the offending value, e.g. ["instances", 3, "ph"]')
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(description="URI reference identifying the problem type (documented on /docs)")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path")
    request_id: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="Per-field validation errors (422)")


def _title(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))


def _request_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "batch" if "instances" in value else "single"
    return None


@dataclass(frozen=True)
class ModelSchemas:
    """Everything needed to validate one model's requests and document them."""

    card: ModelCard
    max_batch: int
    batch: type[BaseModel]
    request: Any
    request_adapter: TypeAdapter
    instance_adapter: TypeAdapter
    batch_adapter: TypeAdapter
    prediction: type[BaseModel]
    response: type[BaseModel]

    @property
    def name(self) -> str:
        return self.card.name

    def parse(self, body: bytes, context: dict[str, Any] | None = None) -> list[Any]:
        """Validate a JSON body; return its instances. Raises ValidationError.

        ``request_adapter`` (a discriminated union: batch if the object has an
        ``instances`` key) is the definition. As a shortcut, the one branch the raw
        bytes point to is tried first, skipping the discriminator's extra pass
        over the input; a valid single instance can never contain the token
        ``"instances"`` (extra keys are refused, values are numbers or base64), so
        a success is always the union's answer. Any failure re-runs the union,
        which decides, and words the errors.
        """
        try:
            if b'"instances"' in body:
                return self.batch_adapter.validate_json(body, context=context).instances
            return [self.instance_adapter.validate_json(body, context=context)]
        except ValidationError:
            parsed = self.request_adapter.validate_json(body, context=context)
            return parsed.instances if isinstance(parsed, self.batch) else [parsed]

    def field_errors(self, exc: ValidationError, limit: int = 50) -> list[dict[str, Any]]:
        """Client-facing ``{loc, msg, type}`` list (discriminator tags removed, inputs not echoed)."""
        hidden = REQUEST_TAGS | self.card.schema_tags
        out = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False)[:limit]:
            loc = [part for part in err["loc"] if part not in hidden]
            out.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
        return out


@functools.lru_cache(maxsize=64)
def model_schemas(card: ModelCard, max_batch: int) -> ModelSchemas:
    """Request/response adapters of one model for a batch limit (built once per pair)."""
    title = _title(card.name)
    inst = card.instance
    batch = create_model(
        f"{title}Batch",
        __config__=STRICT,
        instances=(
            list[inst],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_batch, description=f"1..{max_batch} instances"),
        ),
    )
    request = Annotated[
        Union[Annotated[batch, Tag("batch")], Annotated[inst, Tag("single")]],  # noqa: UP007
        Discriminator(
            _request_kind,
            custom_error_type="request_shape",
            custom_error_message='the body must be a JSON object: {"instances": [...]} or a single instance',
        ),
    ]
    prediction = card.task.prediction_model(card.name)
    response = create_model(
        f"{title}Response",
        model=(Literal[card.name], ...),  # type: ignore[valid-type]
        version=(str, Field(description="Bundle version that produced the predictions")),
        predictions=(list[prediction], Field(description="One per instance, in request order")),  # type: ignore[valid-type]
    )
    return ModelSchemas(
        card=card,
        max_batch=max_batch,
        batch=batch,
        request=request,
        request_adapter=TypeAdapter(request),
        instance_adapter=TypeAdapter(inst),
        batch_adapter=TypeAdapter(batch),
        prediction=prediction,
        response=response,
    )


def build_schemas(cards: tuple[ModelCard, ...], max_batch: int) -> dict[str, ModelSchemas]:
    """Schemas for every served model."""
    return {c.name: model_schemas(c, max_batch) for c in cards}
