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
as string metadata. Both are written to a temporary file in
the same directory, flushed to disk and renamed over the old file, so a reader (or a run killed at
any moment) sees either the old or the new complete file, never a partial one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dinoeval.errors import DinoevalError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pth"
BACKBONE_NAME = "backbone.safetensors"
FORMAT = "dinoeval-pretrain-v1"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path`` (and fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not possible on every filesystem
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_checkpoint(out_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``out_dir/checkpoint.pth`` and the teacher backbone as
    ``out_dir/backbone.safetensors``, both atomically. Returns the checkpoint path."""
    from safetensors.torch import save_file

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
    atomic_write(out / BACKBONE_NAME, lambda tmp: save_file(backbone, tmp, metadata=meta))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a file or its run directory).

    Leftover temporary files of a killed save are ignored (and removed).
    """
    path = Path(path)
    if path.is_dir():
        for stale in path.glob(f".{CHECKPOINT_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)
        for stale in path.glob(f".{BACKBONE_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise DinoevalError(f"no checkpoint at {path}; start a run with --out DIR first")
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
