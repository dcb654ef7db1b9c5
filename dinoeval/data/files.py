"""Image files given one by one (``dinoeval attention --images a.jpg b.png``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dinoeval.data._base import ImageSource
from dinoeval.data.builtin import read_rgb
from dinoeval.errors import DinoevalError


class FileListSource(ImageSource):
    """Image files given as a list of paths (``--images a.jpg b.png``, a benchmark's file list),
    decoded lazily: labels ``-1``, no masks.

    Raises:
        DinoevalError: no paths, or a path that is not a file.
    """

    def __init__(self, paths: Sequence[str | Path], *, spec: str = "images",
                 name: str = "images", split: str = "files") -> None:
        if not paths:
            raise DinoevalError("no image files given; pass --images FILE [FILE ...]"
                                if spec == "images" else f"{spec}: no image files")
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.is_file():
                raise DinoevalError(f"image file {p} not found")
        self.labels = np.full(len(self.paths), -1, dtype=np.int64)
        self.spec, self.name, self.split = spec, name, split
        self.classes = ()

    def load(self, index: int) -> np.ndarray:
        return read_rgb(self.paths[index])

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for p in self.paths:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
