"""Infer a ViT's architecture from tensor shapes and build it with timm."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from dinoeval.errors import DinoevalError

# Standard ViT widths -> heads (DeiT/ViT/DINOv2 tables); other widths use width // 64.
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24}
NAMED_ARCHS = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
}


@dataclass(frozen=True)
class ViTArch:
    """Everything needed to rebuild a timm ``VisionTransformer``.

    ``img_size`` is the grid the position embeddings were trained for, times the patch size.
    ``pos_embed_has_cls``: whether ``pos_embed`` carries an entry for the class token.
    """

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: tuple[int, int]
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    reg_tokens: int = 0
    layer_scale: bool = False
    pos_embed_has_cls: bool = True

    @property
    def name(self) -> str:
        size = {192: "T", 384: "S", 768: "B", 1024: "L", 1536: "g"}.get(self.embed_dim,
                                                                      f"d{self.embed_dim}")
        reg = f"+reg{self.reg_tokens}" if self.reg_tokens else ""
        depth = "" if self.depth in (12, 24, 40) else f"x{self.depth}"
        return f"ViT-{size}/{self.patch_size}{depth}{reg}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_arch_name(name: str) -> dict:
    """``vit_small_patch16_224`` / ``vit_tiny`` / ``vit_small_p8`` -> timm kwargs (with defaults)."""
    m = re.match(r"^(vit_(?:tiny|small|base|large))(?:_patch(\d+))?(?:_p(\d+))?(?:_(\d+))?$", name)
    if not m:
        raise DinoevalError(f"unknown architecture {name!r}; use vit_tiny|vit_small|vit_base|"
                            "vit_large, optionally _patchP_SIZE (e.g. vit_small_patch16_224)")
    kw = dict(NAMED_ARCHS[m.group(1)])
    kw["patch_size"] = int(m.group(2) or m.group(3) or 16)
    kw["img_size"] = int(m.group(4) or 224)
    return kw


def infer_arch(state: dict[str, torch.Tensor], *, num_heads: int | None = None) -> ViTArch:
    """Read the architecture off the shapes of a timm-named ViT state dict."""
    for key in ("cls_token", "patch_embed.proj.weight", "pos_embed"):
        if key not in state:
            raise DinoevalError(f"not a ViT backbone: key {key!r} missing "
                                f"(found {sorted(state)[:6]}...)")
    embed_dim = int(state["cls_token"].shape[-1])
    proj = state["patch_embed.proj.weight"]
    patch = int(proj.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    reg = 0
    for key in ("reg_token", "register_tokens"):
        if key in state:
            reg = int(state[key].shape[1])
    tokens = int(state["pos_embed"].shape[1])
    if _is_square(tokens - 1) and not _is_square(tokens):
        has_cls, grid = True, math.isqrt(tokens - 1)
    elif _is_square(tokens):
        has_cls, grid = False, math.isqrt(tokens)
    else:
        raise DinoevalError(f"cannot infer the patch grid from pos_embed with {tokens} tokens")
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / embed_dim if fc1 is not None else 4.0
    heads = num_heads or HEADS_BY_WIDTH.get(embed_dim, max(1, embed_dim // 64))
    if embed_dim % heads:
        if num_heads:
            raise DinoevalError(f"--num-heads {heads} does not divide the width {embed_dim}; "
                                "pass a divisor of it")
        raise DinoevalError(f"width {embed_dim} is not divisible by {heads} heads; pass "
                            "--num-heads N (a divisor of the width)")
    return ViTArch(
        embed_dim=embed_dim, depth=depth, num_heads=heads, patch_size=patch,
        img_size=(grid * patch, grid * patch), in_chans=int(proj.shape[1]), mlp_ratio=mlp_ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in state, reg_tokens=reg,
        layer_scale="blocks.0.ls1.gamma" in state, pos_embed_has_cls=has_cls,
    )


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def build_vit(arch: ViTArch, *, img_size: int | tuple[int, int] | None = None) -> VisionTransformer:
    """A timm ViT for ``arch`` at ``img_size`` with no classifier; any input size works at run time.

    Register tokens use timm's ``no_embed_class`` layout; :func:`to_timm_layout` converts weights.
    """
    size = _pair(img_size) if img_size is not None else arch.img_size
    return VisionTransformer(
        img_size=size, patch_size=arch.patch_size, in_chans=arch.in_chans,
        num_classes=0, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias, reg_tokens=arch.reg_tokens,
        no_embed_class=arch.reg_tokens > 0 or not arch.pos_embed_has_cls,
        init_values=1e-5 if arch.layer_scale else None, dynamic_img_size=True,
        dynamic_img_pad=False, global_pool="token",
    )


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def to_timm_layout(state: dict[str, torch.Tensor], arch: ViTArch,
                   img_size: int | tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Convert DINOv2 names, fold the class position into ``cls_token`` when timm keeps no class
    position (register models), and resample ``pos_embed`` to ``img_size``."""
    state = dict(state)
    if "register_tokens" in state:
        state["reg_token"] = state.pop("register_tokens")
    state.pop("mask_token", None)
    pos = state["pos_embed"]
    no_embed_class = arch.reg_tokens > 0 or not arch.pos_embed_has_cls
    if arch.pos_embed_has_cls and no_embed_class:
        # DINOv2 adds pos[0] to the class token, registers get none: identical to this layout.
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        pos = pos[:, 1:]
    prefix = 0 if no_embed_class else 1
    grid = (arch.img_size[0] // arch.patch_size, arch.img_size[1] // arch.patch_size)
    size = _pair(img_size) if img_size is not None else arch.img_size
    new_grid = (size[0] // arch.patch_size, size[1] // arch.patch_size)
    if new_grid != grid:
        pos = resample_abs_pos_embed(pos, list(new_grid), list(grid), num_prefix_tokens=prefix)
    state["pos_embed"] = pos
    return state


def load_vit(state: dict[str, torch.Tensor], arch: ViTArch, *,
             img_size: int | tuple[int, int] | None = None) -> tuple[VisionTransformer, list[str]]:
    """Build the ViT and load ``state`` strictly: missing keys raise, unexpected ones are returned."""
    if img_size is not None:
        sides = _pair(img_size)
        if min(sides) < arch.patch_size or any(s % arch.patch_size for s in sides):
            raise DinoevalError(f"--img-size {img_size} is not a multiple of the patch size "
                                f"{arch.patch_size} of {arch.name}; use e.g. "
                                f"{max(1, round(sides[0] / arch.patch_size)) * arch.patch_size}")
    model = build_vit(arch, img_size=img_size)
    converted = to_timm_layout(state, arch, img_size)
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
             for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise DinoevalError(f"checkpoint tensors do not fit a {arch.name}: {'; '.join(wrong[:3])}"
                            f"{' ...' if len(wrong) > 3 else ''}; is it a ViT checkpoint of "
                            "this layout, or is --num-heads wrong?")
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys]
    if missing:
        raise DinoevalError(f"checkpoint lacks {len(missing)} backbone keys: "
                            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    model.eval()
    return model, list(result.unexpected_keys)
