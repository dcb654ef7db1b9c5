"""``video-seg`` runner: DAVIS-protocol label propagation of one backbone over a video dataset.

:func:`evaluate_video_seg` works on the patch features of one video in hand;
:func:`run_video_seg` resolves a backbone spec and a video spec, streams each video through the
backbone (every frame encoded once), propagates, writes the predicted masks as DAVIS palette PNGs
when asked, and scores them with :mod:`dinoeval.eval.davis`.
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

from dinoeval.checks import at_least, check_device, option
from dinoeval.data.video import Video, VideoDataset, get_video_source, write_palette_png
from dinoeval.errors import DinoevalError
from dinoeval.eval.davis import BOUND_TH, DavisResult, VideoScores, evaluate_video, summarize
from dinoeval.eval.video_seg import PropagationConfig, frame_size, propagate_video
from dinoeval.features.patches import check_grid_size, grid_patch_size, patch_grid, resize_rgb
from dinoeval.models import Backbone
from dinoeval.pipeline.setup import BackboneOptions, ProgressFactory, network_columns
from dinoeval.results import Context, to_frame

log = logging.getLogger(__name__)

STRIP_FRAMES = 6  # frames per video kept for the report's overlay strip


@dataclass(frozen=True, kw_only=True)
class VideoSegConfig:
    """``video-seg`` settings; propagation defaults are DINO's ``eval_video_segmentation.py``.

    Attributes:
        n_last_frames, topk, temperature, radius: see :class:`PropagationConfig`.
        short_side: frames are resized so that their short side is this many pixels and the long
            side is floored to a multiple of ``multiple`` (DINO: 480 and 64); ``None``: DAVIS
            480, procedural videos at their own size (floored to the patch size).
        multiple: the long side's rounding.
        bound_th: F's boundary tolerance (fraction of the diagonal, DAVIS 0.008).
        pixel_patch: patch side of the ``pixels`` baseline.
        batch_size: frames per forward pass.
        device: torch device for the backbone.
        masks_dir: write predictions here as ``<video>/<frame>.png`` palette PNGs (DAVIS layout).
    """

    n_last_frames: int = option(7, help="Previous frames in the context besides the first.")
    topk: int = option(5, help="Sources kept per target patch.")
    temperature: float = option(0.1, help="Affinity exp(cosine/T).")
    radius: int = option(12, help="Neighbourhood half-width in patches (0: whole frame).")
    short_side: int | None = option(
        None, help="Resize frames to this short side (long side floored to --multiple). Default: "
        "480 for DAVIS, native size for moving-shapes.")
    multiple: int = option(64, help="Long-side rounding (DINO: 64).")
    bound_th: float = BOUND_TH
    pixel_patch: int = option(
        8, help="Patch side for the pixels backbone (its features are each patch's raw RGB "
        "values).")
    batch_size: int = option(16, help="Frames per forward pass.")
    device: str = option("cpu", help="cpu, cuda, cuda:1, ...")
    masks_dir: str | None = None

    def __post_init__(self) -> None:
        self.propagation()  # validates the propagation settings
        if self.short_side is not None:
            at_least("--short-side", self.short_side, 1)
        at_least("--multiple", self.multiple, 1)
        at_least("--pixel-patch", self.pixel_patch, 1)
        at_least("--batch-size", self.batch_size, 1)
        if not self.bound_th > 0:
            raise DinoevalError(f"--bound-th must be > 0, got {self.bound_th}")
        check_device(self.device)

    def propagation(self) -> PropagationConfig:
        return PropagationConfig(n_last_frames=self.n_last_frames, topk=self.topk,
                                 temperature=self.temperature, radius=self.radius)


def input_size(video: Video, dataset: VideoDataset, config: VideoSegConfig, patch: int
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(original (H, W), network input (H', W'))`` of ``video``'s frames, checked against the
    patch size (a one-line error before any work)."""
    h, w = video.load_frame(0).shape[:2]
    if config.short_side is None and dataset.native_size:
        size = (h // patch * patch, w // patch * patch)
    else:
        size = frame_size(h, w, config.short_side or 480, config.multiple)
    check_grid_size(size, patch, f"video {video.name}")
    return (h, w), size


def check_inputs(backbone: Backbone, dataset: VideoDataset, config: VideoSegConfig
                 ) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Every video's ``(original, input)`` size for ``backbone`` and first-frame annotation,
    checked before any frame is encoded (one-line :class:`DinoevalError` otherwise)."""
    patch = grid_patch_size(backbone, config.pixel_patch)
    sizes = {v.name: input_size(v, dataset, config, patch) for v in dataset.videos}
    for v in dataset.videos:
        v.first_mask()
    return sizes


def video_features(backbone: Backbone, video: Video, size: tuple[int, int],
                   config: VideoSegConfig, progress: Callable[[int], None] | None = None
                   ) -> list[torch.Tensor]:
    """``T`` ``(h, w, D)`` patch grids of the video's frames, each frame encoded once."""
    feats: list[torch.Tensor] = []
    for s in range(0, len(video), config.batch_size):
        frames = [resize_rgb(video.load_frame(t), size)
                  for t in range(s, min(len(video), s + config.batch_size))]
        feats.extend(patch_grid(backbone, frames, pixel_patch=config.pixel_patch,
                                device=config.device).unbind(0))
        if progress:
            progress(len(feats))
    return feats


def evaluate_video_seg(features: Sequence[torch.Tensor], first_mask: np.ndarray,
                       num_objects: int, patch: int, out_hw: tuple[int, int],
                       config: VideoSegConfig) -> list[np.ndarray]:
    """Predicted ``(H, W)`` uint8 label maps of one video from its features in hand."""
    first = np.where(first_mask == 255, 0, first_mask).astype(np.uint8)
    return propagate_video(features, first, num_objects + 1, patch, out_hw, config.propagation())


@dataclass
class VideoSegRun:
    """What :func:`run_video_seg` produced for one backbone.

    Attributes:
        frame: the result rows (empty when no video has full annotations).
        result: the DAVIS summary, ``None`` when nothing could be scored.
        strips: video name -> ``(frames (S, H, W, 3), gt (S, H, W) or None, pred (S, H, W))`` for
            ``S`` evenly spaced frames (the report's overlay strip).
        palettes: video name -> ``(256, 3)`` palette.
        notes: what was skipped.
    """

    frame: pd.DataFrame
    result: DavisResult | None
    strips: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = field(repr=False)
    palettes: dict[str, np.ndarray] = field(repr=False)
    notes: list[str] = field(default_factory=list)


def run_video_seg(ckpt: str | Backbone, data: str | VideoDataset, *,
                  backbone_opts: BackboneOptions = BackboneOptions(),
                  config: VideoSegConfig = VideoSegConfig(),
                  progress: ProgressFactory | None = None) -> VideoSegRun:
    """Propagate and score every video of ``data`` with the backbone ``ckpt`` (a spec or a
    loaded :class:`Backbone`); see the module docstring.

    Raises:
        DinoevalError: bad data spec, a frame size the patch grid does not tile, or a video whose
            first frame has no annotation (all checked before the first video is encoded).
    """
    t0 = time.perf_counter()
    dataset = get_video_source(data) if isinstance(data, str) else data
    backbone = backbone_opts.load(ckpt) if isinstance(ckpt, str) else ckpt
    patch = grid_patch_size(backbone, config.pixel_patch)
    sizes = check_inputs(backbone, dataset, config)
    firsts = {v.name: v.first_mask() for v in dataset.videos}
    scores: list[VideoScores] = []
    strips: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}
    notes: list[str] = list(backbone.notes)
    for video in dataset.videos:
        (h, w), size = sizes[video.name]
        cb = progress(f"{backbone.name}: {video.name}", len(video)) if progress else None
        feats = video_features(backbone, video, size, config, cb)
        preds = evaluate_video_seg(feats, firsts[video.name], video.num_objects, patch, (h, w),
                                   config)
        del feats
        if config.masks_dir is not None:
            for name, pred in zip(video.frame_names, preds, strict=True):
                write_palette_png(Path(config.masks_dir) / video.name / f"{name}.png", pred,
                                  video.palette)
        gts = [video.load_mask(t) for t in range(len(video))]
        keep = np.unique(np.linspace(0, len(video) - 1, STRIP_FRAMES).round().astype(int))
        has_gt = all(g is not None for g in gts)
        strips[video.name] = (np.stack([video.load_frame(t) for t in keep]),
                              np.stack([gts[t] for t in keep]) if has_gt else None,  # type: ignore[misc]
                              np.stack([preds[t] for t in keep]))
        if not has_gt:
            notes.append(f"{video.name}: not every frame is annotated; masks written, not scored")
            continue
        scores.append(evaluate_video(np.stack(gts), np.stack(preds), name=video.name,  # type: ignore[arg-type]
                                     num_objects=video.num_objects, bound_th=config.bound_th))
    result = summarize(scores) if scores and sum(s.num_objects for s in scores) else None
    ctx = Context(backbone=backbone.spec, ckpt_hash=backbone.content_hash, arch=backbone.name,
                  dataset=dataset.name, split=_split(dataset.spec),
                  feature="pixels" if backbone.kind == "pixels" else "patch",
                  **_video_columns(backbone, sizes), data=dataset.spec,
                  data_n=len(dataset.videos))
    rows = result.to_rows() if result is not None else []
    frame = to_frame(rows, ctx, seconds=time.perf_counter() - t0)
    return VideoSegRun(frame=frame, result=result, strips=strips,
                       palettes={v.name: v.palette for v in dataset.videos}, notes=notes)


def _video_columns(backbone: Backbone, sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]]
                   ) -> dict[str, str]:
    """network/resolution columns: the frames' input size (when every video has one size)."""
    inputs = {size for _, size in sizes.values()}
    cols = network_columns(backbone, next(iter(inputs)) if len(inputs) == 1 else None)
    if len(inputs) > 1:
        cols["resolution"] = "per-video"
    return cols


def _split(spec: str) -> str:
    for part in spec.partition("@")[2].split(","):
        if part.startswith("set="):
            return part[4:]
    return "all"
