"""Pooling of patch tokens into one vector per image."""

from __future__ import annotations

import numpy as np
import torch


def gem(tokens_BTD: torch.Tensor, p: float = 4.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean (GeM) pooling over tokens: ``(mean_t max(x_t, eps) ** p) ** (1/p)``.

    Radenović, Tolias & Chum, "Fine-tuning CNN image retrieval with no human annotation" (TPAMI
    2018); DINO's copy detection pools the last block's patch tokens with ``p = 4`` after clamping
    them at ``1e-6`` (``eval_copy_detection.py``). ``p = 1`` is the mean of the clamped tokens and
    ``p -> inf`` the max.

    Args:
        tokens_BTD: ``(B, T, D)`` patch tokens.

    Returns:
        ``(B, D)`` pooled features, every entry ``>= eps``.
    """
    if p <= 0:
        raise ValueError(f"GeM exponent must be > 0, got {p}")
    x = tokens_BTD.float().clamp(min=eps)
    return x.pow(p).mean(dim=1).pow(1.0 / p)


MULTISCALE_FACTORS = (1.0, 2**-0.5, 0.5)


def multiscale_sizes(size: int, patch: int = 1,
                     factors: tuple[float, ...] = MULTISCALE_FACTORS) -> tuple[int, ...]:
    """Input sides for DINO's multi-scale retrieval features: ``size * f`` for the scales 1,
    1/sqrt(2) and 1/2 (``utils.multi_scale`` in the DINO repository), rounded to the nearest
    multiple of ``patch`` (at least one patch). DINO rescales to ``size * f`` exactly and its patch
    embedding drops the remainder (224 px, patch 16: 158 px, of which 144 are seen); here the
    whole image is resized to the rounded side (160 px, all of it seen)."""
    if size < 2 or patch < 1:
        raise ValueError(f"input size must be >= 2 and patch >= 1, got {size}, {patch}")
    return tuple(max(patch, round(size * f / patch) * patch) for f in factors)


def average_then_normalize(features: list[np.ndarray]) -> np.ndarray:
    """DINO's multi-scale combination: the mean of the per-scale ``(N, D)`` features (not
    normalised first), then L2-normalised per row. Returns ``(N, D)`` float32."""
    if not features:
        raise ValueError("give the features of at least one scale")
    shapes = {f.shape for f in features}
    if len(shapes) != 1:
        raise ValueError(f"per-scale features differ in shape: {sorted(shapes)}")
    v = np.mean([np.asarray(f, np.float64) for f in features], axis=0)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v.astype(np.float32)
