"""Every PIL image mode to the ``(H, W, 3) uint8`` RGB the models see, faithfully or refused.

``Image.convert("RGB")`` alone destroys the images scientists use most: values of a 16-bit image
above 255 are clipped (a microscopy frame turns white), a float image in ``[0, 1]`` is truncated to
0 and 1 (black), and transparent pixels show whatever colour happens to hide under them. The rules
here, one per family of modes (PIL's mode names, see the Pillow "Concepts" page):

======================  ============================================================================
8-bit colour/grey       ``1``, ``L``, ``P`` (no transparency), ``RGB``, ``RGBX``, ``YCbCr``:
                        PIL's own conversion (exact).
``CMYK``                PIL's conversion, ``R = 255 * (1 - C) * (1 - K)`` (same for G/M, B/Y), the
                        usual device-independent formula (no ICC profile is applied).
alpha                   ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa`` and ``P`` with a transparency
                        entry: composited over a white background, ``out = a * c + (1 - a) * 255``
                        (transparent areas become white, not the hidden colour).
integer > 8 bits        ``I;16`` (and ``I;16L``, ``I;16B``, ``I;16N``) and ``I`` (32-bit): the
                        image's own range ``[min, max]`` is stretched linearly onto ``[0, 255]``
                        (12-bit data in a 16-bit file keeps its contrast; nothing saturates). A
                        constant image is scaled by the full 16-bit range.
float                   ``F``: values in ``[0, 1]`` are multiplied by 255 (the usual convention);
                        any other range is stretched like the integer modes. NaN and infinities
                        are refused (they have no brightness).
anything else           (``LAB``, ``HSV``, ``I;16S``, ...) refused with an error naming the mode.
======================  ============================================================================

Rounding is to the nearest integer everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dinoeval.errors import DinoevalError

if TYPE_CHECKING:
    from PIL import Image

EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBX", "YCbCr", "CMYK")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
FLOAT_MODES = ("F",)
SUPPORTED_MODES = EIGHT_BIT_MODES + ALPHA_MODES + INTEGER_MODES + FLOAT_MODES
BACKGROUND = 255  # alpha is composited over white


class UnsupportedModeError(DinoevalError):
    """An image mode with no faithful RGB conversion."""


def to_rgb(im: Image.Image) -> np.ndarray:
    """``im`` as an ``(H, W, 3) uint8`` RGB array by the rules of this module.

    Raises:
        UnsupportedModeError: for a mode outside :data:`SUPPORTED_MODES` or a float image holding
            NaN/inf.
    """
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        return _over_white(im.convert("RGBA"))
    if mode in EIGHT_BIT_MODES:
        return np.asarray(im.convert("RGB"))
    if mode in ALPHA_MODES:
        return _over_white(im.convert("RGBA"))
    if mode in INTEGER_MODES or mode in FLOAT_MODES:
        grey = _scaled_grey(_high_bit_values(im), is_float=mode in FLOAT_MODES, mode=mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    raise UnsupportedModeError(
        f"image mode {mode!r} has no faithful RGB conversion in dinoeval (supported: "
        f"{', '.join(SUPPORTED_MODES)}); convert the file to RGB or 16-bit grayscale first")


def _over_white(rgba: Image.Image) -> np.ndarray:
    a = np.asarray(rgba, dtype=np.float64)
    alpha = a[:, :, 3:4] / 255.0
    out = a[:, :, :3] * alpha + BACKGROUND * (1.0 - alpha)
    return np.rint(out).astype(np.uint8)


def _high_bit_values(im: Image.Image) -> np.ndarray:
    """The pixel values of a 16/32-bit integer or float image as float64 (byte order handled)."""
    if im.mode.startswith("I;16"):
        dtype = ">u2" if im.mode == "I;16B" else "<u2" if im.mode in ("I;16", "I;16L") else "=u2"
        arr = np.frombuffer(im.tobytes(), dtype=dtype).reshape(im.height, im.width)
        return arr.astype(np.float64)
    return np.asarray(im, dtype=np.float64)


def _scaled_grey(values: np.ndarray, *, is_float: bool, mode: str) -> np.ndarray:
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    if not np.isfinite(values).all():
        raise UnsupportedModeError(f"float image (mode {mode!r}) holds NaN or infinite values, "
                                   "which have no brightness; replace them in the file first")
    lo, hi = float(values.min()), float(values.max())
    if is_float and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif hi == lo:  # constant: no range of its own
        lo, hi = (0.0, 1.0) if is_float and 0.0 <= lo <= 1.0 else (0.0, 65535.0)
        values = np.clip(values, lo, hi)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
