"""Image conversion: uploads of any size/colour/polarity become MNIST-style digits."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dlqr.images import ImageError, decode_base64, image_to_pixels, normalize_ink


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _one(size=(200, 300), mode="L", bg=255, fg=0, width=25) -> Image.Image:
    """A vertical stroke (a '1') of the given colours."""
    img = Image.new(mode, size, bg)
    ImageDraw.Draw(img).line(
        [(size[0] // 2, size[1] // 10), (size[0] // 2, size[1] * 9 // 10)], fill=fg, width=width
    )
    return img


def _check_mnist_style(a: np.ndarray) -> None:
    assert a.shape == (28, 28) and a.dtype == np.uint8
    assert a.max() == 255  # contrast stretched
    ys, xs = np.nonzero(a > 25)
    # fits the 20x20 box, and the background (corners) is black
    assert ys.max() - ys.min() + 1 <= 21 and xs.max() - xs.min() + 1 <= 21
    assert a[0, 0] == a[0, -1] == a[-1, 0] == a[-1, -1] == 0
    w = a.astype(float)
    cy, cx = (np.indices(a.shape) * w).reshape(2, -1).sum(1) / w.sum()
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0  # centred by mass


@pytest.mark.parametrize(
    ("img", "fmt"),
    [
        (_one(), "PNG"),  # black on white, grey
        (_one(bg=0, fg=255), "PNG"),  # already white on black
        (_one(mode="RGB", bg=(250, 240, 200), fg=(20, 20, 120)), "JPEG"),  # colour photo-like
        (_one(size=(20, 30), width=3), "PNG"),  # smaller than 28x28
        (_one(mode="RGBA", bg=(0, 0, 0, 0), fg=(30, 30, 30, 255)), "PNG"),  # canvas drawing on transparent
    ],
)
def test_uploads_become_mnist_style(img, fmt):
    a = image_to_pixels(_png(img, fmt), max_pixels=10**7)
    _check_mnist_style(a)
    # a vertical stroke stays vertical: ink spans many rows, few columns
    ys, xs = np.nonzero(a > 128)
    assert np.ptp(ys) >= 15 and np.ptp(xs) <= 8


def test_an_mnist_digit_survives_the_round_trip():
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 10:18] = rng.integers(180, 256, size=(20, 8))  # a 20-high blob, already MNIST-normalised
    out = image_to_pixels(_png(Image.fromarray(255 - digit)), max_pixels=10**6)  # sent dark on light
    corr = np.corrcoef(out.reshape(-1).astype(float), digit.reshape(-1).astype(float))[0, 1]
    assert corr > 0.9


def test_base64_and_data_urls():
    raw = _png(_one())
    b64 = base64.b64encode(raw).decode()
    assert decode_base64(b64) == raw
    assert decode_base64("data:image/png;base64," + b64) == raw
    assert decode_base64(b64[:40] + "\n" + b64[40:]) == raw  # line-wrapped
    for bad in ("", "@@@", "data:image/png,abc"):
        with pytest.raises(ImageError):
            decode_base64(bad)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"GIF89a....", "PNG or JPEG"),
        (_png(Image.new("L", (40, 40), 255)), "no digit"),  # blank
        (_png(_one())[:200], "truncated"),
        (_png(_one(), "GIF"), "PNG or JPEG"),  # a valid image in another format
    ],
)
def test_unusable_uploads_are_clear_errors(data, fragment):
    with pytest.raises(ImageError, match=fragment):
        image_to_pixels(data, max_pixels=10**6)


def test_pixel_limit_refuses_huge_images_before_decoding():
    big = _png(Image.new("L", (3000, 3000), 0))
    with pytest.raises(ImageError, match="pixels"):
        image_to_pixels(big, max_pixels=1_000_000)


def test_normalize_ink_rejects_an_empty_map():
    with pytest.raises(ImageError):
        normalize_ink(np.zeros((50, 50), np.float32))
