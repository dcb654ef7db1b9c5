"""Tiny checkpoints in each family's exact official key layout, and their reference forwards.

Each builder writes a file and returns ``(path, reference)`` where ``reference(x)`` gives the
reference network's final-norm tokens ``(B, T, D)`` (class token first) for a normalised batch.
References are independent implementations: ``transformers`` (DINOv2, DINOv3, DINO v1 exports),
timm (DINO v1, XCiT), torchvision (ResNet-50). The mapping to the official layout is written
here by hand from the official repositories' module names, not with :mod:`dinoeval.models`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

Reference = Callable[[torch.Tensor], torch.Tensor]


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _perturb(model: torch.nn.Module, scale: float = 0.3) -> None:
    """Non-trivial values everywhere (LayerScale, tokens, biases), so a layout bug shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "token" in name or "lambda" in name or "position" in name:
                p.add_(torch.randn_like(p) * scale)


def _hf_blocks_to_official(sd: dict, prefix: str, depth: int, *, v3: bool) -> dict:
    """transformers 5 block names -> official DINOv2/DINOv3 ``blocks.i.*``."""
    out = {}
    for i in range(depth):
        b = f"{prefix}{i}."
        q, k, v = (sd[f"{b}attention.{n}_proj.weight"] for n in "qkv")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
        if f"{b}attention.q_proj.bias" in sd:
            qb, vb = sd[f"{b}attention.q_proj.bias"], sd[f"{b}attention.v_proj.bias"]
            kb = sd.get(f"{b}attention.k_proj.bias", torch.zeros_like(qb))
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([qb, kb, vb])
            if v3:
                out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat(
                    [torch.ones_like(qb), torch.zeros_like(qb), torch.ones_like(qb)])
        out[f"blocks.{i}.attn.proj.weight"] = sd[f"{b}attention.o_proj.weight"]
        out[f"blocks.{i}.attn.proj.bias"] = sd[f"{b}attention.o_proj.bias"]
        for n in ("norm1", "norm2"):
            for t in ("weight", "bias"):
                out[f"blocks.{i}.{n}.{t}"] = sd[f"{b}{n}.{t}"]
        out[f"blocks.{i}.ls1.gamma"] = sd[f"{b}layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = sd[f"{b}layer_scale2.lambda1"]
        if f"{b}mlp.gate_proj.weight" in sd:  # SwiGLU: DINOv2 packs [gate; up] into w12
            for t in ("weight", "bias"):
                gate, up = sd[f"{b}mlp.gate_proj.{t}"], sd[f"{b}mlp.up_proj.{t}"]
                if v3:
                    out[f"blocks.{i}.mlp.w1.{t}"], out[f"blocks.{i}.mlp.w2.{t}"] = gate, up
                else:
                    out[f"blocks.{i}.mlp.w12.{t}"] = torch.cat([gate, up])
                out[f"blocks.{i}.mlp.w3.{t}"] = sd[f"{b}mlp.down_proj.{t}"]
            continue
        names = {"fc1": "fc1", "fc2": "fc2", "up_proj": "fc1", "down_proj": "fc2"}
        for hf, off in names.items():
            for t in ("weight", "bias"):
                if f"{b}mlp.{hf}.{t}" in sd:
                    out[f"blocks.{i}.mlp.{off}.{t}"] = sd[f"{b}mlp.{hf}.{t}"]
    return out


def dinov2_hf_model(*, registers: int = 0, swiglu: bool = False, seed: int = 0, **cfg):
    """A tiny random ``transformers`` DINOv2 (16 px, patch 4, width 64, 2 heads, depth 2);
    ``cfg`` overrides config fields (``layer_norm_eps``, ``hidden_act``, ...)."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    _seeded(seed)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=4,
              image_size=16, use_swiglu_ffn=swiglu, layer_norm_eps=1e-6)
    kw.update(cfg)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers,
                                                                   **kw))
    else:
        model = Dinov2Model(Dinov2Config(**kw))
    _perturb(model.eval())
    return model


def dinov2_official(model) -> dict:
    """A ``transformers`` DINOv2 written in the official ``dinov2`` layout."""
    sd = model.state_dict()
    out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
           "mask_token": sd["embeddings.mask_token"].reshape(1, -1),
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    out.update(_hf_blocks_to_official(sd, "encoder.layer.", model.config.num_hidden_layers,
                                      v3=False))
    return out


def hf_reference(model) -> Reference:
    def ref(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pixel_values=x).last_hidden_state
    return ref


def dinov3_hf_model(*, storage: int = 4, qkv_bias: bool = True, seed: int = 0, **cfg):
    """A tiny random ``transformers`` DINOv3 ViT (patch 16, width 64, 2 heads, depth 2);
    ``cfg`` overrides config fields (``layer_norm_eps``, ``use_gated_mlp``, ``rope_theta``)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    _seeded(seed)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=256, patch_size=16, image_size=32,
              num_register_tokens=storage, query_bias=qkv_bias, value_bias=qkv_bias,
              layerscale_value=0.5)
    kw.update(cfg)
    model = DINOv3ViTModel(DINOv3ViTConfig(**kw)).eval()
    _perturb(model)
    return model


