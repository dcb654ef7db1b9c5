"""CLS self-attention maps of a ViT block, the DINO mass-threshold masks, and their Jaccard score.

The DINO paper's observation: the last block's CLS->patch self-attention of a DINO ViT segments
objects. timm computes attention with fused SDPA, which never forms the attention matrix, so
:func:`cls_attention` recomputes the CLS row explicitly from the block's own ``qkv`` projection
applied to the block's ``norm1`` output (caught with a forward hook): it works whether fused
attention is on or off and for any input size (``dynamic_img_size=True`` interpolates the
position embeddings).

Masks follow the official ``visualize_attention.py``: sort a head's CLS->patch attention, keep the
highest patches until they hold ``mass`` (default 0.6) of the attention over patches, and upsample
the patch mask by the patch size (nearest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dinoeval.results import Row

DEFAULT_MASS = 0.6


class _StopForward(Exception):
    """Raised by the capture hook so the blocks after the chosen one are never run."""


def _resolve_block(model: nn.Module, block: int) -> tuple[int, nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValueError("model has no .blocks; pass a timm VisionTransformer")
    depth = len(blocks)
    if not -depth <= block < depth:
        raise ValueError(f"block {block} out of range for a {depth}-block ViT; "
                         f"use 0..{depth - 1} or -1 for the last")
    index = block % depth
    blk = blocks[index]
    attn = getattr(blk, "attn", None)
    if attn is None or not hasattr(attn, "qkv") or not hasattr(blk, "norm1"):
        raise ValueError(f"block {index} is not a pre-norm timm Block with attn.qkv and norm1")
    return index, blk


@torch.no_grad()
def cls_attention(model: nn.Module, images: torch.Tensor, *, block: int = -1,
                  num_prefix_tokens: int = 1) -> torch.Tensor:
    """Explicit CLS->patch self-attention of one block, per head.

    Args:
        model: a timm ``VisionTransformer`` (pre-norm blocks with ``attn.qkv``), in eval mode;
            built with ``dynamic_img_size=True`` for inputs of other sizes than its own.
        images: ``(B, C, H, W)`` normalised images, ``H`` and ``W`` multiples of the patch size.
        block: block index, negative counts from the end (``-1``: last block).
        num_prefix_tokens: class token plus register tokens; these keys are left out.

    Returns:
        ``(B, heads, H // p, W // p)`` float32: row 0 (the class token) of
        ``softmax(q kᵀ · scale)`` over all tokens, restricted to the patch keys, so each map sums to
        ``1 -`` (attention on the prefix tokens).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    patch = _patch_size(model)
    h, w = images.shape[-2:]
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}; "
                         "crop or pad it first (see prepare_image)")
    _, blk = _resolve_block(model, block)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        captured.append(out)
        raise _StopForward

    handle = blk.norm1.register_forward_hook(hook)
    try:
        model.forward_features(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the chosen block's norm1 was never called")
    attn_BHT = cls_row_from_tokens(blk.attn, captured[0])
    patches = attn_BHT[:, :, num_prefix_tokens:]
    grid = (h // patch, w // patch)
    if patches.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"{patches.shape[-1]} patch tokens after {num_prefix_tokens} prefix "
                         f"tokens, but the grid is {grid[0]}x{grid[1]}; check num_prefix_tokens")
    return patches.reshape(*patches.shape[:2], *grid).float()


def cls_row_from_tokens(attn: nn.Module, x_BTD: torch.Tensor) -> torch.Tensor:
    """Row 0 of ``softmax(q kᵀ · scale)`` of a timm ``Attention`` module.

    Args:
        attn: the block's attention module (``qkv``, ``num_heads``, ``scale``, optional
            ``q_norm``/``k_norm``).
        x_BTD: ``(B, T, D)`` the block's ``norm1`` output (the attention's input).

    Returns:
        ``(B, heads, T)`` attention of the first token over every token (rows sum to 1).
    """
    B, T, _ = x_BTD.shape
    heads = attn.num_heads
    qkv = attn.qkv(x_BTD).reshape(B, T, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q_BHTd, k_BHTd = qkv[0], qkv[1]
    q_BHTd = getattr(attn, "q_norm", nn.Identity())(q_BHTd)
    k_BHTd = getattr(attn, "k_norm", nn.Identity())(k_BHTd)
    scale = getattr(attn, "scale", q_BHTd.shape[-1] ** -0.5)
    # Only the class token's query is needed: (B,H,1,d) @ (B,H,d,T).
    logits_BHT = (q_BHTd[:, :, :1] * scale) @ k_BHTd.transpose(-2, -1)
    return logits_BHT.float().softmax(dim=-1).squeeze(2)


def _patch_size(model: nn.Module) -> int:
    ps = model.patch_embed.patch_size
    ps = ps if isinstance(ps, int) else ps[0]
    return int(ps)


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
