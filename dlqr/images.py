"""Turn an uploaded PNG/JPEG into an MNIST-style 28x28 digit.

MNIST digits are white on black, size-normalised to fit a 20x20 box (aspect
ratio kept, anti-aliased) and placed in a 28x28 field with their centre of
mass at the centre. Real uploads are anything but: a photo of a dark digit on
paper, a canvas drawing with a transparent background, a colour scan of any
size. This module reproduces MNIST's preparation on such inputs:

1. decode (PNG or JPEG only, bounded pixel count, first frame);
2. extract "ink": the alpha channel when the background is transparent,
   otherwise grey levels, inverted when the background is light;
3. subtract the background level and stretch the contrast;
4. crop to the ink's bounding box, scale the longer side to 20 px, and paste
   into 28x28 with the centre of mass at the centre.

Every failure raises :class:`ImageError` with a message fit for a client.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable

import numpy as np

ALLOWED_FORMATS = ("PNG", "JPEG")
#: MNIST's size-normalisation box and field.
BOX = 20
FIELD = 28
#: Ink below this fraction of full scale is treated as background noise.
INK_THRESHOLD = 0.1


class ImageError(ValueError):
    """The upload is not a usable PNG/JPEG digit image."""


def decode_base64(text: str) -> bytes:
    """Decode standard base64, optionally as a ``data:image/...;base64,`` URL."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise ImageError("data URL must be base64-encoded (data:image/png;base64,...)")
    compact = "".join(text.split())  # tolerate line-wrapped base64
    if not compact:
        raise ImageError("image is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image is not valid base64") from None


def _open(data: bytes, max_pixels: int, charge: Callable[[int], None] | None = None):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("not a decodable PNG or JPEG image (or too many pixels)") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ImageError("not a decodable PNG or JPEG image") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    # Count this image against the caller's per-request pixel budget before decoding it
    # (serving passes its budget's charge function; it raises to refuse).
    if charge is not None:
        charge(width * height)
    try:
        img.seek(0)  # first frame of an animated PNG
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise ImageError("image data is truncated or corrupt") from None
    return img


def _border(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels (where a centred digit's background is)."""
    if a.shape[0] < 3 or a.shape[1] < 3:
        return a.reshape(-1)
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _ink(img) -> np.ndarray:
    """Float32 ink map in [0, 1] (digit bright, background dark), any input mode."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        if float(np.median(_border(alpha))) < 0.5:
            # Transparent background (a canvas drawing): the opaque strokes are the digit.
            return alpha
        # Opaque image that merely has an alpha channel: flatten onto white.
        from PIL import Image

        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if float(np.median(_border(grey))) > 0.5:
        grey = 1.0 - grey  # dark digit on light paper -> MNIST's white on black
    return grey


def _stretch(ink: np.ndarray) -> np.ndarray:
    """Remove the background level and scale the strongest ink to 1."""
    background = float(np.median(_border(ink)))
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    if peak < 0.05:
        raise ImageError("image shows no digit (blank or uniform)")
    return ink / peak


def _center_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = float(a.sum())
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def normalize_ink(ink: np.ndarray) -> np.ndarray:
    """MNIST size normalisation + centring of an ink map; returns (28, 28) uint8."""
    from PIL import Image

    ink = _stretch(ink)
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    # Anti-aliased resampling of the 8-bit ink, as MNIST's grey levels came from.
    small = Image.fromarray(np.round(crop * 255).astype(np.uint8), mode="L").resize(
        (new_w, new_h), Image.Resampling.LANCZOS
    )
    box = np.asarray(small, dtype=np.float32)
    if box.max() <= 0:
        raise ImageError("image shows no digit after resizing (strokes too thin)")
    box *= 255.0 / box.max()
    cy, cx = _center_of_mass(box)
    # Offsets that put the centre of mass at the field centre, kept inside the field.
    top = int(np.clip(round(FIELD / 2 - 0.5 - cy), 0, FIELD - new_h))
    left = int(np.clip(round(FIELD / 2 - 0.5 - cx), 0, FIELD - new_w))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + new_h, left : left + new_w] = box
    return np.clip(np.round(field), 0, 255).astype(np.uint8)


def image_to_pixels(data: bytes, max_pixels: int, charge: Callable[[int], None] | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> MNIST-style (28, 28) uint8 array (white digit on black)."""
    img = _open(data, max_pixels, charge)
    try:
        ink = _ink(img)
    finally:
        img.close()
    return normalize_ink(ink)
