"""The DINO mass-threshold masks of CLS self-attention maps, and their Jaccard score.

The DINO paper's observation: the last block's CLS->patch self-attention of a DINO ViT segments
objects. The maps themselves come from the model (:func:`dinoeval.models.attention.cls_attention`,
through each family's adapter); this module turns ``(heads, h, w)`` maps into masks and scores.

Masks follow the official ``visualize_attention.py``: sort a head's CLS->patch attention, keep the
highest patches until they hold ``mass`` (default 0.6) of the attention over patches, and upsample
the patch mask by the patch size (nearest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dinoeval.results import Row

DEFAULT_MASS = 0.6


def prepare_image(image: np.ndarray, patch_size: int, *, fit: str = "crop") -> np.ndarray:
    """Make an image's sides multiples of the patch size.

    Args:
        image: ``(H, W[, C])`` array (an image or a mask).
        patch_size: the ViT's patch size ``p``.
        fit: ``"crop"`` keeps the centred ``(H // p · p, W // p · p)`` window; ``"pad"`` adds zeros
            at the bottom and right up to the next multiple.

    Returns:
        The cropped or padded array, same dtype.
    """
    h, w = image.shape[:2]
    if fit == "crop":
        nh, nw = h // patch_size * patch_size, w // patch_size * patch_size
        if nh == 0 or nw == 0:
            raise ValueError(f"image {h}x{w} is smaller than one {patch_size}px patch; resize it "
                             "up or use fit='pad'")
        top, left = (h - nh) // 2, (w - nw) // 2
        return image[top:top + nh, left:left + nw]
    if fit == "pad":
        nh, nw = -(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size
        pad = [(0, nh - h), (0, nw - w)] + [(0, 0)] * (image.ndim - 2)
        return np.pad(image, pad)
    raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")


def mass_threshold_mask(attn: np.ndarray, mass: float = DEFAULT_MASS) -> np.ndarray:
    """Keep the fewest highest-attention patches that hold ``mass`` of the attention.

    Args:
        attn: ``(..., N)`` non-negative attention over ``N`` patches (need not sum to 1; it is
            normalised over the last axis first, as the official code does).
        mass: fraction in ``(0, 1]`` of the attention mass to keep.

    Returns:
        ``(..., N)`` bool: patch ``i`` is kept when the attention of the patches ranked above it
        sums to less than ``mass``, so the kept mass is ``>= mass`` and dropping the weakest kept
        patch would bring it under ``mass``.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"attention must be (..., N) with N > 0, got shape {a.shape}")
    if (a < 0).any() or not np.isfinite(a).all():
        raise ValueError("attention must be finite and non-negative")
    total = a.sum(axis=-1, keepdims=True)
    a = np.divide(a, total, out=np.full_like(a, 1.0 / a.shape[-1]), where=total > 0)
    order = np.argsort(-a, axis=-1, kind="stable")
    ranked = np.take_along_axis(a, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked  # mass of the patches ranked above
    keep_ranked = before < mass - 1e-12
    keep = np.empty_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=-1)
    return keep


def upsample_mask(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Nearest upsampling of ``(..., h, w)`` patch maps to ``(..., h·p, w·p)`` pixels."""
    return np.repeat(np.repeat(mask, patch_size, axis=-2), patch_size, axis=-1)


def jaccard_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Jaccard index (IoU) ``|P ∩ T| / |P ∪ T|`` of two boolean masks of the same shape.

    Two empty masks agree perfectly: 1.0.
    """
    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}; crop/pad the target "
                         "with the same prepare_image call as the image")
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


@dataclass(frozen=True)
class AttentionMasks:
    """Masks of one image: per head and for the mean over heads.

    Attributes:
        attn: ``(heads, h, w)`` CLS->patch attention.
        head_masks: ``(heads, h·p, w·p)`` bool, per head.
        mean_mask: ``(h·p, w·p)`` bool, from the mean attention over heads.
    """

    attn: np.ndarray
    head_masks: np.ndarray
    mean_mask: np.ndarray


def attention_masks(attn_Hhw: np.ndarray, patch_size: int, *,
                    mass: float = DEFAULT_MASS) -> AttentionMasks:
    """Threshold one image's ``(heads, h, w)`` attention per head and for the head mean."""
    a = np.asarray(attn_Hhw, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"attention must be (heads, h, w), got shape {a.shape}")
    heads, h, w = a.shape
    per_head = mass_threshold_mask(a.reshape(heads, h * w), mass).reshape(heads, h, w)
    mean = mass_threshold_mask(a.mean(axis=0).reshape(h * w), mass).reshape(h, w)
    return AttentionMasks(attn=a, head_masks=upsample_mask(per_head, patch_size),
                          mean_mask=upsample_mask(mean, patch_size))


@dataclass(frozen=True)
class JaccardResult:
    """Jaccard of attention masks against ground truth over ``N`` images.

    Attributes:
        per_head: ``(N, heads)`` Jaccard of each head's mask.
        mean_heads: ``(N,)`` Jaccard of the mask from the mean attention over heads.
        mass: the attention mass kept.
        block: the block the attention came from (non-negative index).
    """

    per_head: np.ndarray
    mean_heads: np.ndarray
    mass: float
    block: int

    @property
    def head_means(self) -> np.ndarray:
        """``(heads,)`` mean Jaccard of each head over the images."""
        return self.per_head.mean(axis=0)

    @property
    def best_head(self) -> int:
        """The head with the highest mean Jaccard (one head for the whole set, as in the paper)."""
        return int(np.argmax(self.head_means))

    def to_rows(self) -> list[Row]:
        n = int(self.per_head.shape[0])
        rows = [Row("attention", "jaccard", float(v), f"head={h}", n)
                for h, v in enumerate(self.head_means)]
        rows.append(Row("attention", "jaccard", float(self.head_means[self.best_head]),
                        "head=best", n))
        rows.append(Row("attention", "jaccard", float(self.mean_heads.mean()), "head=mean", n))
        rows.append(Row("attention", "best_head", float(self.best_head), "", n))
        return rows


def score_masks(masks: list[AttentionMasks], targets: list[np.ndarray], *, mass: float,
                block: int) -> JaccardResult:
    """Jaccard of each image's head and mean-of-heads masks against its ``(H, W)`` bool target."""
    if len(masks) != len(targets):
        raise ValueError(f"{len(masks)} mask sets but {len(targets)} targets")
    if not masks:
        raise ValueError("no images to score")
    per_head = np.array([[jaccard_score(hm, t) for hm in m.head_masks]
                         for m, t in zip(masks, targets, strict=True)])
    mean = np.array([jaccard_score(m.mean_mask, t) for m, t in zip(masks, targets, strict=True)])
    return JaccardResult(per_head=per_head, mean_heads=mean, mass=mass, block=block)
