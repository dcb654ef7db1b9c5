"""Copy-detection benchmarks: a procedural one from any image source, and the Copydays layout.

The Copydays protocol (Douze et al. 2009; DINO's ``eval_copy_detection.py``, "strong" block):
transformed copies are the queries, the database holds the originals plus distractor images, and
each query's positives are its original(s). PCA-whitening is learned on a separate image set.

:func:`procedural_copies` builds that from any :class:`ImageSource` with no download: disjoint,
seeded draws of originals, distractors and whitening images, and for each original
``copies_per_original`` *strong* copies, each a random crop (30-70% of the area, any position),
then at least two of: rotation (10-35 degrees either way), colour jitter (brightness, contrast,
saturation 0.5-1.5x), Gaussian blur, overlaid text, overlaid opaque patches; resized back to the
original size and JPEG re-compressed at quality 5-25. Copy ``i`` depends only on ``(seed, i)``.

:func:`copydays` reads the real layout: ``DIR/original/*.jpg`` and ``DIR/strong/*.jpg``, a strong
copy's positives being the originals whose file names share its first 4 characters (as the
official evaluation matches them).
"""

from __future__ import annotations

import hashlib
import io
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinoeval.data._base import ArraySource, ImageSource
from dinoeval.data.builtin import IMAGE_EXTENSIONS
from dinoeval.data.files import FileListSource
from dinoeval.errors import DinoevalError

EXTRA_TRANSFORMS = ("rotate", "jitter", "blur", "text", "patch")


@dataclass
class CopyBenchmark:
    """Queries, database and ground truth of a copy-detection run.

    Attributes:
        name: shown in the results table's ``dataset`` column.
        queries: the copies.
        database: originals followed by distractors.
        positives: per query, ``int64`` database indices of its original(s).
        whitening: images to learn the whitening on (``None``: no whitening).
        n_originals: database rows that are originals (the rest are distractors).
    """

    name: str
    queries: ImageSource
    database: ImageSource
    positives: tuple[np.ndarray, ...]
    whitening: ImageSource | None
    n_originals: int


class ListSource(ImageSource):
    """Images held in memory as a list of ``(H, W, 3)`` or ``(H, W)`` uint8 arrays."""

    def __init__(self, images: list[np.ndarray], *, spec: str, name: str, split: str,
                 labels: np.ndarray | None = None, grayscale: bool = False) -> None:
        self.images = images
        self.labels = (np.full(len(images), -1, np.int64) if labels is None
                       else np.asarray(labels, np.int64))
        self.spec, self.name, self.split, self.grayscale = spec, name, split, grayscale
        shapes = {im.shape[:2] for im in images}
        self.native_size = next(iter(shapes)) if len(shapes) == 1 else None

    def load(self, index: int) -> np.ndarray:
        img = self.images[index]
        return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for im in self.images:
            h.update(str(im.shape).encode())
            h.update(np.ascontiguousarray(im).data)
        return h.hexdigest()


class ConcatSource(ImageSource):
    """Several sources one after the other (decoded lazily), labels ``-1``."""

    def __init__(self, parts: list[ImageSource], *, spec: str, name: str, split: str) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0, *[len(p) for p in parts]])
        self.labels = np.full(int(self.offsets[-1]), -1, np.int64)
        self.spec, self.name, self.split = spec, name, split
        self.grayscale = all(p.grayscale for p in parts)
        sizes = {p.native_size for p in parts}
        self.native_size = next(iter(sizes)) if len(sizes) == 1 else None

    def load(self, index: int) -> np.ndarray:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part].load(index - int(self.offsets[part]))

    def fingerprint(self) -> str:
        return hashlib.blake2b("|".join(p.fingerprint() for p in self.parts).encode(),
                               digest_size=8).hexdigest()


