"""Card: digit, MNIST 10-way classification of a 28x28 grey image (white digit on black).

An instance is ``{"pixels": [...]}`` (784 integers 0-255, or a 28x28 nested
list) or ``{"image": "<base64 PNG/JPEG>"}``; a raw ``image/png`` or
``image/jpeg`` request body is one image instance. Images are converted the
way MNIST was made (:mod:`dlqr.images`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Strict,
    Tag,
    TypeAdapter,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from dlqr.card import ModelCard
from dlqr.drift import IMAGE_SUMMARIES, image_summaries
from dlqr.schema import STRICT
from dlqr.tasks import Multiclass

HEIGHT = WIDTH = 28
N_PIXELS = HEIGHT * WIDTH
PIXEL_MAX = 255
CLASS_LABELS = tuple(str(d) for d in range(10))
FEATURES = tuple(f"px{i}" for i in range(N_PIXELS))
#: Default cap on one decoded image (overridden by the validation context's max_image_pixels).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096

# Pixels are validated as strict ints by pydantic, then range-checked and packed in
# one C call: bytes() accepts exactly 0..255. That is ~3x cheaper than per-item
# ge/le constraints for 784 values; on failure the constrained adapter below re-runs
# to report every offending index with its usual pydantic location and message.
_PIXEL_RANGE = Field(json_schema_extra={"minimum": 0, "maximum": PIXEL_MAX})
RawPixel = Annotated[int, Strict(), _PIXEL_RANGE]
CheckedPixel = Annotated[int, Strict(), Field(ge=0, le=PIXEL_MAX)]
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
    list[RawPixel], Field(min_length=N_PIXELS, max_length=N_PIXELS), AfterValidator(_pack_flat)
]
PixelRow = Annotated[list[RawPixel], Field(min_length=WIDTH, max_length=WIDTH)]
GridPixels = Annotated[
    list[PixelRow], Field(min_length=HEIGHT, max_length=HEIGHT), AfterValidator(_pack_grid)
]


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


def decode_image(data: bytes, context: Mapping[str, Any] | None) -> bytes:
    """Encoded PNG/JPEG -> 784 MNIST-style pixel bytes; raises dlqr.images.ImageError."""
    from dlqr.images import image_to_pixels

    context = context or {}
    max_pixels = context.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    # charge_pixels: the server's per-request work budget, charged from the header before decoding.
    return image_to_pixels(data, max_pixels, context.get("charge_pixels")).tobytes()


def _decode_image_field(value: str, info: ValidationInfo) -> bytes:
    from dlqr.images import ImageError, decode_base64

    try:
        return decode_image(decode_base64(value), info.context)
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
        AfterValidator(_decode_image_field),
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


def _rows(instances: Sequence[Any], features: Sequence[str]) -> np.ndarray:
    # Validation already packed each instance's pixels (or decoded image) into 784 bytes.
    packed = b"".join(
        inst.image if isinstance(inst, DigitImageInstance) else inst.pixels for inst in instances
    )
    return np.frombuffer(packed, dtype=np.uint8).reshape(len(instances), -1).astype(np.float64)


def _instance(card: ModelCard, row: np.ndarray, features: Sequence[str]) -> dict[str, Any]:
    row = np.asarray(row, dtype=np.float64)
    if np.all(np.abs(row) < 2**53) and np.all(row == np.trunc(row)):
        return {"pixels": row.astype(np.int64).tolist()}  # exact here, and 25x faster than int() per pixel
    return {"pixels": [int(v) for v in row]}


def _raw_image(body: bytes, context: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(decode_image(body, context), dtype=np.uint8).reshape(1, -1).astype(np.float64)


#: Discriminator tags of this card's schema; never shown to clients in error locations.
TAGS = frozenset({"pixels-flat", "pixels-28x28", "pixels-instance", "image-instance"})

# The documented example: MNIST t10k test image 0 (a 7), one hex string per row of 28 pixels, so the
# example shown on /docs and in the OpenAPI document is a real digit rather than a blank image.
EXAMPLE_ROWS = (  # fmt: skip
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
    "00000000000054b99f973c2400000000000000000000000000000000",
    "000000000000defefefefef1c6c6c6c6c6c6c6c6aa34000000000000",
    "00000000000043724872a3e3fee1fefefefae5fefe8c000000000000",
    "000000000000000000000011420e4343433b15ecfe6a000000000000",
    "00000000000000000000000000000000000053fdd112000000000000",
    "000000000000000000000000000000000016e9ff5300000000000000",
    "000000000000000000000000000000000081feee2c00000000000000",
    "000000000000000000000000000000003bf9fe3e0000000000000000",
    "0000000000000000000000000000000085febb050000000000000000",
    "00000000000000000000000000000009cdf83a000000000000000000",
    "0000000000000000000000000000007efeb600000000000000000000",
    "00000000000000000000000000004bfbf03900000000000000000000",
    "0000000000000000000000000013ddfea60000000000000000000000",
    "00000000000000000000000003cbfedb230000000000000000000000",
    "00000000000000000000000026fefe4d000000000000000000000000",
    "00000000000000000000001fe0fe7301000000000000000000000000",
    "000000000000000000000085fefe3400000000000000000000000000",
    "000000000000000000003df2fefe3400000000000000000000000000",
    "0000000000000000000079fefedb2800000000000000000000000000",
    "0000000000000000000079fecf120000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000",
)


def _profile(rows: np.ndarray) -> np.ndarray:
    """(n, 784) pixels -> the per-image summaries of :data:`dlqr.drift.IMAGE_SUMMARIES`."""
    return image_summaries(rows, (HEIGHT, WIDTH), PIXEL_MAX)


CARD = ModelCard(
    name="digit",
    title="Handwritten digit",
    description="10-way classification of a 28x28 grey image of a handwritten digit (MNIST, LeCun, "
    "Cortes and Burges): pixels, a nested list, or a PNG/JPEG converted the way MNIST was made.",
    task=Multiclass(label="digit", classes=CLASS_LABELS, description="digits 0-9"),
    instance=DigitInstance,
    features=FEATURES,
    example={"pixels": [list(bytes.fromhex(row)) for row in EXAMPLE_ROWS]},
    to_rows=_rows,
    to_instance=_instance,
    media={"image/png": _raw_image, "image/jpeg": _raw_image},
    input_range=(0.0, float(PIXEL_MAX)),
    input_datatype="UINT8",
    input_name="pixels",
    schema_tags=TAGS,
    input_shape=(HEIGHT, WIDTH),
    extra={"class_labels": list(CLASS_LABELS), "image_shape": [HEIGHT, WIDTH], "pixel_range": [0, PIXEL_MAX]},
    # 10 of the 10,000 MNIST test digits
    promotion_tolerance={"accuracy": 0.001},
    # Drift is watched on per-image summaries: one pixel's PSI says nothing about an image.
    profile=_profile,
    profile_features=IMAGE_SUMMARIES,
)
