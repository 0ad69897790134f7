"""Pydantic request/response models, built from :mod:`serving.spec`.

One module defines what a valid request is, and the same models generate the
OpenAPI document and the input JSON Schemas shown by ``/models``. Validation
is strict (no string-to-number coercion, no booleans as numbers, extra keys
refused so a misspelt feature such as ``pH`` is an error rather than ignored),
and every float must be finite (JSON ``NaN``/``Infinity`` tokens are refused).

Request bodies are parsed and validated in one pass by pydantic-core
(``TypeAdapter.validate_json``), about twice as fast as ``json.loads``
followed by validation; adapters are built once per batch limit.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
)
from pydantic_core import PydanticCustomError

from serving.spec import DIGIT, MODEL_NAMES, SEIZURE, WINE

#: Magnitude cap on real-valued inputs. Far outside any physical wine or EEG value,
#: it keeps the float32 network arithmetic finite (a 1e300 input would overflow).
MAX_ABS = 1e6

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

# (description with units, lower-bound keyword, bounds); all are concentrations
# (>= 0) except density (> 0) and pH (0..14): physically impossible values are refused.
_WINE_FIELDS: dict[str, tuple[str, dict[str, float]]] = {
    "fixed_acidity": ("Fixed acidity, g(tartaric acid)/dm3", {"ge": 0}),
    "volatile_acidity": ("Volatile acidity, g(acetic acid)/dm3", {"ge": 0}),
    "citric_acid": ("Citric acid, g/dm3", {"ge": 0}),
    "residual_sugar": ("Residual sugar, g/dm3", {"ge": 0}),
    "chlorides": ("Chlorides, g(sodium chloride)/dm3", {"ge": 0}),
    "free_sulfur_dioxide": ("Free sulfur dioxide, mg/dm3", {"ge": 0}),
    "total_sulfur_dioxide": ("Total sulfur dioxide, mg/dm3", {"ge": 0}),
    "density": ("Density, g/cm3 (must be > 0)", {"gt": 0}),
    "ph": ("pH (0-14)", {"ge": 0, "le": 14}),
    "sulphates": ("Sulphates, g(potassium sulphate)/dm3", {"ge": 0}),
}
if tuple(_WINE_FIELDS) != WINE.features:  # spec.py is the source of truth: fail loudly on drift
    raise RuntimeError(f"serving.schemas wine fields {tuple(_WINE_FIELDS)} != spec {WINE.features}")

#: A real row of the UCI white-wine table (row 0), used as the documented example.
WINE_EXAMPLE = {
    "fixed_acidity": 7.0,
    "volatile_acidity": 0.27,
    "citric_acid": 0.36,
    "residual_sugar": 20.7,
    "chlorides": 0.045,
    "free_sulfur_dioxide": 45.0,
    "total_sulfur_dioxide": 170.0,
    "density": 1.001,
    "ph": 3.0,
    "sulphates": 0.45,
}


def _wine_field(desc: str, bounds: dict[str, float]) -> tuple[type, Any]:
    return (
        float,
        Field(
            ...,
            description=desc,
            le=bounds.get("le", MAX_ABS),
            **{k: v for k, v in bounds.items() if k != "le"},
        ),
    )


WineInstance = create_model(
    "WineInstance",
    __config__=ConfigDict(
        **STRICT,
        title="WineInstance",
        json_schema_extra={
            "description": "One white wine: the 10 physico-chemical measurements (snake_case names).",
            "examples": [WINE_EXAMPLE],
        },
    ),
    **{name: _wine_field(desc, bounds) for name, (desc, bounds) in _WINE_FIELDS.items()},
)

EegValue = Annotated[float, Field(ge=-MAX_ABS, le=MAX_ABS)]


class SeizureInstance(BaseModel):
    """One EEG chunk: 178 consecutive samples (about 1 s at 173.61 Hz), in microvolts."""

    model_config = STRICT
    eeg: Annotated[
        list[EegValue],
        Field(
            min_length=SEIZURE.n_samples,
            max_length=SEIZURE.n_samples,
            description=f"{SEIZURE.n_samples} finite EEG samples, columns X1..X{SEIZURE.n_samples} of the UCI table",
        ),
    ]


# Pixels are validated as strict ints by pydantic, then range-checked and packed in
# one C call: bytes() accepts exactly 0..255. That is ~3x cheaper than per-item
# ge/le constraints for 784 values; on failure the constrained adapter below re-runs
# to report every offending index with its usual pydantic location and message.
_PIXEL_RANGE = Field(json_schema_extra={"minimum": 0, "maximum": DIGIT.pixel_max})
RawPixel = Annotated[int, Strict(), _PIXEL_RANGE]
CheckedPixel = Annotated[int, Strict(), Field(ge=0, le=DIGIT.pixel_max)]
_FLAT_CHECK = TypeAdapter(list[CheckedPixel])
_GRID_CHECK = TypeAdapter(list[list[CheckedPixel]])


def _pack_flat(value: list[int]) -> bytes:
    try:
        return bytes(value)
    except ValueError:
        _FLAT_CHECK.validate_python(value)  # raises the per-index errors
        raise


def _pack_grid(value: list[list[int]]) -> bytes:
    try:
        return bytes(itertools.chain.from_iterable(value))
    except ValueError:
        _GRID_CHECK.validate_python(value)
        raise


FlatPixels = Annotated[
    list[RawPixel], Field(min_length=DIGIT.n_pixels, max_length=DIGIT.n_pixels), AfterValidator(_pack_flat)
]
PixelRow = Annotated[list[RawPixel], Field(min_length=DIGIT.width, max_length=DIGIT.width)]
GridPixels = Annotated[
    list[PixelRow], Field(min_length=DIGIT.height, max_length=DIGIT.height), AfterValidator(_pack_grid)
]

# Discriminator tags never reach clients: they are stripped from error locations.
TAGS = frozenset({"batch", "single", "pixels-flat", "pixels-28x28", "pixels-instance", "image-instance"})


def _pixels_shape(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "pixels-28x28"
    return "pixels-flat"


Pixels = Annotated[
    Union[Annotated[FlatPixels, Tag("pixels-flat")], Annotated[GridPixels, Tag("pixels-28x28")]],  # noqa: UP007
    Discriminator(_pixels_shape),
]


class DigitPixelsInstance(BaseModel):
    """A 28x28 MNIST-style image: white digit (255) on black (0), row-major."""

    model_config = STRICT
    pixels: Annotated[
        Pixels,
        Field(description="784 integers 0-255 (row-major), or a 28x28 nested list; white digit on black"),
    ]


def _decode_image(value: str, info: ValidationInfo) -> bytes:
    from serving.images import ImageError, decode_base64, image_to_pixels

    max_pixels = (info.context or {}).get("max_image_pixels", 4096 * 4096)
    try:
        return image_to_pixels(decode_base64(value), max_pixels).tobytes()
    except ImageError as exc:
        raise PydanticCustomError("image_invalid", str(exc)) from None


class DigitImageInstance(BaseModel):
    """An encoded image of one digit: any size, grey or colour, either polarity."""

    model_config = STRICT
    image: Annotated[
        str,
        Field(
            min_length=1,
            description="base64 PNG or JPEG (a data: URL is accepted); converted to MNIST style "
            "(white digit on black, 20x20 box centred by mass in 28x28)",
        ),
        AfterValidator(_decode_image),
    ]


def _digit_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "pixels" in value:
            return "pixels-instance"
        if "image" in value:
            return "image-instance"
    return None


DigitInstance = Annotated[
    Union[  # noqa: UP007
        Annotated[DigitPixelsInstance, Tag("pixels-instance")],
        Annotated[DigitImageInstance, Tag("image-instance")],
    ],
    Discriminator(
        _digit_kind,
        custom_error_type="digit_instance",
        custom_error_message="a digit instance is an object with 'pixels' (784 or 28x28 integers 0-255) "
        "or 'image' (base64 PNG/JPEG)",
    ),
]

INSTANCE_TYPES: dict[str, Any] = {"wine": WineInstance, "seizure": SeizureInstance, "digit": DigitInstance}


# ----------------------------------------------------------------- responses


class WinePrediction(BaseModel):
    alcohol: float = Field(
        description="Predicted alcohol content, % vol (unscaled with the fitted target scaler)"
    )


class SeizurePrediction(BaseModel):
    probability: float = Field(ge=0, le=1, description="Model probability that the chunk shows a seizure")
    seizure: bool = Field(description="probability >= threshold")
    threshold: float = Field(description="The bundle's operating point, chosen on the validation split")


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="Most probable class")
    confidence: float = Field(ge=0, le=1, description="Probability of that class")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="Softmax output for 0..9")


PREDICTION_TYPES: dict[str, type[BaseModel]] = {
    "wine": WinePrediction,
    "seizure": SeizurePrediction,
    "digit": DigitPrediction,
}

OUTPUT_DESCRIPTIONS = {
    "wine": "Regression: alcohol content in % vol, unscaled from the network's standardised output.",
    "seizure": "Binary classification: sigmoid probability of a seizure and the decision "
    "probability >= threshold at the bundle's operating point.",
    "digit": "10-way classification: argmax digit, its probability and the full softmax vector.",
}


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


def _response_model(name: str) -> type[BaseModel]:
    return create_model(
        f"{name.capitalize()}Response",
        model=(Literal[name], ...),  # type: ignore[valid-type]
        version=(str, Field(description="Bundle version that produced the predictions")),
        predictions=(list[PREDICTION_TYPES[name]], Field(description="One per instance, in request order")),
    )


RESPONSE_TYPES: dict[str, type[BaseModel]] = {n: _response_model(n) for n in MODEL_NAMES}


# ------------------------------------------------------------------ requests


def _request_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "batch" if "instances" in value else "single"
    return None


@dataclass(frozen=True)
class ModelSchemas:
    """Everything needed to validate one model's requests and document them."""

    name: str
    max_batch: int
    instance: Any
    batch: type[BaseModel]
    request: Any
    request_adapter: TypeAdapter
    instance_adapter: TypeAdapter
    batch_adapter: TypeAdapter

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


