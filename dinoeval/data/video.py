"""Video sources with per-frame instance masks: a procedural one and the DAVIS folder layout.

Specs (:func:`get_video_source`):

* ``moving-shapes[@videos=,frames=,height=,width=,objects=,seed=]``: seeded procedural videos
  (defaults 4 videos of 24 frames, 64x96 pixels, 3 objects, seed 0). Each object is a filled shape
  of :mod:`dinoeval.data.shapes` with its own two-colour stripe texture (moving with the object),
  travelling on a smooth path while it scales and turns; objects have a fixed depth order, so
  they occlude each other, over a textured background that pans slowly. The masks are exact:
  the label of a pixel is the front-most object covering it (``1..K``, ``0`` background).
* ``davis:ROOT[@set=val,res=480p,year=2017]``: the DAVIS layout,
  ``ROOT/JPEGImages/<res>/<video>/*.jpg``, ``ROOT/Annotations/<res>/<video>/*.png`` (palette PNGs,
  object ``k`` drawn with palette index ``k``, 255 = void) and the list of videos in
  ``ROOT/ImageSets/<year>/<set>.txt``. Only the first frame's annotation is needed to run;
  the others, when present, are used for scoring.

:func:`write_palette_png` writes predicted label maps as palette PNGs (the DAVIS results layout
``OUT/<video>/<frame>.png`` that the official ``davis2017-evaluation`` reads).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dinoeval.data._spec import parse_spec_options
from dinoeval.data.builtin import read_rgb
from dinoeval.data.shapes import SHAPE_CLASSES, shape_mask
from dinoeval.errors import DinoevalError


def davis_palette() -> np.ndarray:
    """The ``(256, 3)`` uint8 PASCAL VOC / DAVIS colour map (index 1 dark red, 2 green, ...)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


@dataclass
class Video:
    """One video: frames in order, ground-truth labels where known.

    Attributes:
        name: the video's name (its folder name in the DAVIS layout).
        frame_names: ``T`` frame stems (``00000`` ...), used for the written PNGs.
        load_frame: ``i -> (H, W, 3) uint8``.
        load_mask: ``i -> (H, W) uint8`` labels, or ``None`` when frame ``i`` has no annotation.
        palette: ``(256, 3)`` uint8 colours for the written masks.
    """

    name: str
    frame_names: list[str]
    load_frame: Callable[[int], np.ndarray]
    load_mask: Callable[[int], np.ndarray | None]
    palette: np.ndarray = field(default_factory=davis_palette)

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def num_objects(self) -> int:
        """Objects to track: the largest label of the first annotation (255 = void ignored)."""
        first = self.first_mask()
        return int(np.where(first == 255, 0, first).max())

    def first_mask(self) -> np.ndarray:
        m = self.load_mask(0)
        if m is None:
            raise DinoevalError(f"video {self.name}: the first frame has no annotation; "
                                "semi-supervised propagation needs it")
        return m


@dataclass
class VideoDataset:
    """Videos named by one spec. ``native_size``: frames are evaluated at their own size by
    default (procedural videos); otherwise DINO's short side 480 applies."""

    spec: str
    name: str
    videos: list[Video]
    native_size: bool = False


# ---------------------------------------------------------------------------------------------
# Procedural moving shapes


