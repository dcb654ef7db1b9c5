"""DINOv3 ViTs (Siméoni et al. 2025), built as timm's Eva (``vit_*_patch16_dinov3``).

The official layout (``facebookresearch/dinov3``, ``dinov3/models/vision_transformer.py``):
``cls_token (1,1,D)``, ``storage_tokens (1,S,D)``, ``mask_token``, ``patch_embed.proj``,
``rope_embed.periods (D_head/4,)``, blocks with ``norm1``, ``attn.qkv`` (+ ``bias`` and the
buffer ``bias_mask`` that zeroes the key bias), ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp``
(``fc1``/``fc2``, or SwiGLU ``w1``/``w2``/``w3``), ``ls2.gamma``; final ``norm``. No position
table: 2-D RoPE (base 100) on the patch tokens only, so any input size is native.

Tokens come out as ``[CLS, S storage tokens, patches]``; storage tokens are left out of patch
features and of attention maps, like registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

import torch
from timm.layers import LayerNorm
from torch import nn

from dinoeval.errors import DinoevalError
from dinoeval.models.registry import Adapter, Arch, BuildOptions, Built, Family, register_family

if TYPE_CHECKING:
    from dinoeval.models.checkpoints import RawCheckpoint

ROPE_BASE = 100.0
_SIZES = {384: "S", 768: "B", 1024: "L", 1280: "H+", 4096: "7B"}


class _Stop(Exception):
    pass


class EvaAdapter(Adapter):
    """Tokens and attention of a timm ``Eva`` (RoPE applied inside each block's attention)."""

    def tokens(self, model: nn.Module, x: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        depth = len(model.blocks)
        x = model.patch_embed(x)
        x, rope = model._pos_embed(x)
        x = model.norm_pre(x)
        outs = []
        for i, blk in enumerate(model.blocks):
            x = blk(x, rope=rope)
            if i >= depth - n_last:
                outs.append(model.norm(x))
        return outs

    def cls_attention(self, model: nn.Module, x: torch.Tensor, block: int,
                      num_prefix_tokens: int) -> torch.Tensor:
        """The block's own softmax (RoPE applied) caught at its ``attn_drop``; row 0 over the
        patch keys, ``(B, heads, h, w)``."""
        depth = len(model.blocks)
        if not -depth <= block < depth:
            raise DinoevalError(f"--block {block} out of range for {depth} blocks")
        attn = model.blocks[block % depth].attn
        p = model.patch_embed.patch_size
        p = p if isinstance(p, int) else p[0]
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        caught: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            caught.append(out[:, :, 0, num_prefix_tokens:])
            raise _Stop

        fused, attn.fused_attn = attn.fused_attn, False
        handle = attn.attn_drop.register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.tokens(model, x, 1)
        except _Stop:
            pass
        finally:
            handle.remove()
            attn.fused_attn = fused
        rows = caught[0].float()
        return rows.reshape(*rows.shape[:2], *grid)


EVA_ADAPTER = EvaAdapter()


def rope_periods(head_dim: int, base: float = ROPE_BASE) -> torch.Tensor:
    """DINOv3's ``RopePositionEmbedding`` periods: ``base ** (2 i / (head_dim / 2))``,
    ``i < head_dim / 4``."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 2))


def build_eva(*, embed_dim: int, depth: int, num_heads: int, patch_size: int = 16,
              in_chans: int = 3, reg_tokens: int = 4, qkv_bias: bool = False,
              mlp_ratio: float = 4.0, swiglu: bool = False, norm_eps: float = 1e-5,
              act: str | None = None, rope_base: float = ROPE_BASE) -> nn.Module:
    """A timm ``Eva`` with the DINOv3 settings of timm's ``vit_*_patch16_dinov3``.

    ``norm_eps``: every LayerNorm's epsilon (DINOv3: 1e-5); ``act``: the MLP activation (the
    gate's in a SwiGLU), a ``transformers`` ``hidden_act`` name (default: GELU, SiLU for
    SwiGLU); ``rope_base``: the RoPE period base (DINOv3: 100).
    """
    from timm.models.eva import Eva

    from dinoeval.models.hf import activation_layer

    model = Eva(
        img_size=224, patch_size=patch_size, in_chans=in_chans, num_classes=0,
        global_pool="token", embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        qkv_bias=qkv_bias, mlp_ratio=mlp_ratio, swiglu_mlp=swiglu, init_values=1e-5,
        swiglu_align_to=1 if swiglu else 0,  # SwiGLU with separate fc1_g / fc1_x (w1 / w2)
        rope_type="dinov3", rope_temperature=rope_base, rope_rotate_half=True,
        use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=reg_tokens,
        use_fc_norm=False, norm_layer=partial(LayerNorm, eps=norm_eps), dynamic_img_size=True,
    ).eval()
    if act is not None:  # Eva takes no act_layer: set each block's MLP activation
        for blk in model.blocks:
            blk.mlp.act = activation_layer(act)()
    return model


def eva_arch(model: nn.Module, name: str, *, act: str | None = None,
             rope_base: float = ROPE_BASE) -> Arch:
    p = model.patch_embed.patch_size
    p = p if isinstance(p, int) else p[0]
    return Arch(name=name, embed_dim=model.embed_dim, depth=len(model.blocks), patch_size=int(p),
                img_size=(224, 224), num_heads=model.blocks[0].attn.num_heads,
                in_chans=int(model.patch_embed.proj.in_channels),
                reg_tokens=model.num_prefix_tokens - 1, norm_eps=float(model.norm.eps),
                act=act or type(model.blocks[0].mlp.act).__name__.lower(), rope_base=rope_base)


def _to_timm(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    ignored = []
    for k, v in state.items():
        if k in ("mask_token", "rope_embed.periods") or k.endswith("attn.qkv.bias_mask") or \
                v.numel() == 0:
            continue
        if k.startswith("local_cls_norm.") or k.startswith("projectors."):
            ignored.append(k)
            continue
        if k.endswith("attn.qkv.bias"):
            mask = state.get(k + "_mask")
            b = v * mask if mask is not None else v
            q, kb, vb = b.chunk(3)
            if kb.abs().max() > 0:
                raise DinoevalError(f"{k}: the key bias is not masked to zero, which a DINOv3 "
                                    "attention never has; is this a DINOv3 checkpoint?")
            out[k.replace("qkv.bias", "q_bias")] = q
            out[k.replace("qkv.bias", "v_bias")] = vb
            continue
        k = (k.replace("storage_tokens", "reg_token").replace(".ls1.gamma", ".gamma_1")
             .replace(".ls2.gamma", ".gamma_2").replace(".mlp.w1.", ".mlp.fc1_g.")
             .replace(".mlp.w2.", ".mlp.fc1_x.").replace(".mlp.w3.", ".mlp.fc2."))
        out[k] = v
    return out, ignored


def _build_dinov3(state: dict[str, torch.Tensor], raw: RawCheckpoint,
                  opts: BuildOptions) -> Built:
    conv, ignored = _to_timm(state)
    dim = int(state["cls_token"].shape[-1])
    periods = state.get("rope_embed.periods")
    from dinoeval.models.vit import heads_from_meta

    heads = opts.num_heads or heads_from_meta(raw.meta) or (
        dim // (4 * periods.numel()) if periods is not None else dim // 64)
    if dim % heads:
        raise DinoevalError(f"--num-heads {heads} does not divide the width {dim}")
    if periods is not None and not torch.allclose(periods.double(), rope_periods(dim // heads),
                                                  rtol=1e-4):
        raise DinoevalError("rope_embed.periods differ from DINOv3's RoPE with base 100 (a "
                            "min/max-period model?); this layout is not supported")
    swiglu = "blocks.0.mlp.w1.weight" in state
    hidden = state["blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    proj = state["patch_embed.proj.weight"]
    hf = "hf-" in raw.format  # config.json states what the weights cannot
    eps = raw.meta.get("layer_norm_eps", 1e-5) if hf else 1e-5
    act = raw.meta.get("hidden_act") if hf else None
    base = raw.meta.get("rope_theta", ROPE_BASE) if hf else ROPE_BASE
    model = build_eva(
        embed_dim=dim, depth=1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
        num_heads=heads, patch_size=int(proj.shape[-1]), in_chans=int(proj.shape[1]),
        reg_tokens=int(state["storage_tokens"].shape[1]) if "storage_tokens" in state else 0,
        qkv_bias=any(k.endswith("q_bias") and v.abs().max() > 0 for k, v in conv.items()),
        mlp_ratio=(hidden + 0.5) / dim, swiglu=swiglu, norm_eps=eps, act=act, rope_base=base)
    if not any(k.endswith("q_bias") and v.abs().max() > 0 for k, v in conv.items()):
        conv = {k: v for k, v in conv.items() if not k.endswith(("q_bias", "v_bias"))}
    load_strict(model, conv, "DINOv3 ViT")
    size = _SIZES.get(dim, f"d{dim}")
    notes = [f"ignored {', '.join(ignored[:6])}"] if ignored else []
    if hf:
        notes.append(f"from config.json: layer_norm_eps {eps:g}, hidden_act "
                     f"{act or 'default'}, rope_theta {base:g}")
    arch = eva_arch(model, f"ViT-{size}/{int(proj.shape[-1])}-dinov3", act=act, rope_base=base)
    return Built(model=model, arch=arch, adapter=EVA_ADAPTER, notes=notes, eval_size=(224, 224))


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model``: any missing, unexpected or mis-shaped key is a one-line
    error naming it."""
    expected = model.state_dict()
    persistent = set(expected)
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    missing = sorted(persistent - set(state) - {k for k in persistent if k.endswith("k_bias")})
    extra = sorted(set(state) - persistent)
    for label, keys in (("tensors of the wrong shape", wrong), ("missing keys", missing),
                        ("unexpected keys", extra)):
        if keys:
            raise DinoevalError(f"checkpoint does not fit a {what}: {len(keys)} {label}: "
                                f"{', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
    model.load_state_dict(state, strict=False)


register_family(Family(
    name="dinov3",
    summary="DINOv3 ViT (RoPE, storage tokens, qkv bias_mask, LayerScale; timm Eva)",
    matches=lambda state, raw: "cls_token" in state and (
        "storage_tokens" in state or "rope_embed.periods" in state),
    build=_build_dinov3,
    native="any (2-D RoPE, no position table)",
    evaluation="224 px (the DINOv3 k-NN / linear protocol)",
    resampling="none: RoPE coordinates are normalised to the input's patch grid",
    order=5,
))