def dinov3_official(model) -> dict:
    """A ``transformers`` DINOv3 written in the official ``dinov3`` layout (periods for base 100,
    ``bias_mask`` zeroing the key bias)."""
    sd = model.state_dict()
    d = model.config.hidden_size
    head_dim = d // model.config.num_attention_heads
    out = {"cls_token": sd["embeddings.cls_token"],
           "storage_tokens": sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"].reshape(1, d),
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
           "rope_embed.periods": 100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2)),
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    prefix = "model.layer." if "model.layer.0.norm1.weight" in sd else "layer."
    out.update(_hf_blocks_to_official(sd, prefix, model.config.num_hidden_layers, v3=True))
    return out


def vit_hf_model(seed: int = 0, **cfg):
    """A tiny random ``transformers`` ``ViTModel`` (DINO v1 export, 16 px, patch 4, width 64);
    ``cfg`` overrides config fields."""
    from transformers import ViTConfig, ViTModel

    _seeded(seed)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
              patch_size=4, image_size=16, layer_norm_eps=1e-6)
    kw.update(cfg)
    model = ViTModel(ViTConfig(**kw), add_pooling_layer=False).eval()
    _perturb(model)
    return model


def to_legacy_hf_names(sd: dict) -> dict:
    """transformers 5 in-memory names -> the on-disk names of the hub exports
    (``encoder.layer.N.attention.attention.query``, ``layernorm_before``, ...)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("layers.", "encoder.layer.")
        k = (k.replace("attention.q_proj", "attention.attention.query")
             .replace("attention.k_proj", "attention.attention.key")
             .replace("attention.v_proj", "attention.attention.value")
             .replace("attention.o_proj", "attention.output.dense"))
        if ".mlp.fc1." in k and "layernorm_before" in " ".join(sd):
            k = k.replace(".mlp.fc1.", ".intermediate.dense.")
        if ".mlp.fc2." in k and "layernorm_before" in " ".join(sd):
            k = k.replace(".mlp.fc2.", ".output.dense.")
        out[k] = v
    for k in [k for k in out if ".mlp.gate_proj." in k]:  # DINOv2 SwiGLU on disk: weights_in
        up = k.replace("gate_proj", "up_proj")
        out[k.replace("gate_proj", "weights_in")] = torch.cat([out.pop(k), out.pop(up)])
        down = k.replace("gate_proj", "down_proj")
        out[down.replace("down_proj", "weights_out")] = out.pop(down)
    return out


def save_hf_export(folder: Path, model, *, legacy: bool) -> Path:
    """``model.safetensors`` + ``config.json`` as ``save_pretrained`` lays them out."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if legacy:
        sd = to_legacy_hf_names(sd)
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), default=str))
    return folder


