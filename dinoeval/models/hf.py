"""Hugging Face ``transformers`` exports -> the official DINO / DINOv2 / DINOv3 key layouts.

Read (on-disk names of the hub exports, and the ``transformers`` 5 in-memory names):

* ``ViTModel`` (``facebook/dino-vit*``, DINO v1): ``embeddings.{cls_token, position_embeddings,
  patch_embeddings.projection}``, ``encoder.layer.N.{layernorm_before,
  attention.attention.{query,key,value}, attention.output.dense, layernorm_after,
  intermediate.dense, output.dense}``, ``layernorm``, optional ``pooler``;
* ``Dinov2Model`` / ``Dinov2WithRegistersModel``: the same embeddings plus ``mask_token``
  (``register_tokens``), blocks ``norm1``, ``attention.*``, ``layer_scale1.lambda1``, ``norm2``,
  ``mlp.fc1/fc2`` (ViT-g: ``mlp.weights_in/weights_out``), ``layer_scale2.lambda1``;
* ``DINOv3ViTModel``: ``embeddings.{cls_token, mask_token, register_tokens, patch_embeddings}``,
  ``layer.N.{norm1, attention.{q,k,v,o}_proj, layer_scale1, norm2, mlp.{up,down[,gate]}_proj,
  layer_scale2}``, ``norm``; no position table (RoPE), no key bias.

Separate q/k/v projections are concatenated into ``attn.qkv`` (DINOv3: with ``bias_mask`` zeroing
the key bias). A model-class prefix (``dinov2.``, ``vit.``, ``model.``) and classifier keys are
dropped. The number of heads is not in the weights: it is read from ``config.json`` next to the
file when present (:func:`hf_config_meta`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dinoeval.errors import DinoevalError

_BLOCK = re.compile(r"^(?:.*\.)?(?:layer|layers)\.(\d+)\.(.+)$")
_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."), ("attention.o_proj.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("mlp.weights_in.", "mlp.w12."), ("mlp.weights_out.", "mlp.w3."),
    ("layer_scale1.lambda1", "ls1.gamma"), ("layer_scale2.lambda1", "ls2.gamma"),
)
_QKV = {"attention.attention.query.": "q", "attention.attention.key.": "k",
        "attention.attention.value.": "v", "attention.q_proj.": "q", "attention.k_proj.": "k",
        "attention.v_proj.": "v"}


def is_hf(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` uses Hugging Face names (``embeddings.patch_embeddings``)."""
    return any(isinstance(k, str) and "embeddings.patch_embeddings" in k for k in state)


def _block_key(rest: str, gated: bool) -> str:
    if gated:
        rest = (rest.replace("mlp.gate_proj.", "mlp.w1.").replace("mlp.up_proj.", "mlp.w2.")
                .replace("mlp.down_proj.", "mlp.w3."))
    else:
        rest = rest.replace("mlp.up_proj.", "mlp.fc1.").replace("mlp.down_proj.", "mlp.fc2.")
    for old, new in _RENAMES:
        rest = rest.replace(old, new)
    return rest


def convert_hf(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a Hugging Face export to the official layout; returns ``(state, kind)`` with kind
    ``vit`` (DINO v1), ``dinov2``, ``dinov2-registers`` or ``dinov3``."""
    anchor = next(k for k in state if "embeddings.patch_embeddings" in k)
    prefix = anchor[:anchor.index("embeddings.patch_embeddings")]
    body = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    v3 = "embeddings.position_embeddings" not in body
    gated = any(".mlp.gate_proj." in k for k in body)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in body.items():
        m = _BLOCK.match(k)
        if m and not k.startswith("embeddings."):
            i, rest = int(m.group(1)), m.group(2)
            part = next((p for p in _QKV if rest.startswith(p)), None)
            if part is not None:
                qkv.setdefault((i, rest[len(part):]), {})[_QKV[part]] = v
                continue
            out[f"blocks.{i}.{_block_key(rest, gated)}"] = v
        elif k.startswith("embeddings."):
            name = k[len("embeddings."):]
            name = {"position_embeddings": "pos_embed",
                    "register_tokens": "storage_tokens" if v3 else "register_tokens",
                    "patch_embeddings.projection.weight": "patch_embed.proj.weight",
                    "patch_embeddings.projection.bias": "patch_embed.proj.bias",
                    "patch_embeddings.weight": "patch_embed.proj.weight",
                    "patch_embeddings.bias": "patch_embed.proj.bias"}.get(name, name)
            if name == "mask_token" and v.ndim == 3:
                v = v[0]
            out[name] = v
        elif k.startswith(("layernorm.", "norm.")):
            out["norm." + k.split(".", 1)[1]] = v
    for (i, what), parts in sorted(qkv.items()):
        if "q" not in parts or "v" not in parts:
            raise DinoevalError(f"Hugging Face block {i}: q/k/v {what} incomplete")
        if "k" not in parts:  # DINOv3: no key bias
            parts["k"] = torch.zeros_like(parts["q"])
            if v3:
                out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat(
                    [torch.ones_like(parts["q"]), parts["k"], torch.ones_like(parts["v"])])
        out[f"blocks.{i}.attn.qkv.{what}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if not v3:  # DINOv2 packs SwiGLU's gate and up projections: w12 = [w1; w2]
        for k in [k for k in out if ".mlp.w1." in k]:
            out[k.replace(".mlp.w1.", ".mlp.w12.")] = torch.cat(
                [out.pop(k), out.pop(k.replace(".mlp.w1.", ".mlp.w2."))])
    if v3 and "storage_tokens" not in out:
        out["storage_tokens"] = out["cls_token"].new_zeros(1, 0, out["cls_token"].shape[-1])
    if v3:
        kind = "dinov3"
    elif "mask_token" in out or any(".ls1." in k for k in out):
        kind = "dinov2-registers" if "register_tokens" in out else "dinov2"
    else:
        kind = "vit"
    return out, kind


def hf_config_meta(path: Path) -> dict[str, Any]:
    """``num_heads`` and ``layer_norm_eps`` from the ``config.json`` beside an export (empty when
    there is none or it cannot be read)."""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return {}
    meta: dict[str, Any] = {}
    if isinstance(data.get("num_attention_heads"), int):
        meta["num_heads"] = data["num_attention_heads"]
    if isinstance(data.get("layer_norm_eps"), float):
        meta["layer_norm_eps"] = data["layer_norm_eps"]
    return meta
