"""Atomic checkpoints in the official DINO layout, readable with ``torch.load(weights_only=True)``.

``checkpoint.pth`` holds::

    student, teacher      state dicts with ``backbone.*`` (timm ViT names) and ``head.*`` keys
    optimizer             AdamW state
    epoch                 completed epochs (the official meaning: the epoch to start next)
    dino_loss             {"center": (1, K)}
    config                PretrainConfig.to_dict() (plain values, arch fields filled in)
    step, step_in_epoch   the data position: global step and step inside ``epoch``
    rng                   {"cpu": (world, S) uint8[, "cuda": (world, S') uint8]} per-rank states
    schedule              the lr / wd / momentum / teacher temperature of the next step
    world_size, elapsed_seconds, format

``backbone.safetensors`` holds the teacher backbone alone (timm key names), with the arch fields
as string metadata, its header keys sorted so that identical weights give identical bytes. Both are
written with :func:`dinoeval._io.atomic_write` (a temporary file in the same directory, flushed to
disk, given the umask's mode and renamed over the old file), so a reader (or a run killed at any
moment) sees either the old or the new complete file, never a partial one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dinoeval._io import atomic_write
from dinoeval.errors import DinoevalError

__all__ = ["BACKBONE_NAME", "CHECKPOINT_NAME", "FORMAT", "RUN_LOCK", "atomic_write", "load_checkpoint",
           "save_checkpoint", "save_safetensors"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pth"
BACKBONE_NAME = "backbone.safetensors"
FORMAT = "dinoeval-pretrain-v1"
RUN_LOCK = ".run.lock"  # held (flock) by the process training into the folder; names it (pid, host)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on ``tensors`` and ``metadata``.

    ``safetensors`` serialises the metadata from a hash map, so two saves of the same weights can
    order its keys differently and differ in bytes (and content hash). Here the JSON header is
    re-written with sorted keys (the format allows any order), padded with spaces to a multiple of
    8 bytes as the format requires; the tensor bytes and their offsets are unchanged.
    """
    import json
    import struct

    from safetensors.torch import save

    blob = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(blob[8 + n:])


def save_checkpoint(out_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``out_dir/checkpoint.pth`` and the teacher backbone as
    ``out_dir/backbone.safetensors``, both atomically. Returns the checkpoint path."""
    out = Path(out_dir)
    state = {**state, "format": FORMAT}
    _check_plain(state, "checkpoint")
    path = out / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    backbone = {k[len("backbone."):]: v.detach().contiguous().cpu()
                for k, v in state["teacher"].items() if k.startswith("backbone.")}
    cfg = state.get("config", {})
    meta = {"format": FORMAT, "network": "teacher", "epoch": str(state.get("epoch", ""))}
    meta.update({k: str(cfg[k]) for k in ("arch", "embed_dim", "depth", "num_heads", "patch_size",
                                          "img_size") if k in cfg})
    atomic_write(out / BACKBONE_NAME, lambda tmp: save_safetensors(backbone, tmp, meta))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a file or its run directory).

    Leftover temporary files of a killed save are ignored (and removed).
    """
    path = Path(path)
    if path.is_dir():
        for name in (CHECKPOINT_NAME, BACKBONE_NAME):
            for stale in path.glob(f".{name}.*.tmp*"):  # ".tmp" (older) or ".tmp<suffix>"
                stale.unlink(missing_ok=True)
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise DinoevalError(f"no checkpoint at {path}; start a run with --run-dir DIR first")
    from dinoeval.models.checkpoints import load_file

    obj = load_file(path)  # weights_only; one-line errors for empty, truncated or unsafe files
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DinoevalError(f"{path} is not a pretrain checkpoint (format {FORMAT}); "
                            "only runs written by `dinoeval pretrain` can be resumed")
    return obj


_PLAIN = (torch.Tensor, int, float, str, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything ``weights_only`` loading would reject, at save time rather than load time."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, "
                        "containers and plain values")


def compact_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True) -> Path:
    """Write the parts of a DINO training checkpoint that evaluation needs, compactly.

    Keeps the teacher (backbone and head), the loss center, the config and the epoch/step, in the
    official layout (``{"teacher": ..., "dino_loss": {"center": ...}, ...}``) so every reader
    still recognises it; drops the student and optimiser. ``half`` stores float tensors as
    float16 (the loader casts them back to float32): about 2 bytes per parameter.
    """
    from dinoeval.models.checkpoints import load_file

    obj = load_file(Path(src))
    if not isinstance(obj, dict) or "teacher" not in obj:
        raise DinoevalError(f"{src} is not a DINO training checkpoint (no 'teacher' entry)")

    def small(t: torch.Tensor) -> torch.Tensor:
        return t.half() if half and t.is_floating_point() else t

    out: dict[str, Any] = {"teacher": {k: small(v) for k, v in obj["teacher"].items()}}
    if isinstance(obj.get("dino_loss"), dict) and "center" in obj["dino_loss"]:
        out["dino_loss"] = {"center": obj["dino_loss"]["center"].float()}
    for key in ("config", "epoch"):
        if key in obj:
            out[key] = obj[key]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return dst
