"""Patch-token grids for dense evaluations (video label propagation, segmentation probes).

:func:`patch_grid` runs images of any size (multiples of the patch size) through a backbone and
returns last-block patch tokens after the final norm as a ``(B, h, w, D)`` grid, the features
DINO's ``eval_video_segmentation.py`` uses (``get_intermediate_layers(n=1)`` without the CLS
token). The ``pixels`` baseline gives each ``p x p`` patch's raw RGB values in ``[0, 1]``
(``3 p^2`` dims) on the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dinoeval.errors import DinoevalError
from dinoeval.features.extract import forward_features
from dinoeval.models.backbone import Backbone


def grid_patch_size(backbone: Backbone, pixel_patch: int) -> int:
    """The patch side of ``backbone``'s token grid (``pixel_patch`` for pixels)."""
    return pixel_patch if backbone.kind == "pixels" else backbone.patch_size


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(h, w, 3) uint8`` with bilinear resampling (no crop)."""
    if image.shape[:2] == tuple(size_hw):
        return image
    return np.asarray(Image.fromarray(image).resize((size_hw[1], size_hw[0]), Image.BILINEAR))


def check_grid_size(size_hw: tuple[int, int], patch: int, what: str) -> None:
    """Refuse an input size the patch grid does not tile (a one-line error naming the fix)."""
    if size_hw[0] % patch or size_hw[1] % patch or min(size_hw) < patch:
        raise DinoevalError(f"{what}: input size {size_hw[1]}x{size_hw[0]} is not a positive "
                            f"multiple of the patch size {patch}; choose a size divisible by "
                            f"{patch}")


@torch.inference_mode()
def patch_grid(backbone: Backbone, images: Sequence[np.ndarray] | np.ndarray, *,
               pixel_patch: int = 8, device: str = "cpu") -> torch.Tensor:
    """Patch tokens of a batch of equally sized images.

    Args:
        images: ``B`` ``(H, W, 3) uint8`` images with ``H, W`` multiples of the patch size.
        pixel_patch: patch side of the ``pixels`` baseline.

    Returns:
        ``(B, H/p, W/p, D)`` float32 on the CPU.
    """
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).float().div_(255)
    b, h, w, _ = x.shape
    p = grid_patch_size(backbone, pixel_patch)
    check_grid_size((h, w), p, backbone.name)
    if backbone.kind == "pixels":
        g = x.reshape(b, h // p, p, w // p, p, 3).permute(0, 1, 3, 2, 4, 5)
        return g.reshape(b, h // p, w // p, p * p * 3).contiguous()
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    x = ((x.permute(0, 3, 1, 2) - mean) / std).to(device)
    if backbone.arch is not None and backbone.arch.in_chans == 1:
        x = x.mean(1, keepdim=True)
    tokens = forward_features(backbone, x, "patch")
    return tokens.float().cpu().reshape(b, h // p, w // p, -1)