@dataclass(frozen=True, kw_only=True)
class MovingShapesConfig:
    """Options of ``moving-shapes`` (the ``@key=value`` part of its spec)."""

    videos: int = 4
    frames: int = 24
    height: int = 64
    width: int = 96
    objects: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [("videos", self.videos, 1, 1000), ("frames", self.frames, 3, 1000),
                  ("height", self.height, 16, 1024), ("width", self.width, 16, 1024),
                  ("objects", self.objects, 1, 8)]
        for key, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise DinoevalError(f"moving-shapes: {key} must be between {lo} and {hi}, "
                                    f"got {value}")

    def spec(self) -> str:
        return (f"moving-shapes@videos={self.videos},frames={self.frames},height={self.height},"
                f"width={self.width},objects={self.objects},seed={self.seed}")


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """``(h, w, 3)`` float32 in [0, 1]: a ``cells x cells`` random colour grid, bicubic-upsampled."""
    small = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def render_moving_shapes(cfg: MovingShapesConfig, video: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, H, W, 3) uint8`` and labels ``(T, H, W) uint8`` of video ``video``.

    Deterministic in ``(cfg.seed, video)`` and independent of ``cfg.videos``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7919, video]))
    t_n, h, w, k = cfg.frames, cfg.height, cfg.width, cfg.objects
    pad = max(h, w) // 4
    bg = 0.2 + 0.6 * _smooth_field(rng, h + 2 * pad, w + 2 * pad, 6)
    bg += 0.12 * (_smooth_field(rng, h + 2 * pad, w + 2 * pad, 24) - 0.5)
    pan = rng.uniform(-1, 1, 2) * pad / max(t_n - 1, 1)
    obj = _object_params(rng, k, h, w, t_n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    frames = np.empty((t_n, h, w, 3), dtype=np.uint8)
    labels = np.zeros((t_n, h, w), dtype=np.uint8)
    for t in range(t_n):
        oy, ox = (np.round(pad + pan * t)).astype(int)
        img = bg[oy:oy + h, ox:ox + w].copy()
        lab = np.zeros((h, w), dtype=np.uint8)
        for i in range(k):  # back to front: object i + 1 covers the ones before it
            inside, tex = _draw_object(obj, i, t, xx, yy)
            img[inside] = tex[inside]
            lab[inside] = i + 1
        noise = 0.02 * rng.standard_normal(img.shape).astype(np.float32)
        frames[t] = (np.clip(img + noise, 0, 1) * 255).round().astype(np.uint8)
        labels[t] = lab
    return frames, labels


def _object_params(rng: np.random.Generator, k: int, h: int, w: int, t_n: int
                   ) -> dict[str, np.ndarray]:
    side = min(h, w)
    return {
        "shape": rng.choice(len(SHAPE_CLASSES), size=k, replace=k > len(SHAPE_CLASSES)),
        "radius": side * rng.uniform(0.16, 0.26, k),
        "scale_amp": rng.uniform(0.1, 0.3, k),
        "start": np.stack([rng.uniform(0.2, 0.8, k) * w, rng.uniform(0.25, 0.75, k) * h], 1),
        "velocity": rng.uniform(-1, 1, (k, 2)) * side * 0.6 / max(t_n - 1, 1),
        "wobble": rng.uniform(0.03, 0.08, (k, 2)) * side,
        "theta0": rng.uniform(0, 2 * math.pi, k),
        "spin": rng.uniform(-0.08, 0.08, k),
        "colors": rng.random((k, 2, 3)).astype(np.float32),
        "stripe": rng.uniform(2.0, 5.0, k),
        "phase": rng.uniform(0, 2 * math.pi, (k, 2)),
    }


def _draw_object(p: dict[str, np.ndarray], i: int, t: int, xx: np.ndarray, yy: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    w_ = 2 * math.pi * t / 24.0
    cx = p["start"][i, 0] + p["velocity"][i, 0] * t + p["wobble"][i, 0] * math.sin(
        w_ + p["phase"][i, 0])
    cy = p["start"][i, 1] + p["velocity"][i, 1] * t + p["wobble"][i, 1] * math.sin(
        w_ + p["phase"][i, 1])
    radius = p["radius"][i] * (1 + p["scale_amp"][i] * math.sin(w_ * 0.7 + p["phase"][i, 1]))
    theta = p["theta0"][i] + p["spin"][i] * t
    c, s = math.cos(theta), math.sin(theta)
    u = (c * (xx - cx) + s * (yy - cy)) / radius
    v = (-s * (xx - cx) + c * (yy - cy)) / radius
    inside = shape_mask(int(p["shape"][i]), u[None], v[None])[0]
    stripes = 0.5 + 0.5 * np.sin(p["stripe"][i] * math.pi * u)[..., None]
    tex = stripes * p["colors"][i, 0] + (1 - stripes) * p["colors"][i, 1]
    return inside, tex


@functools.lru_cache(maxsize=8)
def _rendered(cfg: MovingShapesConfig, video: int) -> tuple[np.ndarray, np.ndarray]:
    return render_moving_shapes(cfg, video)


def moving_shapes(cfg: MovingShapesConfig) -> VideoDataset:
    """The procedural dataset for ``cfg`` (rendered lazily, one video at a time)."""
    videos = []
    for v in range(cfg.videos):
        names = [f"{t:05d}" for t in range(cfg.frames)]
        videos.append(Video(
            name=f"shapes{v:03d}", frame_names=names,
            load_frame=functools.partial(lambda v_, t: _rendered(cfg, v_)[0][t], v),
            load_mask=functools.partial(lambda v_, t: _rendered(cfg, v_)[1][t], v)))
    return VideoDataset(spec=cfg.spec(), name="moving-shapes", videos=videos, native_size=True)


# ---------------------------------------------------------------------------------------------
# DAVIS layout


def read_label_png(path: str | Path) -> np.ndarray:
    """A palette (mode ``P``) or grey PNG -> ``(H, W) uint8`` label indices.

    Raises:
        DinoevalError: the file is not a single-channel label image.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DinoevalError(f"{path}: annotation must be a palette or greyscale PNG of "
                                    f"object indices, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as e:
        raise DinoevalError(f"cannot read annotation {path}: {e}") from None


def davis(root: str | Path, *, subset: str = "val", res: str = "480p",
          year: str = "2017") -> VideoDataset:
    """The DAVIS videos listed in ``ROOT/ImageSets/<year>/<subset>.txt``.

    Raises:
        DinoevalError: a missing folder, list, video, first annotation, or a frame/annotation
            size mismatch on the first frame (all checked here, before any work).
    """
    root = Path(root)
    listing = root / "ImageSets" / year / f"{subset}.txt"
    if not listing.is_file():
        raise DinoevalError(f"davis: no video list {listing}; pass davis:ROOT with ROOT holding "
                            "JPEGImages/, Annotations/ and ImageSets/ (or @set=NAME,year=YYYY)")
    names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    if not names:
        raise DinoevalError(f"davis: {listing} lists no videos")
    videos = [_davis_video(root, res, n) for n in names]
    return VideoDataset(spec=f"davis:{root}@set={subset},res={res},year={year}", name="davis",
                        videos=videos)


def _davis_video(root: Path, res: str, name: str) -> Video:
    img_dir, ann_dir = root / "JPEGImages" / res / name, root / "Annotations" / res / name
    frames = sorted(img_dir.glob("*.jpg"))
    if not frames:
        raise DinoevalError(f"davis: video {name} has no frames in {img_dir}")
    stems = [f.stem for f in frames]
    if not (ann_dir / f"{stems[0]}.png").is_file():
        raise DinoevalError(f"davis: video {name} has no first-frame annotation "
                            f"{ann_dir / (stems[0] + '.png')}")
    first = read_label_png(ann_dir / f"{stems[0]}.png")
    with Image.open(frames[0]) as im:
        size = (im.height, im.width)
    if first.shape != size:
        raise DinoevalError(f"davis: {name}: annotation {first.shape[1]}x{first.shape[0]} and "
                            f"frame {size[1]}x{size[0]} differ in size")
    with Image.open(ann_dir / f"{stems[0]}.png") as im:
        pal = im.getpalette()
    palette = (np.array(pal, dtype=np.uint8).reshape(-1, 3)[:256] if pal else davis_palette())
    if len(palette) < 256:
        palette = np.concatenate([palette, davis_palette()[len(palette):]])

    def load_mask(i: int) -> np.ndarray | None:
        p = ann_dir / f"{stems[i]}.png"
        return read_label_png(p) if p.is_file() else None

    return Video(name=name, frame_names=stems, load_frame=lambda i: read_rgb(frames[i]),
                 load_mask=load_mask, palette=palette)


def write_palette_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> Path:
    """Write ``(H, W)`` uint8 labels as a palette PNG (index = object, as DAVIS expects)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    im.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    im.save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------
# Specs


def get_video_source(spec: str) -> VideoDataset:
    """Build the video dataset named by ``spec`` (see the module docstring).

    Raises:
        DinoevalError: an unknown name, a bad option, or a missing/broken DAVIS folder.
    """
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if "@" in name:
        name, _, opts = name.partition("@")
        rest = ""
    else:
        rest, _, opts = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if name == "moving-shapes":
        if rest:
            raise DinoevalError(f"moving-shapes takes no path, got {rest!r}; options go after @")
        kw = parse_spec_options(name, opts, {k: int for k in (
            "videos", "frames", "height", "width", "objects", "seed")})
        return moving_shapes(MovingShapesConfig(**kw))  # type: ignore[arg-type]
    if name == "davis":
        if not rest:
            raise DinoevalError("davis needs a folder: davis:ROOT[@set=val,res=480p,year=2017]")
        kw = parse_spec_options(name, opts, {"set": str, "res": str, "year": str})
        return davis(rest, subset=str(kw.get("set", "val")), res=str(kw.get("res", "480p")),
                     year=str(kw.get("year", "2017")))
    raise DinoevalError(f"unknown video source {name!r} in {spec!r}; use moving-shapes[@...] or "
                        "davis:ROOT")
