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
dropped. What the weights do not carry (heads, ``layer_norm_eps``, ``hidden_act``, DINOv3's
``rope_theta``) is read from ``config.json`` next to the file when present
(:func:`hf_config_meta`) and used to build the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


#: ``hidden_act`` names of ``transformers``' ``ACT2FN`` that a timm block can run exactly.
HF_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish",
                  "quick_gelu")


def activation_layer(name: str) -> Callable[[], nn.Module]:
    """The torch module class of a ``transformers`` ``hidden_act`` name (``gelu``: erf GELU;
    ``gelu_new``/``gelu_pytorch_tanh``: the tanh approximation; ``quick_gelu``:
    ``x * sigmoid(1.702 x)``).

    Raises:
        DinoevalError: a name outside :data:`HF_ACTIVATIONS`.
    """
    from timm.layers import QuickGELU

    table: dict[str, Callable[[], nn.Module]] = {
        "gelu": nn.GELU, "gelu_new": partial(nn.GELU, approximate="tanh"),
        "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh"), "relu": nn.ReLU,
        "silu": nn.SiLU, "swish": nn.SiLU, "quick_gelu": QuickGELU}
    if name not in table:
        raise DinoevalError(f"config.json hidden_act {name!r} is not supported (readable: "
                            f"{', '.join(HF_ACTIVATIONS)}); convert the export to one of them")
    return table[name]


def hf_config_meta(path: Path) -> dict[str, Any]:
    """The ``config.json`` fields beside an export that the weights do not carry and that change
    the forward: ``num_heads`` (``num_attention_heads``), ``layer_norm_eps``, ``hidden_act``
    (checked against :data:`HF_ACTIVATIONS`) and DINOv3's ``rope_theta``. Empty when there is no
    config or it cannot be read. (Sizes, registers, SwiGLU / gated MLP and biases are read off
    the tensors; ``layerscale_value`` only initialises the stored LayerScale; ``pos_embed_*``
    are training-time augmentations.)"""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    meta: dict[str, Any] = {}
    if isinstance(data.get("num_attention_heads"), int):
        meta["num_heads"] = data["num_attention_heads"]
    if isinstance(data.get("layer_norm_eps"), (int, float)) and data["layer_norm_eps"] > 0:
        meta["layer_norm_eps"] = float(data["layer_norm_eps"])
    if isinstance(data.get("hidden_act"), str):
        activation_layer(data["hidden_act"])  # an unknown one is refused here, by name
        meta["hidden_act"] = data["hidden_act"]
    if isinstance(data.get("rope_theta"), (int, float)) and data["rope_theta"] > 0:
        meta["rope_theta"] = float(data["rope_theta"])
    return meta
