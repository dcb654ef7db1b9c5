"""Sources by name: ``NAME[:ARG][@DIR][[:N]]`` -> :class:`ImageSource`.

Built in: ``fashion-mnist:train|test[@DIR]``, ``digits[:train|test|all]``, ``imagefolder:PATH``.
A trailing ``[:N]`` takes a fixed, seeded subset of N images (order preserved); N larger than
the split is refused (the error states the split's size), never silently truncated.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from dinoeval.data._base import ArraySource, ImageSource
from dinoeval.data.builtin import ImageFolderSource, digits, fashion_mnist
from dinoeval.errors import DinoevalError

# factory(arg, directory) -> ImageSource
SourceFactory = Callable[[str | None, str | None], ImageSource]
_REGISTRY: dict[str, tuple[SourceFactory, str]] = {}


def register_source(name: str, factory: SourceFactory, help: str) -> None:
    """Register a source factory under ``name`` (overwrites an earlier one)."""
    _REGISTRY[name] = (factory, help)


def available_sources() -> dict[str, str]:
    """Registered source names and their one-line help."""
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}


_SUBSET = re.compile(r"^(?P<base>.*)\[:(?P<n>\d+)\]$")
_BARE_SUBSET = re.compile(r"^(?P<base>[\w-]+(?::[\w-]+)?)\[(?P<n>\d+)\]$")  # digits:train[50]


def get_source(spec: str) -> ImageSource:
    """Build the source named by ``spec`` (see the module docstring)."""
    spec = spec.strip()
    bare = _BARE_SUBSET.match(spec)
    if bare:
        raise DinoevalError(f"{spec!r}: a subset is written [:N] with a colon, e.g. "
                            f"{bare.group('base')}[:{bare.group('n')}] for {bare.group('n')} "
                            "seeded images in their original order")
    m = _SUBSET.match(spec)
    limit = int(m.group("n")) if m else None
    base = m.group("base") if m else spec
    name, _, rest = base.partition(":")
    if name not in _REGISTRY:
        raise DinoevalError(f"unknown data source {name!r} in {spec!r}; known: "
                            f"{', '.join(_REGISTRY)} (or imagefolder:PATH)")
    arg, directory = rest or None, None
    if arg and "@" in arg and name != "imagefolder":
        arg, directory = arg.split("@", 1)
    source = _REGISTRY[name][0](arg or None, directory)
    if limit is not None:
        source = take_subset(source, limit, spec=spec)
    return source


def take_subset(source: ImageSource, n: int, *, spec: str, seed: int = 0) -> ImageSource:
    """A seeded subset of ``n`` images in their original order (all of them when ``n`` is the
    split's size). Subsets of one source with the same seed are nested: ``[:500]`` lies inside
    ``[:2000]``.

    Raises:
        DinoevalError: ``n <= 0``, or ``n`` larger than the source (the message gives its size).
    """
    if n <= 0:
        raise DinoevalError(f"{spec}: subset size must be positive")
    if n > len(source):
        raise DinoevalError(f"{spec}: asks for {n:,} images but {source.spec} has only "
                            f"{len(source):,}; use [:{len(source)}] or fewer, or drop [:N]")
    if n == len(source):
        return source
    idx = np.sort(np.random.default_rng(seed).permutation(len(source))[:n])
    if isinstance(source, ArraySource):
        sub = source.subset(idx)
        sub.spec = spec
        return sub
    return _IndexedSource(source, idx, spec)


class _IndexedSource(ImageSource):
    def __init__(self, base: ImageSource, indices: np.ndarray, spec: str) -> None:
        self.base, self.indices, self.spec = base, indices, spec
        self.name, self.split, self.classes = base.name, base.split, base.classes
        self.labels = base.labels[indices]
        self.grayscale = base.grayscale

    @property
    def native_size(self) -> tuple[int, int] | None:  # type: ignore[override]
        return self.base.native_size

    def origin(self) -> tuple[str, np.ndarray]:
        fp, idx = self.base.origin()
        return fp, idx[self.indices]

    def load(self, index: int) -> np.ndarray:
        return self.base.load(int(self.indices[index]))

    def mask(self, index: int) -> np.ndarray | None:
        return self.base.mask(int(self.indices[index]))

    @property
    def has_masks(self) -> bool:
        return self.base.has_masks

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.blake2b(self.base.fingerprint().encode() + self.indices.tobytes(),
                               digest_size=8).hexdigest()


def _fashion(arg: str | None, directory: str | None) -> ImageSource:
    return fashion_mnist(arg or "train", directory)


def _digits(arg: str | None, directory: str | None) -> ImageSource:
    return digits(arg or "all")


def _imagefolder(arg: str | None, directory: str | None) -> ImageSource:
    if not arg:
        raise DinoevalError("imagefolder needs a path: imagefolder:/path/to/root")
    return ImageFolderSource(arg)


register_source("fashion-mnist", _fashion, "Fashion-MNIST train|test (Debian dataset-fashion-mnist)")
register_source("digits", _digits, "scikit-learn's 8x8 digits, all|train|test")
register_source("imagefolder", _imagefolder, "imagefolder:PATH: one sub-folder per class, or a "
                "flat folder of unlabelled images")
