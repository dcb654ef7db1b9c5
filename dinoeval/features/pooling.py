"""Pooling of patch tokens into one vector per image."""

from __future__ import annotations

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
