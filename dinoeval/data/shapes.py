"""``shapes``: a procedural dataset with ground-truth object masks, made for the demo.

Each image holds one filled object from one of up to 8 shape classes (circle, triangle, square,
star, cross, ring, crescent, L) with a random colour, size, aspect, position and rotation, over a
cluttered, textured background (a smooth muted colour field, faint isotropic colour noise and
small translucent blobs), plus a little pixel noise. The class depends on the shape only: colour,
size, pose and background are drawn independently of it, so raw-pixel k-NN does poorly while a
feature that encodes shape separates the classes. The object's mask is the exact set of pixels it covers.

Spec: ``shapes[:train|test][@key=value,...]`` with keys ``n`` (images; default 5000 train, 1000
test), ``size`` (side in pixels, default 64), ``classes`` (2..8, default 6), ``seed`` (default 0)
and ``clutter`` (0..1, background strength, default 1). Images are generated in blocks of
:data:`BLOCK` from ``SeedSequence([seed, split, block])``: the result is deterministic, image ``i``
does not depend on ``n``, and the train and test splits use disjoint random streams.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dinoeval.data._base import ArraySource
from dinoeval.data._spec import parse_spec_options
from dinoeval.errors import DinoevalError

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "triangle", "square", "star", "cross", "ring", "crescent", "L-shape",
)
SPLITS = {"train": 0, "test": 1}
DEFAULT_N = {"train": 5000, "test": 1000}
BLOCK = 256  # images per random stream; fixed so that image i never depends on n
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_CONTRAST = 0.3  # luminance gap between the object and the background under it
_BLOBS = 10  # clutter blobs per image at clutter=1


@dataclass(frozen=True, kw_only=True)
class ShapesConfig:
    """Options of the ``shapes`` source (the ``@key=value`` part of its spec)."""

    split: str = "train"
    n: int | None = None  # None: DEFAULT_N[split]
    size: int = 64
    classes: int = 6
    seed: int = 0
    clutter: float = 1.0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise DinoevalError(f"shapes split must be 'train' or 'test', got {self.split!r}")
        if self.n is not None and self.n <= 0:
            raise DinoevalError(f"shapes: n must be positive, got {self.n}")
        if not 16 <= self.size <= 256:
            raise DinoevalError(f"shapes: size must be between 16 and 256 pixels, got {self.size}")
        if not 2 <= self.classes <= len(SHAPE_CLASSES):
            raise DinoevalError(f"shapes: classes must be between 2 and {len(SHAPE_CLASSES)}, "
                                f"got {self.classes}")
        if not 0.0 <= self.clutter <= 1.0:
            raise DinoevalError(f"shapes: clutter must be between 0 and 1, got {self.clutter}")

    @property
    def num_images(self) -> int:
        return self.n if self.n is not None else DEFAULT_N[self.split]

    def spec(self) -> str:
        opts = [f"n={self.num_images}", f"size={self.size}", f"classes={self.classes}",
                f"seed={self.seed}"]
        if self.clutter != 1.0:
            opts.append(f"clutter={self.clutter:g}")
        return f"shapes:{self.split}@{','.join(opts)}"


# ---------------------------------------------------------------------------------------------
# Shape membership in the object's own frame: (u, v) scaled so that the shape fits the unit disc.


def _star_polygon(u: np.ndarray, v: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Inside test for a polygon with vertices at equally spaced angles ``2*pi*k/K``, radius
    ``radii[k]`` (star-shaped about the origin, vertices counter-clockwise)."""
    k = len(radii)
    step = 2 * np.pi / k
    phi = np.mod(np.arctan2(v, u), 2 * np.pi)
    s = np.minimum((phi / step).astype(np.int64), k - 1)
    ang = np.arange(k + 1) * step
    rr = np.append(radii, radii[0])
    x0, y0 = rr[s] * np.cos(ang[s]), rr[s] * np.sin(ang[s])
    x1, y1 = rr[s + 1] * np.cos(ang[s + 1]), rr[s + 1] * np.sin(ang[s + 1])
    return (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.8**2


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _star_polygon(u, v, np.ones(3))


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _star_polygon(u, v, np.tile([1.0, 0.42], 5))


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 0.9)) | ((av <= 0.28) & (au <= 0.9))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u * u + v * v
    return (r2 <= 0.9**2) & (r2 >= 0.5**2)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 0.9**2) & ((u - 0.45) ** 2 + v * v > 0.72**2)


