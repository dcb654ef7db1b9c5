"""The attention runner: CLS attention of backbones over images, scored where there is ground truth.

The IO layer of :mod:`dinoeval.eval.attention`: it loads and prepares images (resize the shorter
side, then centre-crop — or pad — to a multiple of the patch size), normalises them with the
backbone's mean/std, batches images of equal prepared size, and scores the masks against
ground-truth masks:

* sources with ``has_masks`` (the procedural ``shapes`` source) give ``source.mask(i)``;
* Fashion-MNIST has no masks, but its background is exactly 0, so its foreground is the set of
  non-zero pixels (``image > 0``);
* other sources and ``--images`` files have no ground truth: their maps are drawn, not scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dinoeval.checks import check_device, one_of, option
from dinoeval.data import ImageSource
from dinoeval.data.files import FileListSource
from dinoeval.errors import DinoevalError
from dinoeval.eval.attention import (
    DEFAULT_MASS,
    AttentionMasks,
    JaccardResult,
    attention_masks,
    prepare_image,
    score_masks,
)
from dinoeval.models import Backbone
from dinoeval.pipeline.setup import ProgressFactory
from dinoeval.results import Context, to_frame

log = logging.getLogger(__name__)

MaskProvider = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Options of ``dinoeval attention``.

    Attributes:
        block: which block's attention (negative counts from the end; -1 is the last).
        mass: attention mass the masks keep (DINO: 0.6).
        resize: shorter side to resize images to before fitting to the patch grid;
            ``None``: the backbone's training resolution (its shorter side); ``0``: keep native.
        fit: ``"crop"`` (centre crop to a multiple of the patch size) or ``"pad"`` (zeros at the
            bottom/right up to the next multiple).
        batch_size: images per forward pass.
        device: torch device.
    """

    block: int = option(-1, help="Block index; -1 is the last.")
    mass: float = option(DEFAULT_MASS, help="Attention mass the masks keep (DINO: 0.6).")
    resize: int | None = option(
        None, help="Resize the shorter side to this first (default: the model's input size; "
        "0: native size).")
    fit: str = option(
        "crop", help="crop (centre crop) or pad (zeros) to a multiple of the patch size.")
    batch_size: int = option(16, help="Images per forward pass.")
    device: str = option("cpu", help="cpu, cuda, cuda:1, ...")

    def __post_init__(self) -> None:
        one_of("--fit", self.fit, ("crop", "pad"))
        if not 0 < self.mass <= 1:
            raise DinoevalError(f"--mass must be in (0, 1], got {self.mass}")
        if self.batch_size <= 0:
            raise DinoevalError(f"--batch-size must be positive, got {self.batch_size}")
        if self.resize is not None and self.resize < 0:
            raise DinoevalError(f"--resize must be >= 0, got {self.resize}")
        check_device(self.device)


@dataclass
class AttentionRun:
    """One backbone's attention over the chosen images.

    Attributes:
        spec, label, arch, content_hash: which backbone (``label`` is short, for captions).
        patch_size, num_heads, block: the model facts the maps depend on.
        indices: ``(N,)`` source indices of the images.
        images: prepared ``(H_i, W_i, 3)`` uint8 images, as the model saw them.
        targets: ground-truth ``(H_i, W_i)`` bool masks, prepared the same way, or ``None``.
        masks: the attention and its masks per image.
        jaccard: scores when every image has a target, else ``None``.
        prep: one line saying how images were resized and cropped/padded.
        seconds: time spent in the model (extraction only).
    """

    spec: str
    label: str
    arch: str
    content_hash: str
    patch_size: int
    num_heads: int
    block: int
    mass: float
    indices: np.ndarray
    images: list[np.ndarray]
    targets: list[np.ndarray | None]
    masks: list[AttentionMasks]
    jaccard: JaccardResult | None
    prep: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    network: str = ""
    resolution: str = ""


def mask_provider(source: ImageSource) -> MaskProvider | None:
    """Ground truth for ``source``: its own masks, Fashion-MNIST's non-zero pixels, or None."""
    if source.has_masks:
        def from_source(index: int, _image: np.ndarray) -> np.ndarray:
            m = source.mask(index)
            if m is None:
                raise DinoevalError(f"{source.spec}: image {index} has no mask")
            return np.asarray(m, dtype=bool)
        return from_source
    if source.name == "fashion-mnist":
        return foreground_mask
    return None


def foreground_mask(_index: int, image: np.ndarray) -> np.ndarray:
    """Foreground of an image on an exactly-black background (Fashion-MNIST): any channel > 0."""
    return (image > 0).any(axis=-1) if image.ndim == 3 else image > 0


