"""``dense`` runner: linear segmentation probe and dense k-NN retrieval of one backbone.

:func:`evaluate_dense` works on patch grids in hand; :func:`run_dense` resolves a backbone and two
masked sources (:mod:`dinoeval.data.segmentation`), encodes every image once at the chosen size,
and returns the mIoU rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dinoeval.checks import (
    at_least,
    check_device,
    one_of,
    option,
    parse_img_size,
    positive,
)
from dinoeval.data.segmentation import MaskedImages, get_segmentation_source
from dinoeval.errors import DinoevalError
from dinoeval.eval.dense import DenseResult, dense_knn, linear_segmentation
from dinoeval.features.patches import check_grid_size, grid_patch_size, patch_grid, resize_rgb
from dinoeval.models import Backbone
from dinoeval.pipeline.setup import BackboneOptions, ProgressFactory, network_columns
from dinoeval.results import Context, to_frame

METHODS = ("linear", "knn")


@dataclass(frozen=True, kw_only=True)
class DenseConfig:
    """``dense`` settings.

    Attributes:
        methods: ``linear`` and/or ``knn``.
        img_size: images are resized (no crop) to this side ``N`` or ``(H, W)`` (``"HxW"`` is
            parsed), floored to the patch size; ``None``: the source's native size when all
            images share one, else 448.
        targets: patch targets, ``majority`` or ``soft``.
        k, temperature, max_bank: dense k-NN (k nearest train patches, vote ``exp(sim/T)``, at
            most ``max_bank`` train patches kept).
        weight_decay, max_iter: the linear probe's L2 penalty and L-BFGS iterations.
        pixel_patch: patch side of the ``pixels`` baseline.
        batch_size, device, seed: encoding batch, torch device, subsampling seed.
    """

    methods: tuple[str, ...] = option(METHODS, help="linear and/or knn.", flag="--method")
    targets: str = option(
        "majority", help="Patch targets: majority (most covered class) or soft (area fractions).")
    k: int = option(20, help="Dense k-NN: train patches per test patch.")
    temperature: float = option(0.07, help="Dense k-NN vote exp(cosine/T).")
    max_bank: int = option(
        200_000, help="Most train patches kept (seeded subsample beyond; memory 4*D bytes each).")
    weight_decay: float = option(1e-4, help="Linear probe L2 penalty.")
    max_iter: int = option(200, help="Linear probe L-BFGS iterations.")
    img_size: int | tuple[int, int] | None = option(
        None, help="Images resized (no crop) to N or HxW, floored to the patch size. Default: "
        "the images' own size when they all share one, else 448.",
        cli=(str | None, parse_img_size, None), metavar="N|HxW")
    pixel_patch: int = option(
        8, help="Patch side for the pixels backbone (its features are each patch's raw RGB "
        "values).")
    batch_size: int = option(64, help="Images per forward pass.")
    device: str = option("cpu", help="cpu, cuda, cuda:1, ...")
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.methods:
            raise DinoevalError("give at least one --method (linear, knn)")
        for m in self.methods:
            one_of("--method", m, METHODS)
        one_of("--targets", self.targets, ("majority", "soft"))
        object.__setattr__(self, "img_size", parse_img_size(self.img_size))
        at_least("--k", self.k, 1)
        positive("--temperature", self.temperature)
        at_least("--max-bank", self.max_bank, 1)
        at_least("--max-iter", self.max_iter, 1)
        if self.weight_decay < 0:
            raise DinoevalError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        at_least("--pixel-patch", self.pixel_patch, 1)
        at_least("--batch-size", self.batch_size, 1)
        check_device(self.device)


def evaluate_dense(train_feats: np.ndarray, train_masks: Sequence[np.ndarray],
                   test_feats: np.ndarray, test_masks: Sequence[np.ndarray], num_classes: int,
                   config: DenseConfig) -> list[DenseResult]:
    """Every configured dense evaluation on ``(N, h, w, D)`` patch grids in hand."""
    out = []
    for method in config.methods:
        if method == "linear":
            out.append(linear_segmentation(
                train_feats, train_masks, test_feats, test_masks, num_classes,
                targets=config.targets, weight_decay=config.weight_decay,
                max_iter=config.max_iter, max_train_patches=config.max_bank, seed=config.seed))
        else:
            out.append(dense_knn(train_feats, train_masks, test_feats, test_masks, num_classes,
                                 k=config.k, temperature=config.temperature,
                                 max_bank=config.max_bank, targets=config.targets,
                                 seed=config.seed))
    return out


def input_side(data: MaskedImages, config: DenseConfig, patch: int) -> tuple[int, int]:
    """The network input size: ``img_size`` (or the native/448 default) floored to ``patch``."""
    if isinstance(config.img_size, tuple):
        side = config.img_size
    elif config.img_size is not None:
        side = (config.img_size, config.img_size)
    elif data.native_size is not None:
        side = data.native_size
    else:
        side = (448, 448)
    size = (side[0] // patch * patch, side[1] // patch * patch)
    check_grid_size(size, patch, data.spec)
    return size


def encode(backbone: Backbone, data: MaskedImages, size: tuple[int, int], config: DenseConfig,
           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``(N, h, w, D)`` float32 patch grids of every image of ``data`` at ``size``."""
    chunks = []
    done = 0
    for s in range(0, data.size, config.batch_size):
        imgs = [resize_rgb(_rgb(data.load(i)), size)
                for i in range(s, min(data.size, s + config.batch_size))]
        chunks.append(patch_grid(backbone, imgs, pixel_patch=config.pixel_patch,
                                 device=config.device).numpy())
        done += len(imgs)
        if progress:
            progress(done)
    return np.concatenate(chunks)


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]


