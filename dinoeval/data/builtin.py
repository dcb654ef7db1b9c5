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


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _few(paths: list[Path], n: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:n])
    return names + (f", ... ({len(paths)} in all)" if len(paths) > n else "")


def _common_size(paths: list[Path]) -> tuple[int, int] | None:
    """The ``(H, W)`` shared by every image file (from the headers), or None."""
    from PIL import Image

    size = None
    for p in paths:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:  # a broken file: decoding will name it later
            return None
        if size is None:
            size = (h, w)
        elif size != (h, w):
            return None
    return size


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

    if split not in ("train", "test", "all"):
        raise DinoevalError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    full = ArraySource(images, labels, spec="digits:all", name="digits", split="all",
                       classes=tuple(str(i) for i in range(10)))
    if split == "all":
        return full
    rng = np.random.default_rng(0)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        is_test[rng.permutation(idx)[: len(idx) // 4]] = True
    part = full.subset(np.flatnonzero(is_test if split == "test" else ~is_test))
    part.spec, part.split = f"digits:{split}", split  # origin: digits:all, so overlap is seen
    return part


class ImageFolderSource(ImageSource):
    """Image files under ``root``, decoded lazily to RGB.

    Two layouts:

    * ``root/<class>/**/<image>``: one sub-folder per class (images in nested folders belong to
      their top-level class; an empty class folder is a class with no images); sorted by class,
      then by path. ``classes`` are the folder names.
    * ``root/<image>``: a flat folder of unlabelled images (``labels`` all -1, ``classes`` empty),
      sorted by file name: for ``extract``, ``attention`` and other commands that need no labels.

    Hidden files and folders (``.name``) are ignored. A root holding both class folders and
    loose images is refused (the loose images would silently be left out).
    """

    def __init__(self, root: str | Path, *, spec: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DinoevalError(f"image folder {self.root} does not exist or is not a directory")
        entries = sorted(p for p in self.root.iterdir() if not p.name.startswith("."))
        class_dirs = [p for p in entries if p.is_dir()]
        loose = [p for p in entries if _is_image(p)]
        if class_dirs and loose:
            raise DinoevalError(
                f"image folder {self.root} has both class sub-folders ({_few(class_dirs)}) and "
                f"{len(loose)} images at its top level ({_few(loose)}); move the images into "
                "class folders, or point at a folder of images only")
        paths: list[Path] = []
        labels: list[int] = []
        if class_dirs:
            for c, d in enumerate(class_dirs):
                for p in sorted(d.rglob("*")):
                    if _is_image(p) and not any(part.startswith(".")
                                                for part in p.relative_to(d).parts):
                        paths.append(p)
                        labels.append(c)
        else:
            paths, labels = loose, [-1] * len(loose)
        if not paths:
            raise DinoevalError(f"image folder {self.root} has no images with extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)}")
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = tuple(d.name for d in class_dirs)
        self.spec = spec or f"imagefolder:{self.root}"
        # the dataset is the folder, or its parent when the folder is a split: /data/imagenet/val
        # is dataset "imagenet", split "val" (never just "val", which /data/inat/val also is)
        is_split = self.root.name in ("train", "val", "test")
        self.name = (self.root.resolve().parent.name if is_split else self.root.name) or "images"
        self.split = self.root.name if is_split else "all"
        self._native_size: tuple[tuple[int, int] | None] | None = None

    @property
    def native_size(self) -> tuple[int, int] | None:  # type: ignore[override]
        """``(H, W)`` when every image has the same size (read from the file headers once,
        nothing decoded), else None; None also when a header is unreadable."""
        if self._native_size is None:
            self._native_size = (_common_size(self.paths),)
        return self._native_size[0]

    def load(self, index: int) -> np.ndarray:
        return read_rgb(self.paths[index])

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for p, y in zip(self.paths, self.labels, strict=True):
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}|{y}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
