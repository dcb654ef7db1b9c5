"""The evaluation transform, on whole uint8 batches as tensors.

ImageNet protocol (DINO's eval): resize the shorter side to ``size / crop_ratio`` (256 for 224,
bicubic, antialiased, the long side truncated as torchvision's ``Resize`` does), center-crop
``size``, normalise with the ImageNet mean/std. Small images
(both sides <= 64 px, e.g. Fashion-MNIST) are resized straight to ``size`` (``crop_ratio = 1``):
cutting 12% of a 28-px image's border would remove the object. Grayscale becomes 3 equal channels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

SMALL_IMAGE_SIDE = 64
ASPECT_MODES = ("long", "short")


@dataclass(frozen=True, kw_only=True)
class EvalTransform:
    """Resize + center-crop + normalise. ``size`` is (H, W) of the model input.

    ``keep_aspect`` (``long`` or ``short``): instead, keep each image's aspect ratio, resize it
    so that that side equals ``size[0]`` and cut the trailing rows/columns beyond a multiple of
    ``multiple`` (:func:`resize_keep_aspect`); images of other shapes give other output shapes.
    """

    size: tuple[int, int]
    crop_ratio: float = 224 / 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    keep_aspect: str = ""
    multiple: int = 1

    def __post_init__(self) -> None:
        if self.keep_aspect and self.keep_aspect not in ASPECT_MODES:
            raise ValueError(f"keep_aspect must be '' or one of {ASPECT_MODES}, got "
                             f"{self.keep_aspect!r}")

    def key(self) -> str:
        d = asdict(self)
        if not self.keep_aspect:  # keys of the centre-crop transform stay what they were
            d.pop("keep_aspect"), d.pop("multiple")
        return ",".join(f"{k}={v}" for k, v in sorted(d.items()))

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W[, 3]) uint8`` -> ``(B, 3, *size) float32`` normalised (with
        ``keep_aspect``: ``(B, 3, *aspect_size(H, W, ...))``)."""
        x = to_float_nchw(images)
        if self.keep_aspect:
            x = resize_keep_aspect(x, self.size[0], self.keep_aspect, self.multiple)
        else:
            x = resize_center_crop(x, self.size, self.crop_ratio)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


def default_crop_ratio(native_size: tuple[int, int] | None) -> float:
    """1.0 for small images (<= 64 px sides), else the ImageNet 224/256."""
    if native_size is not None and max(native_size) <= SMALL_IMAGE_SIDE:
        return 1.0
    return 224 / 256


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` or ``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32 in [0, 1]."""
    if isinstance(images, torch.Tensor):
        x = images
    else:
        arr = np.asarray(images)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    """``(H', W')`` with the shorter side ``short`` and the longer one truncated, as
    ``torchvision.transforms.Resize(short)`` computes it (``int(short * long / short_side)``):
    640x427 -> 383x256 (W x H), not the rounded 384x256."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def resize_center_crop(x: torch.Tensor, size: tuple[int, int], crop_ratio: float) -> torch.Tensor:
    """Resize the shorter side to ``size/crop_ratio`` (bicubic, antialias), then center-crop.

    Sizes follow torchvision's ``Resize(int)`` + ``CenterCrop`` exactly (long side truncated,
    crop offset ``int(round((H' - h) / 2))``), the official DINO ``eval_knn.py`` /
    ``eval_linear.py`` transform. Pixel values differ from torchvision-on-PIL only because PIL
    resizes uint8 images (fixed-point weights, rounding and clipping to 0..255 between its two
    1-D passes) where this works in float: on photographs (smooth images) at most 2/255 per
    pixel, mean under 0.5/255; on white noise, where the clipping bites, isolated pixels differ
    by up to ~25/255, mean still under 0.5/255 (``tests/features/test_transforms.py``).
    """
    h, w = x.shape[-2:]
    th, tw = size
    if crop_ratio >= 1.0 and (h, w) != (th, tw) and h == w and th == tw:
        return F.interpolate(x, size=size, mode="bicubic", antialias=True,
                             align_corners=False).clamp_(0, 1)
    short = math.floor(min(th, tw) / crop_ratio + 1e-6)
    if (h, w) != (th, tw) or crop_ratio < 1.0:
        nh, nw = resized_size(h, w, short)
        nh, nw = max(th, nh), max(tw, nw)  # a non-square crop wider than the resized image
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)
        h, w = nh, nw
    top, left = round((h - th) / 2), round((w - tw) / 2)
    return x[..., top : top + th, left : left + tw]


def aspect_size(h: int, w: int, side: int, mode: str = "long", multiple: int = 1
                ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Sizes of an ``h x w`` image resized with its aspect ratio kept.

    ``mode="long"``: the longer side becomes ``side`` (DINO's ``eval_image_retrieval.py``:
    ``img.thumbnail((imsize, imsize))``, the revisited Oxford/Paris protocol's resize);
    ``"short"``: the shorter side does. The other side is ``side * other / that`` rounded to the
    nearest pixel (halves up), at least ``multiple``.

    Returns:
        ``((H', W') resized, (h', w') kept)``: ``kept`` cuts each side down to a multiple of
        ``multiple`` (a patch), the trailing rows/columns a stride-``p`` patch embedding never
        sees (DINO's ``Conv2d(kernel=p, stride=p)`` drops them).
    """
    if mode not in ASPECT_MODES:
        raise ValueError(f"mode must be one of {ASPECT_MODES}, got {mode!r}")
    if min(h, w, side, multiple) < 1:
        raise ValueError(f"sizes must be >= 1, got {h}x{w}, side {side}, multiple {multiple}")
    ref = max(h, w) if mode == "long" else min(h, w)

    def other(n: int) -> int:
        return side if n == ref else max(multiple, math.floor(n * side / ref + 0.5))

    nh, nw = (side, other(w)) if h == ref else (other(h), side)
    return (nh, nw), (nh // multiple * multiple, nw // multiple * multiple)


def resize_keep_aspect(x: torch.Tensor, side: int, mode: str = "long",
                       multiple: int = 1) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] resized with the aspect ratio kept (bicubic, antialiased, as
    the other eval transforms) to :func:`aspect_size`'s ``resized`` size, then cut to its
    ``kept`` size from the top-left corner: ``(B, 3, h', w')``."""
    h, w = x.shape[-2:]
    (nh, nw), (kh, kw) = aspect_size(int(h), int(w), side, mode, multiple)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                          align_corners=False).clamp_(0, 1)
    return x[..., :kh, :kw]
