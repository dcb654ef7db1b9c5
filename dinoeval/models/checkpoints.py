"""Read any DINO-style checkpoint safely and normalise it to timm ViT key names.

Formats detected (see DESIGN.md):

* official DINO backbone ``state_dict`` (``dino_deitsmall16_pretrain.pth``);
* full DINO training checkpoints: ``{"student", "teacher", "optimizer", "epoch", "dino_loss", "args"}``
  (``args`` is an ``argparse.Namespace``, allowed explicitly); the teacher is read by default;
* DINOv2 backbones (patch 14, LayerScale ``ls1.gamma``, ``register_tokens``, ``mask_token``,
  chunked ``blocks.<chunk>.<i>``);
* plain timm state dicts and ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers;
* ``.safetensors`` files;
* this project's pretrain checkpoints (the official layout plus ``config``);
* DINOv2 training checkpoints (``model_final.rank_0.pth``: ``{"model": {"teacher.backbone.*",
  "student.backbone.*", "teacher.dino_head.*", "dino_loss.center", ...}, "iteration"}``);
* Hugging Face ``transformers`` exports (:mod:`dinoeval.models.hf`), files or export folders.

Which network the tensors describe (DINO v1 ViT, DINOv2, DINOv3, XCiT, ResNet) is decided by the
family registry (:mod:`dinoeval.models.registry`). Broken downloads (a Git LFS pointer, an HTML
page, a truncated zip) are named before ``torch.load`` sees them (:func:`sniff_broken`).

Nothing is ever unpickled beyond tensors, containers, the allow-listed ``argparse.Namespace`` and
numpy scalars / dtypes:
a pickle that would run code raises :class:`UnsafeCheckpointError`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
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


_DIR_NAMES = ("checkpoint.pth", "backbone.safetensors", "backbone.pth", "model.safetensors",
              "pytorch_model.bin", "model_final.rank_0.pth", "teacher_checkpoint.pth")


def _numpy_globals() -> list[Any]:
    """numpy scalars and dtypes (``best_acc`` saved as ``np.float64`` is common): plain values,
    allowed under both the numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar
    except AttributeError:  # numpy 1
        scalar = np.core.multiarray.scalar  # type: ignore[attr-defined]
    out: list[Any] = [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"),
                      (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")
                and isinstance(getattr(dtypes, n), type)]
    return out


def sniff_broken(path: Path) -> str | None:
    """A one-line diagnosis of a file that cannot be a checkpoint, from its first bytes:
    a Git LFS pointer, an HTML page, or a zip (``torch.save``) whose end is missing."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"version https://git-lfs"):
        return (f"checkpoint {path} is a Git LFS pointer ({size} bytes), not the weights: run "
                "`git lfs pull` (or download the file itself)")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text[:200]:
        return (f"checkpoint {path} is an HTML page ({size} bytes), not a checkpoint (a login "
                "or error page saved by the download?): download it again")
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        if not zipfile.is_zipfile(path):
            return (f"checkpoint {path} is a truncated zip ({size} bytes; its end is missing, "
                    "an interrupted download or copy?): download or copy it again")
    return None


def resolve_path(path: str | Path) -> Path:
    """The checkpoint file of ``path`` (a file, or a run / Hugging Face folder holding one)."""
    path = Path(path)
    if not path.exists():
        raise DinoevalError(f"checkpoint {path} not found; pass an existing file, "
                            "random:ARCH, timm:NAME or pixels")
    if path.is_dir():
        for name in _DIR_NAMES:
            if (path / name).is_file():
                return path / name
        raise DinoevalError(f"checkpoint {path} is a directory without a checkpoint (looked for "
                            f"{', '.join(_DIR_NAMES)}); pass the checkpoint file itself")
    return path


def load_file(path: str | Path) -> Any:
    """Load ``path`` with ``weights_only=True`` (safetensors by extension or magic).

    Raises:
        DinoevalError: missing, empty, broken (LFS pointer, HTML, truncated) or unreadable file.
        UnsafeCheckpointError: it pickles objects outside the allow-list.
    """
    path = resolve_path(path)
    if path.stat().st_size == 0:
        raise DinoevalError(f"checkpoint {path} is an empty file (an interrupted copy or save?); "
                            "copy or write it again")
    broken = sniff_broken(path)
    if broken:
        raise DinoevalError(broken)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as st_load

        try:
            return st_load(str(path))
        except Exception as err:
            raise DinoevalError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    try:
        return _weights_only_load(path)
    except DinoevalError:
        raise
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


def _torch_load(source: Path | io.BytesIO) -> Any:
    with torch.serialization.safe_globals(SAFE_GLOBALS + _numpy_globals()), \
            warnings.catch_warnings():
        # a protocol 4/5 file is rewritten below when torch cannot read it: no warning to show
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(source, map_location="cpu", weights_only=True)


def _weights_only_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file pickled with protocol 3-5, whose opcodes torch's
    weights-only unpickler lacks ("Unsupported operand 149"), is rewritten to protocol 2 first
    (:mod:`dinoeval.models.pickle_compat`) and read by the same unpickler and allow-list."""
    from dinoeval.models.pickle_compat import (
        PickleDowngradeError,
        downgrade_checkpoint,
        pickle_protocol,
    )

    try:
        return _torch_load(path)
    except Exception as err:
        proto = pickle_protocol(path)
        if "Unsupported operand" not in str(err) or proto is None or proto <= 2:
            raise
        log.info("%s: pickle protocol %d, rewritten to protocol 2 for the weights-only loader",
                 path, proto)
        try:
            copy = downgrade_checkpoint(path)
        except PickleDowngradeError as bad:
            raise DinoevalError(
                f"checkpoint {path} is pickled with protocol {proto} and uses {bad}, which "
                "torch's weights-only loader cannot read safely; re-save it from a trusted "
                "session as a plain state_dict (torch.save(state_dict, path)) or as "
                ".safetensors") from None
        return _torch_load(copy)


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty when none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


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


def _is_dinov2_train(obj: dict[str, Any]) -> bool:
    model = obj.get("model")
    return isinstance(model, dict) and any(
        isinstance(k, str) and k.startswith(("teacher.backbone.", "student.backbone."))
        for k in model)


def _networks(obj: dict[str, Any]) -> list[str]:
    return [k for k in ("teacher", "student") if isinstance(obj.get(k), dict)]


def _dino_train(obj: dict[str, Any], key: str, source: str, meta: dict[str, Any],
                notes: list[str]) -> tuple[dict[str, Any], torch.Tensor | None, str]:
    """The ``key`` network of an official DINO (or this project's) training checkpoint."""
    if key not in obj:
        raise DinoevalError(f"checkpoint {source} has no {key!r} entry; "
                            f"it has {sorted(k for k in obj if isinstance(obj[k], dict))}")
    meta["networks"] = _networks(obj)
    ignored = [k for k in obj if k not in (key, "args", "config", "dino_loss")]
    if ignored:
        notes.append(f"read {key!r}; ignored {', '.join(sorted(map(str, ignored)))}")
    center = None
    if isinstance(obj.get("dino_loss"), dict) and "center" in obj["dino_loss"]:
        center = obj["dino_loss"]["center"]
    meta.update(_namespace_to_dict(obj.get("args")))
    fmt = "dino-train"
    if isinstance(obj.get("config"), dict):
        fmt = "dinoeval-pretrain"
        meta.update(_namespace_to_dict(obj["config"]))
        meta["config"] = obj["config"]
    if "epoch" in obj:
        meta["epoch"] = int(obj["epoch"])
    return obj[key], center, fmt


def _dinov2_train(obj: dict[str, Any], key: str, source: str, meta: dict[str, Any],
                  notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], torch.Tensor | None]:
    """DINOv2's ``model_final.rank_0.pth``: ``{"model": {"teacher.backbone.*",
    "student.backbone.*", "teacher.dino_head.*", "teacher.ibot_head.*", "dino_loss.center",
    ...}, "iteration": N, ...}`` -> (backbone, head, center) of network ``key``."""
    model = obj["model"]
    held = sorted({k.split(".")[0] for k in model if k.split(".")[0] in ("teacher", "student")})
    if key not in held:
        raise DinoevalError(f"checkpoint {source} has no {key!r} network; it holds "
                            f"{', '.join(held)}: pass --checkpoint-key {held[0]}")
    meta["networks"] = held
    if "iteration" in obj:
        meta["iteration"] = int(obj["iteration"])
    bb_prefix, head_prefix = f"{key}.backbone.", f"{key}.dino_head."
    state = {k[len(bb_prefix):]: v for k, v in model.items() if k.startswith(bb_prefix)}
    head = {k[len(head_prefix):]: v for k, v in model.items() if k.startswith(head_prefix)}
    center = model.get("dino_loss.center")
    used = {k for k in model if k.startswith((bb_prefix, head_prefix))} | {"dino_loss.center"}
    groups = sorted({".".join(k.split(".")[:2]) for k in model if k not in used})
    others = sorted(str(k) for k in obj if k != "model")
    notes.append(f"read {key!r} of a DINOv2 training checkpoint; ignored "
                 f"{', '.join(groups + others) or 'nothing'}")
    return state, head, center