def short_label(spec: str) -> str:
    """A caption-sized name: the last two path parts of a file, else the spec itself."""
    if ":" in spec and not Path(spec).exists():
        return spec
    parts = Path(spec).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else spec


def _resize(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resize so the shorter side is ``shorter``: bicubic for images, nearest for bool masks."""
    from PIL import Image

    h, w = image.shape[:2]
    if min(h, w) == shorter:
        return image
    scale = shorter / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if image.dtype == bool:
        im = Image.fromarray(image.astype(np.uint8) * 255)
        return np.asarray(im.resize(size, Image.NEAREST)) > 127
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def resolve_resize(backbone: Backbone, config: AttentionConfig) -> int | None:
    """Shorter side images are resized to (``None``: native size)."""
    if config.resize == 0:
        return None
    if config.resize is not None:
        if config.resize < 0:
            raise DinoevalError(f"--resize must be >= 0, got {config.resize}")
        return config.resize
    return min(backbone.img_size) if backbone.img_size else None


def _normalise(images: list[np.ndarray], backbone: Backbone, in_chans: int) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if in_chans == 1:
        x = x.mean(dim=1, keepdim=True)
        mean, std = [sum(backbone.mean) / 3], [sum(backbone.std) / 3]
    else:
        mean, std = list(backbone.mean), list(backbone.std)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def prepare(source: ImageSource, indices: Sequence[int], *, patch_size: int, resize: int | None,
            fit: str, provider: MaskProvider | None
            ) -> tuple[list[np.ndarray], list[np.ndarray | None], str]:
    """Load, resize and crop/pad images (and their targets); also a line describing it."""
    images, targets, sizes = [], [], []
    for i in indices:
        raw = source.load(int(i))
        target = provider(int(i), raw) if provider is not None else None
        img = raw if resize is None else _resize(raw, resize)
        if target is not None and resize is not None:
            target = _resize(target, resize)
        try:
            img = prepare_image(img, patch_size, fit=fit)
        except ValueError as err:
            raise DinoevalError(f"{source.spec} image {i}: {err}; pass --resize N") from None
        if target is not None:
            target = prepare_image(target, patch_size, fit=fit)
        images.append(np.ascontiguousarray(img))
        targets.append(target)
        sizes.append((raw.shape[:2], img.shape[:2]))
    return images, targets, describe_prep(sizes, resize=resize, fit=fit, patch_size=patch_size)


def describe_prep(sizes: list[tuple[tuple[int, int], tuple[int, int]]], *, resize: int | None,
                  fit: str, patch_size: int) -> str:
    """One sentence: how the images were resized and cropped or padded to the patch grid."""
    pairs = sorted({(f"{a[0]}×{a[1]}", f"{b[0]}×{b[1]}") for a, b in sizes})
    shown = ", ".join(f"{a} → {b}" for a, b in pairs[:4]) + (" …" if len(pairs) > 4 else "")
    how = ("centre-cropped to" if fit == "crop" else "zero-padded (bottom/right) to")
    rs = f"shorter side resized to {resize} px, then " if resize else "native size, "
    return f"{rs}{how} a multiple of the {patch_size}px patch ({shown})"


def run_attention(backbone: Backbone, source: ImageSource, indices: Sequence[int],
                  config: AttentionConfig, *, score: bool = True,
                  progress: Callable[[int], None] | None = None) -> AttentionRun:
    """CLS attention maps, masks and (when the source has ground truth) Jaccard scores.

    Args:
        backbone: a ViT backbone (``pixels`` has no attention).
        source: the images.
        indices: which images, in report order.
        config: block, mass, resize, fit, batch size, device.
        score: compute Jaccard when ground truth exists.
        progress: called with the number of images done after each batch.
    """
    check_attention(backbone, config)
    model = backbone.to(config.device).model
    assert model is not None
    model.eval()
    depth = backbone.depth
    provider = mask_provider(source) if score else None
    p = backbone.patch_size
    resize = resolve_resize(backbone, config)
    images, targets, prep = prepare(source, indices, patch_size=p, resize=resize,
                                    fit=config.fit, provider=provider)
    maps, seconds = _extract(backbone, images, config, progress)
    masks = [attention_masks(a, p, mass=config.mass) for a in maps]
    jaccard = None
    if targets and all(t is not None for t in targets):
        jaccard = score_masks(masks, targets, mass=config.mass, block=config.block % depth)
    return AttentionRun(
        spec=backbone.spec, label=short_label(backbone.spec), arch=backbone.name,
        content_hash=backbone.content_hash, patch_size=p, num_heads=int(maps[0].shape[0]),
        block=config.block % depth, mass=config.mass, indices=np.asarray(indices),
        images=images, targets=targets, masks=masks, jaccard=jaccard, prep=prep,
        seconds=seconds, notes=list(backbone.notes),
        network=str(backbone.meta.get("network", "")),
        resolution=str(resize) if resize else "native")


def check_attention(backbone: Backbone, config: AttentionConfig) -> None:
    """Refuse a backbone without CLS attention maps (pixels, ResNet, ...) or a ``--block`` it
    does not have (one-line :class:`DinoevalError`)."""
    if backbone.kind != "vit" or backbone.model is None:
        raise DinoevalError(f"{backbone.spec} has no attention; pass a ViT checkpoint, "
                            "random:ARCH or timm:NAME")
    if backbone.adapter.no_attention:
        raise DinoevalError(f"{backbone.spec} has no attention maps "
                            f"({backbone.adapter.no_attention})")
    depth = backbone.depth
    if not -depth <= config.block < depth:
        raise DinoevalError(f"--block {config.block} out of range for {backbone.name} "
                            f"({depth} blocks: 0..{depth - 1}, or -1 for the last)")


def check_attention_backbones(backbones: Sequence[Callable[[], Backbone]],
                              config: AttentionConfig) -> None:
    """:func:`check_attention` for every backbone before any of them runs: with several, each
    is loaded (not run) and dropped again, so one without attention maps among them is named
    before minutes of work on the others."""
    if len(backbones) < 2:
        return  # run_attention checks it before its first forward pass
    for load in backbones:
        bb = load()
        check_attention(bb, config)
        del bb


def _extract(backbone: Backbone, images: list[np.ndarray], config: AttentionConfig,
             progress: Callable[[int], None] | None) -> tuple[list[np.ndarray], float]:
    """Per-image ``(heads, h, w)`` attention (images of one size are batched) and seconds."""
    in_chans = backbone.in_chans
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    out: list[np.ndarray | None] = [None] * len(images)
    start, done = time.perf_counter(), 0
    for group in by_shape.values():
        for b in range(0, len(group), config.batch_size):
            chunk = group[b:b + config.batch_size]
            x = _normalise([images[i] for i in chunk], backbone, in_chans).to(config.device)
            attn = backbone.cls_attention(x, config.block).cpu().numpy()
            for j, i in enumerate(chunk):
                out[i] = attn[j]
            done += len(chunk)
            if progress is not None:
                progress(done)
    return [a for a in out if a is not None], time.perf_counter() - start


def attention_frame(run: AttentionRun, source: ImageSource) -> pd.DataFrame:
    """The run's Jaccard rows as a results table (empty when there is no ground truth)."""
    if run.jaccard is None:
        return to_frame([], _context(run, source))
    return to_frame(run.jaccard.to_rows(), _context(run, source), seconds=run.seconds)


def _context(run: AttentionRun, source: ImageSource) -> Context:
    return Context(backbone=run.spec, ckpt_hash=run.content_hash, arch=run.arch,
                   dataset=source.name, split=source.split,
                   feature=f"attn:block{run.block}:mass{run.mass:g}", network=run.network,
                   resolution=run.resolution, data=source.spec, data_n=len(run.indices))


def image_captions(source: ImageSource, indices: Sequence[int]) -> list[str]:
    """``"#i · label"`` (or the file name) for each image, for report headings."""
    out = []
    for i in indices:
        if isinstance(source, FileListSource):
            out.append(source.paths[int(i)].name)
            continue
        y = int(source.labels[int(i)])
        name = source.classes[y] if 0 <= y < len(source.classes) else (str(y) if y >= 0 else "")
        out.append(f"{source.name} #{int(i)}" + (f" · {name}" if name else ""))
    return out


def run_attentions(backbones: Sequence[Callable[[], Backbone]], source: ImageSource,
                   indices: Sequence[int], config: AttentionConfig, *,
                   progress: ProgressFactory | None = None) -> list[AttentionRun]:
    """Run every backbone over the same images, one model in memory at a time.

    Args:
        backbones: loaders, called one at a time so only one model is in memory.
        source, indices: the images.
        config: attention settings.
        progress: ``factory(description, total) -> update(done)``.

    The runs are what :func:`~dinoeval.report.attention_page.write_attention_report` draws and
    :func:`attention_frame` turns into result rows.
    """
    if not len(indices):
        raise DinoevalError(f"{source.spec} has no images to show")
    check_attention_backbones(backbones, config)
    runs = []
    for load in backbones:
        bb = load()
        cb = progress(f"attention {bb.name} ({short_label(bb.spec)})", len(indices)) \
            if progress else None
        runs.append(run_attention(bb, source, indices, config, progress=cb))
        del bb
    return runs