def image_files(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise DinoevalError(f"image folder {d} does not exist or is not a directory")
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------------------------
# Strong transformations


def strong_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One strongly transformed copy of ``image (H, W, 3) uint8``, same size (module docstring)."""
    from PIL import Image

    h, w = image.shape[:2]
    im = Image.fromarray(np.ascontiguousarray(image))
    im = _random_crop(im, rng)
    extras = rng.choice(len(EXTRA_TRANSFORMS), size=int(rng.integers(2, 5)), replace=False)
    for t in sorted(extras.tolist()):
        im = _EXTRA[EXTRA_TRANSFORMS[t]](im, rng)
    im = im.resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(5, 26)))
    buf.seek(0)
    with Image.open(buf) as out:
        return np.asarray(out.convert("RGB"))


def _random_crop(im, rng):
    w, h = im.size
    area = rng.uniform(0.3, 0.7)
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(4 / 3)))
    cw = int(np.clip(round(np.sqrt(area * aspect) * w), 2, w))
    ch = int(np.clip(round(np.sqrt(area / aspect) * h), 2, h))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch))


def _rotate(im, rng):
    angle = float(rng.uniform(10, 35) * rng.choice([-1, 1]))
    return im.rotate(angle, resample=3, expand=False, fillcolor=tuple(int(v) for v in
                                                                     rng.integers(0, 256, 3)))


def _jitter(im, rng):
    from PIL import ImageEnhance

    for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enh(im).enhance(float(rng.uniform(0.5, 1.5)))
    return im


def _blur(im, rng):
    from PIL import ImageFilter

    return im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.02, 0.06)) * min(im.size)))


def _text(im, rng):
    from PIL import ImageDraw, ImageFont

    w, h = im.size
    size = max(6, int(h * rng.uniform(0.15, 0.3)))
    font = ImageFont.load_default(size=size)
    letters = np.array(list(string.ascii_letters + string.digits))
    text = "".join(rng.choice(letters, size=int(rng.integers(3, 9))))
    draw = ImageDraw.Draw(im)
    xy = (int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h - size))))
    draw.text(xy, text, font=font, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def _patch(im, rng):
    from PIL import ImageDraw

    w, h = im.size
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):
        pw, ph = max(1, int(w * rng.uniform(0.15, 0.35))), max(1, int(h * rng.uniform(0.15, 0.35)))
        x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        draw.rectangle((x, y, x + pw - 1, y + ph - 1),
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


_EXTRA = {"rotate": _rotate, "jitter": _jitter, "blur": _blur, "text": _text, "patch": _patch}


# ---------------------------------------------------------------------------------------------
# Benchmarks


def _take(source: ImageSource, idx: np.ndarray, spec: str, split: str) -> ImageSource:
    if isinstance(source, ArraySource):
        sub = source.subset(idx)
        sub.spec, sub.split = spec, split
        sub.labels = np.full(len(idx), -1, np.int64)
        return sub
    return ListSource([source.load(int(i)) for i in idx], spec=spec, name=source.name,
                      split=split, grayscale=source.grayscale)


def procedural_copies(source: ImageSource, *, n_originals: int = 100, n_distractors: int = 400,
                      n_whitening: int = 200, copies_per_original: int = 1, seed: int = 0
                      ) -> CopyBenchmark:
    """A seeded copy-detection benchmark made from ``source`` (see the module docstring).

    Args:
        n_originals: images that get copied (each copy's one positive).
        n_distractors: further database images nobody copied.
        n_whitening: images, disjoint from the database, to learn the whitening on (0: none).
        copies_per_original: strong copies (queries) per original.
        seed: the draw of images and every transformation.

    Raises:
        DinoevalError: counts below their minimum or more images asked than the source has.
    """
    for name, v, lo in (("originals", n_originals, 1), ("distractors", n_distractors, 0),
                        ("whitening images", n_whitening, 0), ("copies per original",
                                                               copies_per_original, 1)):
        if v < lo:
            raise DinoevalError(f"copy benchmark: {name} must be >= {lo}, got {v}")
    need = n_originals + n_distractors + n_whitening
    if need > len(source):
        raise DinoevalError(f"copy benchmark needs {need} images ({n_originals} originals + "
                            f"{n_distractors} distractors + {n_whitening} whitening) but "
                            f"{source.spec} has {len(source)}; ask for fewer")
    perm = np.random.default_rng([seed, 0]).permutation(len(source))[:need]
    orig = perm[:n_originals]
    db_idx = perm[: n_originals + n_distractors]
    wh_idx = perm[n_originals + n_distractors :]
    tag = (f"copies({source.spec};o={n_originals},d={n_distractors},w={n_whitening},"
           f"c={copies_per_original},seed={seed})")
    copies, positives = [], []
    for c in range(copies_per_original):
        for j, i in enumerate(orig):
            rng = np.random.default_rng([seed, 1, c, j])
            out = strong_copy(source.load(int(i)), rng)
            copies.append(out.mean(axis=2).round().astype(np.uint8) if source.grayscale else out)
            positives.append(np.array([j], np.int64))
    queries = ListSource(copies, spec=f"{tag}:queries", name=source.name, split="copies",
                         grayscale=source.grayscale)
    if queries.native_size is not None:  # same-size copies: the fast batched path
        queries = ArraySource(np.stack(copies), np.full(len(copies), -1, np.int64),
                              spec=f"{tag}:queries", name=source.name, split="copies", classes=())
    return CopyBenchmark(
        name=f"{source.name}-copies", queries=queries,
        database=_take(source, db_idx, f"{tag}:database", "database"),
        positives=tuple(positives),
        whitening=_take(source, wh_idx, f"{tag}:whitening", "whitening") if n_whitening else None,
        n_originals=n_originals)


def copydays(root: str | Path, *, distractors: ImageSource | None = None,
             whitening: ImageSource | None = None) -> CopyBenchmark:
    """The Copydays "strong" benchmark from ``root/original`` and ``root/strong`` (module
    docstring), with optional distractors appended to the database."""
    root = Path(root)
    if not (root / "original").is_dir() or not (root / "strong").is_dir():
        raise DinoevalError(f"{root} needs original/ and strong/ folders of .jpg images "
                            "(the Copydays layout)")
    originals = image_files(root / "original")
    strong = image_files(root / "strong")
    if not originals or not strong:
        raise DinoevalError(f"{root} needs original/ and strong/ folders of .jpg images "
                            "(the Copydays layout)")
    prefixes = np.array([p.name[:4] for p in originals])
    positives = tuple(np.flatnonzero(prefixes == q.name[:4]).astype(np.int64) for q in strong)
    orphans = [q.name for q, pos in zip(strong, positives, strict=True) if not len(pos)]
    if orphans:
        raise DinoevalError(f"{root}: strong copy {orphans[0]} has no original with the same "
                            f"4-character prefix ({len(orphans)} such copies)")
    db: ImageSource = FileListSource(originals, spec=f"copydays:original@{root}", name="copydays",
                                     split="database")
    if distractors is not None:
        db = ConcatSource([db, distractors], spec=f"copydays:original+{distractors.spec}@{root}",
                          name="copydays", split="database")
    return CopyBenchmark(name="copydays-strong",
                         queries=FileListSource(strong, spec=f"copydays:strong@{root}",
                                                name="copydays", split="strong"),
                         database=db, positives=positives, whitening=whitening,
                         n_originals=len(originals))