def _l_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    stem = (u >= -0.7) & (u <= -0.2) & (v >= -0.8) & (v <= 0.8)
    foot = (u >= -0.7) & (u <= 0.7) & (v >= 0.3) & (v <= 0.8)
    return stem | foot


SHAPE_TESTS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _circle, _triangle, _square, _star, _cross, _ring, _crescent, _l_shape,
)


def shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points ``(u, v)`` (any equal shapes, object frame, unit disc) lie in shape
    ``label`` (an index into :data:`SHAPE_CLASSES`). Returns a bool array of the same shape."""
    return SHAPE_TESTS[label](np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class ShapesArrays:
    """A generated split: ``images (N, S, S, 3) uint8``, ``masks (N, S, S) bool``,
    ``labels (N,) int64``."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray


def generate_shapes(cfg: ShapesConfig, *, draw_objects: bool = True) -> ShapesArrays:
    """Render ``cfg.num_images`` images with their masks and labels (deterministic in ``cfg``).

    ``draw_objects=False`` renders the same backgrounds without the objects (used by the tests
    to check that the masks cover exactly the pixels the objects changed).
    """
    n, size = cfg.num_images, cfg.size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    labels = (np.arange(n) % cfg.classes).astype(np.int64)  # exact balance, n-independent
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        rng = np.random.default_rng(np.random.SeedSequence(
            [cfg.seed, SPLITS[cfg.split], start // BLOCK]))
        img, msk = _render_block(rng, labels[start:stop], size, cfg.clutter, draw_objects)
        images[start:stop], masks[start:stop] = img, msk
    return ShapesArrays(images, masks, labels)


def _render_block(rng: np.random.Generator, labels: np.ndarray, size: int, clutter: float,
                  draw_objects: bool) -> tuple[np.ndarray, np.ndarray]:
    m = len(labels)
    # Draw every random number up front, in a fixed order, so draw_objects changes nothing else.
    # A full block is always drawn so that a short last block matches the same images of a
    # longer split.
    pose = rng.random((BLOCK, 6)).astype(np.float32)[:m]
    obj_rgb = rng.random((BLOCK, 3)).astype(np.float32)[:m]
    background = _background(rng, m, size, clutter)
    noise = 0.025 * rng.standard_normal((BLOCK, size, size, 3), dtype=np.float32)[:m]

    radius = size * (0.24 + 0.12 * pose[:, 0])  # 24-36% of the side
    aspect = 0.85 + 0.3 * pose[:, 1]
    theta = 2 * np.pi * pose[:, 2]
    reach = radius * np.maximum(aspect, 1 / aspect)
    cx = reach + 1 + (size - 2 * reach - 2) * pose[:, 3]
    cy = reach + 1 + (size - 2 * reach - 2) * pose[:, 4]
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (cos * dx + sin * dy) / (radius * aspect)[:, None, None]
    v = (-sin * dx + cos * dy) / (radius / aspect)[:, None, None]
    mask = np.zeros((m, size, size), dtype=bool)
    for c in np.unique(labels):
        sel = labels == c
        mask[sel] = shape_mask(int(c), u[sel], v[sel])

    img = background
    if draw_objects:
        colour = _contrasting(obj_rgb, background, mask)
        shade = 1 + 0.12 * np.clip(u, -1, 1) * (2 * pose[:, 5, None, None] - 1)
        fill = colour[:, None, None, :] * shade[..., None]
        img = np.where(mask[..., None], fill, background)
    img = np.clip(img + noise, 0.0, 1.0)
    return (img * 255 + 0.5).astype(np.uint8), mask


def _contrasting(rgb: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Object colours ``(m, 3)`` moved in luminance (hue kept) to differ from the mean
    background luminance under the object by at least :data:`_MIN_CONTRAST`."""
    lum_bg = background @ _LUMA
    area = np.maximum(mask.sum(axis=(1, 2)), 1)
    under = (lum_bg * mask).sum(axis=(1, 2)) / area
    lum = np.clip(rgb @ _LUMA, 1e-3, 1 - 1e-3)
    target = np.where(under >= 0.5, under - _MIN_CONTRAST, under + _MIN_CONTRAST)
    darker = rgb * (target / lum)[:, None]
    lighter = 1 - (1 - rgb) * ((1 - target) / (1 - lum))[:, None]
    moved = np.where((target < lum)[:, None], darker, lighter)
    ok = np.abs(lum - under) >= _MIN_CONTRAST
    return np.where(ok[:, None], rgb, np.clip(moved, 0, 1)).astype(np.float32)


def _background(rng: np.random.Generator, m: int, size: int, clutter: float) -> np.ndarray:
    """Cluttered textures ``(m, size, size, 3)`` in [0, 1]: a smooth, muted colour field, faint
    isotropic colour noise and a scatter of small translucent blobs.

    Every texture element is isotropic and drawn from the same distribution in every image, so
    the background carries no class information, no orientation to latch on to, and (being
    faint) no strong per-image fingerprint: what two crops of one image share is mostly the
    object.
    """
    coarse = rng.random((BLOCK, 4, 4, 3)).astype(np.float32)[:m]
    fine = rng.standard_normal((BLOCK, 16, 16, 3), dtype=np.float32)[:m]
    blobs = rng.random((BLOCK, _BLOBS, 7)).astype(np.float32)[:m]

    up4, up16 = _interp_matrix(4, size), _interp_matrix(16, size)
    field = np.einsum("ya,mabc,xb->myxc", up4, coarse, up4, optimize=True)
    grey = field.mean(axis=-1, keepdims=True)
    bg = 0.15 + 0.7 * (0.4 * field + 0.6 * grey)  # muted: the object is the colourful thing
    bg = bg + 0.05 * clutter * np.einsum("ya,mabc,xb->myxc", up16, fine, up16, optimize=True)
    grid = np.arange(size, dtype=np.float32) + 0.5
    px, py = grid[None, None, :], grid[None, :, None]
    for k in range(round(_BLOBS * clutter)):
        x0, y0, r = (blobs[:, k, j, None, None] for j in range(3))
        inside = (px - x0 * size) ** 2 + (py - y0 * size) ** 2 <= (size * (0.03 + 0.05 * r)) ** 2
        tint = blobs[:, k, 3:6][:, None, None, :]
        alpha = (0.25 + 0.25 * blobs[:, k, 6])[:, None, None, None]
        bg = np.where(inside[..., None], (1 - alpha) * bg + alpha * tint, bg)
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` bilinear up-sampling weights (align-corners off)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = (pos - lo).astype(np.float32)
    mat = np.zeros((dst, src), dtype=np.float32)
    mat[np.arange(dst), lo] += 1 - w
    mat[np.arange(dst), hi] += w
    return mat


# ---------------------------------------------------------------------------------------------
# The source


def parse_options(arg: str | None, options: str | None) -> ShapesConfig:
    """``arg`` = ``train``/``test`` (default train), ``options`` = ``key=value,...``."""
    types: dict[str, type] = {"n": int, "size": int, "classes": int, "seed": int,
                              "clutter": float}
    kw = parse_spec_options("shapes", options, types, example="shapes:train@n=2000,size=64")
    kw["split"] = arg or "train"
    return ShapesConfig(**kw)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def _cached(cfg: ShapesConfig) -> ShapesArrays:
    # Sources built from one spec share these arrays: callers must not write into them.
    return generate_shapes(cfg)


def shapes(cfg: ShapesConfig | None = None, **kwargs: object) -> ArraySource:
    """The ``shapes`` source for ``cfg`` (or ``ShapesConfig(**kwargs)``), with masks."""
    cfg = cfg or ShapesConfig(**kwargs)  # type: ignore[arg-type]
    arrays = _cached(cfg)
    src = ArraySource(arrays.images, arrays.labels, spec=cfg.spec(), name="shapes",
                      split=cfg.split, classes=SHAPE_CLASSES[: cfg.classes], masks=arrays.masks)
    # image i does not depend on n: sources that differ only in n overlap (same origin)
    stream = f"shapes:{cfg.split}@size={cfg.size},classes={cfg.classes},seed={cfg.seed},"
    src._origin = (f"{stream}clutter={cfg.clutter:g}", np.arange(len(src), dtype=np.int64))
    return src


def _factory(arg: str | None, options: str | None) -> ArraySource:
    return shapes(parse_options(arg, options))


def _register() -> None:
    from dinoeval.data.registry import register_source

    register_source("shapes", _factory,
                    "procedural shapes with masks: shapes:train|test[@n=,size=,classes=,seed=,"
                    "clutter=]")


_register()
