"""Reading one feature-cache entry by its folder (what ``dinoeval extract --cache-dir DIR`` wrote)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dinoeval.errors import DinoevalError


def find_entry(path: str | Path) -> Path:
    """A feature-cache entry: ``path`` itself (it has ``meta.json``) or its only complete entry."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path
    if not path.is_dir():
        raise DinoevalError(f"feature directory {path} not found; write one with dinoeval extract "
                            "--cache-dir DIR")
    entries = sorted(p for p in path.iterdir() if (p / "meta.json").exists()
                     and json.loads((p / "meta.json").read_text()).get("complete"))
    if len(entries) != 1:
        names = ", ".join(p.name for p in entries) or "none"
        raise DinoevalError(f"{path} holds {len(entries)} complete feature entries ({names}); "
                            "pass the entry directory itself")
    return entries[0]


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` with a one-line error naming a missing, truncated or corrupt file."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise DinoevalError(f"{path} is missing; extract the features again") from None
    except (OSError, ValueError) as err:
        raise DinoevalError(f"{path} is truncated or corrupt ({err}); extract the features "
                            "again") from None
