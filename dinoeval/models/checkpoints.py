"""Read any DINO-style checkpoint safely and normalise it to timm ViT key names.

Formats detected (see DESIGN.md):

* official DINO backbone ``state_dict`` (``dino_deitsmall16_pretrain.pth``);
* full DINO training checkpoints: ``{"student", "teacher", "optimizer", "epoch", "dino_loss", "args"}``
  (``args`` is an ``argparse.Namespace``, allowed explicitly); the teacher is read by default;
* DINOv2 backbones (patch 14, LayerScale ``ls1.gamma``, ``register_tokens``, ``mask_token``,
  chunked ``blocks.<chunk>.<i>``);
* plain timm state dicts and ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers;
* ``.safetensors`` files;
* this project's pretrain checkpoints (the official layout plus ``config``).

Nothing is ever unpickled beyond tensors, containers and the allow-listed ``argparse.Namespace``:
a pickle that would run code raises :class:`UnsafeCheckpointError`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dinoeval.errors import DinoevalError

log = logging.getLogger(__name__)

SAFE_GLOBALS: list[Any] = [argparse.Namespace]
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")


class UnsafeCheckpointError(DinoevalError):
    """The file holds pickled objects outside the allow-list (it could run code)."""


@dataclass
class RawCheckpoint:
    """A checkpoint split into its parts.

    Attributes:
        backbone: ViT tensors with timm key names (no ``module.``/``backbone.`` prefixes).
        head: DINO head tensors without the ``head.`` prefix (empty when absent).
        center: DINO loss center ``(1, K)`` when present.
        format: detected format name.
        meta: small facts (epoch, arch, config) for notes and tables.
        notes: what was ignored or converted, for the user to read.
    """

    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    center: torch.Tensor | None = None
    format: str = "state_dict"
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    content_hash: str = ""


def file_hash(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """First 16 hex digits of the BLAKE2b hash of a file's bytes."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_file(path: str | Path) -> Any:
    """Load ``path`` with ``weights_only=True`` (safetensors by extension or magic)."""
    path = Path(path)
    if not path.exists():
        raise DinoevalError(f"checkpoint {path} not found; pass an existing file, "
                            "random:ARCH, timm:NAME or pixels")
    if path.is_dir():
        for name in ("checkpoint.pth", "backbone.safetensors", "backbone.pth"):
            if (path / name).exists():
                return load_file(path / name)
        raise DinoevalError(f"checkpoint {path} is a directory without checkpoint.pth")
    if path.stat().st_size == 0:
        raise DinoevalError(f"checkpoint {path} is an empty file (an interrupted copy or save?); "
                            "copy or write it again")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as st_load

        try:
            return st_load(str(path))
        except Exception as err:
            raise DinoevalError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # files saved with pickle protocol 4/5 load fine; torch warns about them regardless
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if found or "Unsupported global" in msg:
            what = found.group(1) if found else "a non-tensor object"
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it pickles {what}, which could run code; "
                "re-save it as a plain state_dict or .safetensors") from None
        lines = msg.splitlines() or [type(err).__name__]
        detail = next((ln for ln in lines if "Unsupported" in ln or "Error" in ln), lines[0])
        raise DinoevalError(f"checkpoint {path} cannot be read by torch.load ({detail.strip()}); "
                            "is it a PyTorch or safetensors checkpoint?") from None


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _unchunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2 FSDP checkpoints store ``blocks.<chunk>.<i>.``: keep the global index ``i``."""
    if not any(_CHUNKED.match(k) for k in state):
        return state
    return {_CHUNKED.sub(r"blocks.\2.", k): v for k, v in state.items()}


def _namespace_to_dict(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    if isinstance(args, dict):
        return {k: v for k, v in args.items() if isinstance(v, (int, float, str, bool))}
    return {}


def split_checkpoint(obj: Any, *, checkpoint_key: str = "teacher", source: str = "") -> RawCheckpoint:
    """Find the backbone (and head, center) inside a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise DinoevalError(f"checkpoint {source} holds a {type(obj).__name__}, not a state dict")
    notes: list[str] = []
    meta: dict[str, Any] = {}
    center = None
    fmt = "state_dict"
    state: Any = obj
    if "teacher" in obj or "student" in obj:
        fmt = "dino-train"
        if checkpoint_key not in obj:
            raise DinoevalError(f"checkpoint {source} has no {checkpoint_key!r} entry; "
                                f"it has {sorted(k for k in obj if isinstance(obj[k], dict))}")
        state = obj[checkpoint_key]
        ignored = [k for k in obj if k not in (checkpoint_key, "args", "config", "dino_loss")]
        if ignored:
            notes.append(f"read {checkpoint_key!r}; ignored {', '.join(sorted(ignored))}")
        if isinstance(obj.get("dino_loss"), dict) and "center" in obj["dino_loss"]:
            center = obj["dino_loss"]["center"]
        meta.update(_namespace_to_dict(obj.get("args")))
        if isinstance(obj.get("config"), dict):
            fmt = "dinoeval-pretrain"
            meta.update(_namespace_to_dict(obj["config"]))
            meta["config"] = obj["config"]
        if "epoch" in obj:
            meta["epoch"] = int(obj["epoch"])
    else:
        for key in ("model", "state_dict", "model_state", "module"):
            if key in obj and isinstance(obj[key], dict):
                state, fmt = obj[key], f"wrapped[{key}]"
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DinoevalError(f"checkpoint {source}: could not find a tensor state dict "
                            f"(top-level keys: {sorted(map(str, obj))[:8]})")
    state = _unchunk(_strip(state))
    head = {k[len("head."):]: v for k, v in state.items()
            if k.startswith("head.") and ("mlp." in k or "last_layer" in k)}
    if head:
        notes.append(f"found a DINO head ({len(head)} tensors): used by collapse statistics only")
    backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "register_tokens" in backbone or any(".ls1." in k for k in backbone):
        fmt = "dinov2" if fmt == "state_dict" else fmt
    return RawCheckpoint(backbone=backbone, head=head, center=center, format=fmt, meta=meta,
                         notes=notes)


def read_checkpoint(path: str | Path, *, checkpoint_key: str = "teacher") -> RawCheckpoint:
    """Load ``path`` safely and split it; ``content_hash`` is the hash of the file's bytes."""
    path = Path(path)
    obj = load_file(path)
    raw = split_checkpoint(obj, checkpoint_key=checkpoint_key, source=str(path))
    raw.content_hash = file_hash(path if path.is_file() else _resolve_dir(path))
    if path.suffix == ".safetensors":
        raw.format = "safetensors" if raw.format == "state_dict" else f"safetensors/{raw.format}"
    return raw


def _resolve_dir(path: Path) -> Path:
    for name in ("checkpoint.pth", "backbone.safetensors", "backbone.pth"):
        if (path / name).exists():
            return path / name
    return path