@dataclass
class DenseRun:
    """What :func:`run_dense` produced for one backbone."""

    frame: pd.DataFrame
    results: list[DenseResult]
    notes: list[str] = field(default_factory=list)


def check_inputs(backbone: Backbone, train: MaskedImages, test: MaskedImages,
                 config: DenseConfig) -> tuple[int, int]:
    """The input size for ``backbone``, checked (with the class sets) before any encoding."""
    if train.num_classes != test.num_classes:
        raise DinoevalError(f"train and test sources have {train.num_classes} and "
                            f"{test.num_classes} classes; use the same class set")
    patch = grid_patch_size(backbone, config.pixel_patch)
    input_side(test, config, patch)
    return input_side(train, config, patch)


def run_dense(ckpt: str | Backbone, train: str | MaskedImages, test: str | MaskedImages, *,
              backbone_opts: BackboneOptions = BackboneOptions(),
              config: DenseConfig = DenseConfig(),
              progress: ProgressFactory | None = None) -> DenseRun:
    """Dense evaluations of the backbone ``ckpt`` (a spec or loaded), fitted on ``train``'s
    masks and scored on ``test``'s.

    Raises:
        DinoevalError: bad specs, sources whose class counts differ, a size the patch grid does
            not tile (before any encoding).
    """
    t0 = time.perf_counter()
    tr = get_segmentation_source(train) if isinstance(train, str) else train
    te = get_segmentation_source(test) if isinstance(test, str) else test
    backbone = backbone_opts.load(ckpt) if isinstance(ckpt, str) else ckpt
    size = check_inputs(backbone, tr, te, config)
    feats = []
    for src in (tr, te):
        cb = progress(f"{backbone.name} on {src.spec}", src.size) if progress else None
        feats.append(encode(backbone, src, size, config, cb))
    results = evaluate_dense(feats[0], [tr.mask(i) for i in range(tr.size)], feats[1],
                             [te.mask(i) for i in range(te.size)], tr.num_classes, config)
    ctx = Context(backbone=backbone.spec, ckpt_hash=backbone.content_hash, arch=backbone.name,
                  dataset=te.name, split=te.split,
                  feature="pixels" if backbone.kind == "pixels" else "patch",
                  **network_columns(backbone, size), train_data=tr.spec, train_n=tr.size,
                  data=te.spec, data_n=te.size)
    rows = [r for res in results for r in res.to_rows(te.class_names)]
    return DenseRun(frame=to_frame(rows, ctx, seconds=time.perf_counter() - t0),
                    results=results, notes=list(backbone.notes))
