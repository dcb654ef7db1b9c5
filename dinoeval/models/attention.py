"""Explicit CLS self-attention of a ViT block, read from the model's own weights.

timm computes attention with fused SDPA, which never forms the attention matrix, so
:func:`cls_attention` recomputes the CLS row from the block's own ``qkv`` projection applied to
the block's ``norm1`` output (caught with a forward hook): it works whether fused attention is on
or off and for any input size (``dynamic_img_size=True`` interpolates the position embeddings).
The DINO paper (Caron et al. 2021, ``visualize_attention.py``) reads the same row of the last
block. Masks and scores of the maps are pure array work: :mod:`dinoeval.eval.attention`.
"""

from __future__ import annotations

import torch
from torch import nn


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