def split_checkpoint(obj: Any, *, checkpoint_key: str = "teacher", source: str = "") -> RawCheckpoint:
    """Find the backbone (and head, center) inside a loaded checkpoint object.

    Raises:
        DinoevalError: no tensor state dict inside, or no ``checkpoint_key`` network.
    """
    from dinoeval.models.hf import convert_hf, is_hf

    if not isinstance(obj, dict):
        raise DinoevalError(f"checkpoint {source} holds a {type(obj).__name__}, not a state dict")
    notes: list[str] = []
    meta: dict[str, Any] = {}
    center = None
    head: dict[str, Any] = {}
    fmt = "state_dict"
    state: Any = obj
    if _is_dinov2_train(obj):
        fmt = "dinov2-train"
        state, head, center = _dinov2_train(obj, checkpoint_key, source, meta, notes)
    elif "teacher" in obj or "student" in obj:
        state, center, fmt = _dino_train(obj, checkpoint_key, source, meta, notes)
    else:
        for key in ("model", "state_dict", "model_state", "module"):
            if key in obj and isinstance(obj[key], dict):
                state, fmt = obj[key], f"wrapped[{key}]"
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise DinoevalError(f"checkpoint {source}: could not find a tensor state dict "
                            f"(top-level keys: {sorted(map(str, obj))[:8]})")
    if is_hf(state):
        state, hf_kind = convert_hf(state)
        fmt = f"hf-{hf_kind}"
        notes.append(f"converted Hugging Face {hf_kind} keys to the official layout")
    state = _unchunk(_strip(state))
    if not head:
        head = {k[len("head."):]: v for k, v in state.items()
                if k.startswith("head.") and ("mlp." in k or "last_layer" in k)}
    if head:  # relevant to collapse-stats only, which says so itself: not a note of every command
        log.debug("%s: found a DINO head (%d tensors)", source, len(head))
    backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "register_tokens" in backbone or any(".ls1." in k for k in backbone):
        fmt = "dinov2" if fmt == "state_dict" else fmt
    return RawCheckpoint(backbone=backbone, head=head, center=center, format=fmt, meta=meta,
                         notes=notes)


def read_checkpoint(path: str | Path, *, checkpoint_key: str = "teacher") -> RawCheckpoint:
    """Load ``path`` (a file or a folder holding one) safely and split it; ``content_hash`` is
    the hash of the file's bytes."""
    path = resolve_path(path)
    obj = load_file(path)
    raw = split_checkpoint(obj, checkpoint_key=checkpoint_key, source=str(path))
    if path.suffix == ".safetensors":
        meta = safetensors_metadata(path)
        if meta.get("format", "").startswith("dinoeval"):  # pretrain's backbone.safetensors
            raw.format = "dinoeval-pretrain"
            raw.meta.update({k: v for k, v in meta.items() if k != "format"})
    raw.content_hash = file_hash(path)
    if raw.format.startswith("hf-"):
        from dinoeval.models.hf import hf_config_meta

        raw.meta.update(hf_config_meta(path))
    if path.suffix == ".safetensors" and raw.format != "dinoeval-pretrain":
        raw.format = "safetensors" if raw.format == "state_dict" else f"safetensors/{raw.format}"
    return raw