@functools.lru_cache(maxsize=8)
def build_schemas(max_batch: int) -> dict[str, ModelSchemas]:
    """Request adapters for every model with a batch limit (built once per limit)."""
    out = {}
    for name in MODEL_NAMES:
        inst = INSTANCE_TYPES[name]
        batch = create_model(
            f"{name.capitalize()}Batch",
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
        out[name] = ModelSchemas(
            name=name,
            max_batch=max_batch,
            instance=inst,
            batch=batch,
            request=request,
            request_adapter=TypeAdapter(request),
            instance_adapter=TypeAdapter(inst),
            batch_adapter=TypeAdapter(batch),
        )
    return out


def field_errors(exc: ValidationError, limit: int = 50) -> list[dict[str, Any]]:
    """Client-facing ``{loc, msg, type}`` list (discriminator tags removed, inputs not echoed)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False)[:limit]:
        loc = [part for part in err["loc"] if part not in TAGS]
        out.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return out


def instance_rows(name: str, instances: list[Any], features: tuple[str, ...]) -> np.ndarray:
    """Validated instances -> (n, d) float64 array in the model's feature order."""
    if name == "wine":
        return np.array([[getattr(inst, f) for f in features] for inst in instances], dtype=np.float64)
    if name == "seizure":
        return np.array([inst.eeg for inst in instances], dtype=np.float64)
    if name == "digit":
        # Validation already packed each instance's pixels (or decoded image) into 784 bytes.
        packed = b"".join(
            inst.image if isinstance(inst, DigitImageInstance) else inst.pixels for inst in instances
        )
        return np.frombuffer(packed, dtype=np.uint8).reshape(len(instances), -1).astype(np.float64)
    raise ValueError(f"unknown model {name!r}")
