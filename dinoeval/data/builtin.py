"""Built-in sources: Fashion-MNIST (Debian's IDX files), scikit-learn's digits, ImageFolder."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval.data._base import ArraySource, ImageSource
from dinoeval.errors import DinoevalError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


class BadImageError(DinoevalError):
    """An image file that cannot be decoded."""

    SKIP_HINT = "fix or delete it, or pass --skip-bad-images to skip and count such files"

    def __init__(self, path: str | Path, reason: str, hint: str = SKIP_HINT) -> None:
        super().__init__(f"cannot read image {path}: {reason} ({hint})")
        self.path, self.reason = str(path), reason

    def __reduce__(self) -> tuple[Any, ...]:  # pickles across DataLoader workers
        return (BadImageError, (self.path, self.reason))


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3) uint8`` RGB; :class:`BadImageError` names a broken file.

    Every PIL mode is converted faithfully (16-bit, float, alpha, CMYK; see
    :mod:`dinoeval.data._decode`) or refused with an error naming the mode.
    """
    from PIL import Image

    from dinoeval.data._decode import to_rgb

    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Exception as err:  # PIL raises many types for broken files
        raise BadImageError(path, f"{type(err).__name__}: {err}") from err


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DinoevalError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DinoevalError(f"{path} is truncated: expected {np.prod(shape)} values, found {arr.size}")
    return arr.reshape(shape)


def fashion_mnist(split: str = "train", root: str | Path | None = None) -> ArraySource:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000): ``(N, 28, 28)`` uint8, 10 classes."""
    if split not in ("train", "test"):
        raise DinoevalError(f"fashion-mnist split must be 'train' or 'test', got {split!r}")
    root = Path(root or os.environ.get("DINOEVAL_FASHION_MNIST", FASHION_MNIST_DIR))
    prefix = "train" if split == "train" else "t10k"
    files = [root / f"{prefix}-images-idx3-ubyte", root / f"{prefix}-labels-idx1-ubyte"]
    found = []
    for f in files:
        candidates = [f.with_name(f.name + ".gz"), f]
        hit = next((c for c in candidates if c.exists()), None)
        if hit is None:
            raise DinoevalError(
                f"Fashion-MNIST file {candidates[0]} not found; install it with "
                "`apt-get install dataset-fashion-mnist` or point to a copy with fashion-mnist:SPLIT@DIR")
        found.append(hit)
    images, labels = read_idx(found[0]), read_idx(found[1])
    return ArraySource(images, labels.astype(np.int64), spec=f"fashion-mnist:{split}",
                       name="fashion-mnist", split=split, classes=FASHION_MNIST_CLASSES)


def digits(split: str = "all") -> ArraySource:
    """scikit-learn's 1,797 real 8x8 digits, scaled to uint8; ``train``/``test`` is a fixed
    stratified 75/25 split (seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    if split != "all":
        if split not in ("train", "test"):
            raise DinoevalError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
        rng = np.random.default_rng(0)
        is_test = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            is_test[rng.permutation(idx)[: len(idx) // 4]] = True
        keep = np.flatnonzero(is_test if split == "test" else ~is_test)
        images, labels = images[keep], labels[keep]
    return ArraySource(images, labels, spec=f"digits:{split}", name="digits", split=split,
                       classes=tuple(str(i) for i in range(10)))


class ImageFolderSource(ImageSource):
    """``root/<class>/<image>`` files, sorted by class then file name; decoded lazily to RGB."""

    def __init__(self, root: str | Path, *, spec: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DinoevalError(f"image folder {self.root} does not exist or is not a directory")
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not class_dirs:
            raise DinoevalError(f"image folder {self.root} has no class sub-folders "
                                "(expected root/<class>/<image files>)")
        paths: list[Path] = []
        labels: list[int] = []
        for c, d in enumerate(class_dirs):
            for p in sorted(d.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(p)
                    labels.append(c)
        if not paths:
            raise DinoevalError(f"image folder {self.root} has no images with extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)}")
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = tuple(d.name for d in class_dirs)
        self.spec = spec or f"imagefolder:{self.root}"
        self.name = self.root.name
        self.split = self.root.name if self.root.name in ("train", "val", "test") else "all"

    def load(self, index: int) -> np.ndarray:
        return read_rgb(self.paths[index])

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for p, y in zip(self.paths, self.labels, strict=True):
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}|{y}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