def timm_vit(seed: int = 0, **kw):
    from timm.models.vision_transformer import VisionTransformer

    _seeded(seed)
    args = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=1, num_classes=0,
                dynamic_img_size=True, global_pool="token")
    args.update(kw)
    model = VisionTransformer(**args).eval()
    _perturb(model)
    return model


def xcit_model(seed: int = 0, cls_attn_layers: int = 1):
    from timm.models.xcit import Xcit

    _seeded(seed)
    model = Xcit(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=0,
                 cls_attn_layers=cls_attn_layers, tokens_norm=False).eval()
    _perturb(model, 0.1)
    return model


def xcit_official(model) -> dict:
    """timm's ``Xcit`` in the official ``facebookresearch/xcit`` layout (``pos_embeder``, fused
    class-attention ``qkv``)."""
    out = {}
    sd = model.state_dict()
    for k, v in sd.items():
        if k.startswith("pos_embed."):
            out["pos_embeder." + k[len("pos_embed."):]] = v
        elif ".attn.q." in k and k.startswith("cls_attn_blocks."):
            stem, t = k.split(".attn.q.")
            out[f"{stem}.attn.qkv.{t}"] = torch.cat(
                [sd[f"{stem}.attn.{n}.{t}"] for n in "qkv"])
        elif k.startswith("cls_attn_blocks.") and (".attn.k." in k or ".attn.v." in k):
            continue
        else:
            out[k] = v
    return out


def resnet_model(seed: int = 0, *, bottleneck: bool = True):
    """torchvision ResNet, one block per stage: bottlenecks (2048-d like ResNet-50), or basic
    blocks (512-d, cheaper, for the command-line tests)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    _seeded(seed)
    model = ResNet(Bottleneck if bottleneck else BasicBlock, [1, 1, 1, 1]).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.fc = torch.nn.Identity()
    return model


# --- one tiny checkpoint file (or folder) per family, for the command-line tests -------------

def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _dinov2_train(root: Path) -> Path:
    v2 = dinov2_official(dinov2_hf_model(registers=2))
    model = {f"{net}.backbone.{k}": v for net in ("teacher", "student") for k, v in v2.items()}
    return _save(root / "model_final.rank_0.pth", {"model": model, "iteration": 10})


def _pretrain_run(root: Path) -> Path:
    """This project's pretrain layout: ``teacher``/``student`` ``backbone.*`` + ``config``."""
    sd = {f"backbone.{k}": v for k, v in timm_vit().state_dict().items()}
    run = root / "run"
    run.mkdir()
    return _save(run / "checkpoint.pth", {"teacher": sd, "student": sd, "epoch": 1,
                                          "config": {"arch": "vit_tiny", "num_heads": 1}})


#: family -> [(example name, build(folder) -> checkpoint path, input side)]; every family of
#: the registry must have one (tests/models/test_family_cli.py fails for a family without).
EXAMPLES: dict[str, list[tuple[str, Callable[[Path], Path], int]]] = {
    "dino": [("dino", lambda r: _save(r / "dino.pth", timm_vit().state_dict()), 16),
             ("dino-1ch", lambda r: _save(r / "dino1.pth", timm_vit(in_chans=1).state_dict()),
              16)],
    "dinov2": [("dinov2-reg", lambda r: _save(r / "v2reg.pth", dinov2_official(
        dinov2_hf_model(registers=2))), 16),
               ("dinov2-train", _dinov2_train, 16),
               ("hf-dinov2", lambda r: save_hf_export(r / "hf", dinov2_hf_model(), legacy=True),
                16)],
    "dinov3": [("dinov3", lambda r: _save(r / "v3.pth", dinov3_official(dinov3_hf_model())),
                32)],
    "xcit": [("xcit", lambda r: _save(r / "xcit.pth", xcit_official(xcit_model())), 32)],
    "resnet": [("resnet", lambda r: _save(r / "rn.pth", resnet_model(
        bottleneck=False).state_dict()), 32)],
    "dinoeval": [("dinoeval-pretrain", _pretrain_run, 16)],
}
