"""What every HTTP door shares: the app's :class:`Service`, the request body, the JSON encoder.

Kept apart from the doors (:mod:`serving.api`, :mod:`serving.v2`) so that none
of them imports another, and from the app factory so that nothing imports
:mod:`serving.app` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pydantic_core
from flask import current_app

from serving.dataplane import DataPlane
from serving.logs import AccessLog
from serving.metrics import Metrics
from serving.registry import Registry
from serving.schemas import ModelSchemas
from serving.settings import Settings


@dataclass
class Service:
    """What the views need, stored in ``app.extensions['dlqr']``."""

    settings: Settings
    registry: Registry
    metrics: Metrics
    schemas: dict[str, ModelSchemas]
    validation_context: dict[str, Any]
    access_log: AccessLog
    plane: DataPlane


def service() -> Service:
    return current_app.extensions["dlqr"]


def package_version() -> str:
    """The installed dlqr-serving version (``0+unknown`` from a bare checkout)."""
    try:
        return metadata.version("dlqr-serving")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def read_body(req: Any) -> bytes:
    """The request body, read from memory.

    serving.guard has already read every body (at most DLQR_MAX_BODY_BYTES, else 413) and set
    ``CONTENT_LENGTH``. Reading straight from the input skips Werkzeug's stream wrappers
    (measurable per request).
    """
    length = req.content_length or 0
    return req.environ["wsgi.input"].read(length) if length else b""


def encode(obj: Any) -> bytes:
    """Compact JSON of an answer, serialized by pydantic-core in Rust.

    A 256-row digit answer (10 probabilities per row) takes 0.4 ms instead of the standard
    library's 3.6 ms, with the same parsed result. Callers never pass NaN or Infinity: model
    outputs are checked to be finite before post-processing.
    """
    return pydantic_core.to_json(obj)
