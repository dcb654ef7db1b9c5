"""The collapse-stats runner: SSL-collapse and neural-collapse statistics of one backbone.

:func:`evaluate_collapse` and :func:`evaluate_neural_collapse` measure features already in hand
(what the demo shares); :func:`run_collapse_stats` resolves a backbone spec and a data spec,
extracts (or reads cached) features, calls the pure cores of :mod:`dinoeval.eval` and returns a
:class:`~dinoeval.pipeline.setup.Run` whose ``frame`` is a results table (:mod:`dinoeval.results`).

``collapse-stats`` looks in several places (the ``feature`` column of its rows says which):

* ``<kind>`` — the backbone features (``cls``, ``cls-last4``, ...; the alignment uses DINO's two
  global augmentations of a seeded sample of the images);
* ``head-bottleneck`` — the DINO head's L2-normalised bottleneck of the CLS token, when the
  checkpoint carries the head;
* ``head-prototypes`` — the K-way prototype output: DINO's collapse monitors (teacher entropy,
  ``KL(teacher ‖ student)`` when the checkpoint also holds the student) and the teacher's argmax
  prototype as a clustering of the data (NMI/ARI/accuracy against the labels, prototypes used).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from dinoeval.checks import option
from dinoeval.data import ImageSource
from dinoeval.errors import DinoevalError
from dinoeval.eval._moments import Moments, accumulate
from dinoeval.eval._validation import check_labels
from dinoeval.eval.clusters import cluster_agreement
from dinoeval.eval.collapse import (
    CollapseStats,
    DinoHeadAccumulator,
    alignment,
    collapse_stats_from_moments,
    uniformity,
)
from dinoeval.eval.linear import LinearProbeConfig, LinearProbeResult, linear_probe
from dinoeval.eval.neural_collapse import NeuralCollapseStats, nc4, neural_collapse_from_moments
from dinoeval.features import FeatureSet
from dinoeval.models import Backbone
from dinoeval.pipeline.linear import probe_progress
from dinoeval.pipeline.setup import (
    BackboneOptions,
    ExtractOptions,
    ProgressFactory,
    Run,
    as_source,
    context_for,
    get_features,
    labelled,
)
from dinoeval.pipeline.setup import notes as notes_of
from dinoeval.results import Context, Row, concat, to_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CollapseConfig:
    """collapse-stats settings.

    Attributes:
        head: also look at the DINO head (bottleneck and prototypes) when the checkpoint has one.
        neural_collapse: NC1–NC4 (NC3/NC4 use a linear probe trained on the data). ``None``:
            when the data is labelled with 2 or more classes (else skipped, with a note);
            ``True``: required (unlabelled or single-class data refused before any work);
            ``False``: off.
        probe: the probe behind NC3/NC4 (its accuracy is not reported here: use ``linear``).
        align_pairs: images seen under two random augmentations for the alignment (0: skip).
        uniformity_samples: rows behind the uniformity (seeded sample).
        teacher_temp, student_temp: τ_t, τ_s (default: the checkpoint's ``teacher_temp`` or 0.04;
            0.1).
        head_batch: rows per head forward pass.
        seed: sampling and augmentation seed.
    """

    head: bool = option(True, help="Also measure the DINO head's bottleneck and prototypes "
                        "when the checkpoint has them.")
    neural_collapse: bool | None = option(
        None, help="NC1-NC4 (NC3/NC4 train a linear probe on the data). Default: when the data "
        "has labels of 2+ classes; --neural-collapse requires them.")
    probe: LinearProbeConfig = field(default_factory=lambda: LinearProbeConfig(epochs=5))
    align_pairs: int = option(
        1000, help="Images seen under two random augmentations for the alignment (0 skips it).")
    uniformity_samples: int = 4096
    teacher_temp: float | None = option(
        None, help="Teacher temperature (default: the checkpoint's, else 0.04).")
    student_temp: float = 0.1
    head_batch: int = 1024
    seed: int = option(0, help="Seed of every random choice (split, sampling).")

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise DinoevalError(f"--seed must be >= 0, got {self.seed}")
        if self.align_pairs < 0:
            raise DinoevalError(f"--align-pairs must be >= 0, got {self.align_pairs}")
        if self.teacher_temp is not None and self.teacher_temp <= 0:
            raise DinoevalError(f"--teacher-temp must be > 0, got {self.teacher_temp}")
        if self.student_temp <= 0:
            raise DinoevalError(f"student_temp must be > 0, got {self.student_temp}")
        if self.head_batch < 1 or self.uniformity_samples < 2:
            raise DinoevalError("head_batch must be >= 1 and uniformity_samples >= 2")


def augmented_pair_features(backbone: Backbone, source: ImageSource, indices: np.ndarray,
                            kind: str, *, seed: int, batch_size: int = 128,
                            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Features of two random augmentations of each image ``indices`` of ``source``.

    The augmentations are DINO's two global views (:class:`pretrain.augment.MultiCrop`: random
    resized crop of scale 0.4–1 with flips, colour jitter, grayscale, blur, solarisation), at
    the backbone's input size, seeded by ``seed``.

    Returns:
        ``(view1 (P, D), view2 (P, D))`` float32, row i of each from the same image.
    """
    from dinoeval.features import forward_features
    from pretrain.augment import MultiCrop

    size = (backbone.img_size or source.native_size or (224, 224))[0]
    pixels = backbone.kind == "pixels"
    crops = MultiCrop(global_size=size, local_size=size, local_number=0,
                      mean=(0.0, 0.0, 0.0) if pixels else backbone.mean,
                      std=(1.0, 1.0, 1.0) if pixels else backbone.std)
    gen = torch.Generator().manual_seed(seed)
    step = batch_size if source.native_size is not None else 1  # stack only equal sizes
    if backbone.model is not None:
        backbone.model.to(device)
    out: list[np.ndarray] = [], []
    for s in range(0, len(indices), step):
        imgs = torch.as_tensor(np.stack([source.load(int(i)) for i in indices[s : s + step]]))
        views, _ = crops(imgs, gen)
        f = forward_features(backbone, views.to(device), kind,
                             grayscale=source.grayscale).float().cpu().numpy()
        out[0].append(f[: len(imgs)])
        out[1].append(f[len(imgs) :])
    return np.concatenate(out[0]), np.concatenate(out[1])


def _head_pass(head: torch.nn.Module, cls_features: np.ndarray, *, batch: int, device: str,
               monitor: DinoHeadAccumulator | None = None,
               student: tuple[torch.nn.Module, np.ndarray] | None = None) -> np.ndarray:
    """``(N, bottleneck)`` float32 bottleneck of CLS features, in batches.

    With ``monitor``, the teacher logits of each batch (and the student head's logits of the
    student's CLS features, when ``student`` is given) are streamed into it, so ``(N, K)`` logits
    never exist in memory.
    """
    head = head.to(device).eval()
    if student is not None:
        student[0].to(device).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(cls_features), batch):
            x = torch.as_tensor(np.asarray(cls_features[s : s + batch], dtype=np.float32),
                                device=device)
            z = head.bottleneck(x)
            if monitor is not None:
                ls = None
                if student is not None:
                    xs = torch.as_tensor(np.asarray(student[1][s : s + batch], dtype=np.float32),
                                         device=device)
                    ls = student[0](xs).cpu()
                monitor.update(head.last_layer(z).cpu(), ls)
            out.append(z.float().cpu().numpy())
    return np.concatenate(out)


def _collapse_from(m: Moments, x: np.ndarray, views: tuple[np.ndarray, np.ndarray] | None,
                   cfg: CollapseConfig) -> CollapseStats:
    base = collapse_stats_from_moments(m)
    return replace(base, alignment=alignment(*views) if views is not None else None,
                   uniformity=uniformity(x, max_samples=cfg.uniformity_samples, seed=cfg.seed),
                   n_pairs=None if views is None else len(views[0]),
                   n_uniformity=min(len(x), cfg.uniformity_samples))


def _neural_from(m: Moments, x: np.ndarray, labels: np.ndarray, cfg: CollapseConfig,
                 probe: LinearProbeResult | None, on_epoch: Callable[[int], None] | None = None
                 ) -> tuple[NeuralCollapseStats, LinearProbeResult]:
    if probe is None:  # only W is used
        probe = linear_probe(x, labels, x, labels, config=cfg.probe, on_epoch=on_epoch)
    ncs = neural_collapse_from_moments(m, weight=probe.weight)
    dis, ncc = nc4(x, m.class_means, probe.weight, probe.bias, labels)
    return replace(ncs, nc4=dis, ncc_accuracy=ncc), probe


def evaluate_collapse(fs: FeatureSet, config: CollapseConfig = CollapseConfig(), *,
                      views: tuple[np.ndarray, np.ndarray] | None = None) -> CollapseStats:
    """SSL-collapse statistics of features in hand: RankMe, α-ReQ, normalised std, uniformity
    (``config.uniformity_samples`` rows, ``config.seed``) and, given two ``(P, D)`` views of the
    same images, the alignment."""
    return _collapse_from(accumulate(fs.features), fs.features, views, config)


def evaluate_neural_collapse(fs: FeatureSet, config: CollapseConfig = CollapseConfig(), *,
                             probe: LinearProbeResult | None = None,
                             num_classes: int | None = None) -> NeuralCollapseStats:
    """NC1–NC4 of labelled features in hand (:mod:`dinoeval.eval.neural_collapse`).

    Args:
        fs: ``(N, D)`` features with labels in ``[0, C)``, every class present.
        config: ``config.probe`` is trained on ``fs`` for NC3/NC4 when ``probe`` is not given.
        probe: a linear probe already trained on these features (its ``weight (C, D)`` and
            ``bias (C,)`` are used).
        num_classes: C (default: the largest label + 1).
    """
    labels = labelled(fs, "neural collapse")
    _, c = check_labels(labels, len(fs), num_classes)
    m = accumulate(fs.features, labels, num_classes=c)
    return _neural_from(m, fs.features, labels, config, probe)[0]


def _feature_stats(x: np.ndarray, labels: np.ndarray | None, views: tuple | None,
                   cfg: CollapseConfig, notes: list[str], progress: ProgressFactory | None = None,
                   what: str = "features") -> list[Row]:
    """Collapse (and, with labels, neural-collapse) rows of one ``(N, D)`` view, from one pass
    over the features. ``progress``: a task over the phases (moments, collapse statistics,
    NC1-NC4) and one over the NC3/NC4 probe's epochs or fits."""
    n_cls = int(labels.max()) + 1 if labels is not None else None
    nc = labels is not None and cfg.neural_collapse is not False
    phase = (progress(f"{what}: collapse statistics (phases)", 3 if nc else 2)
             if progress is not None else (lambda _: None))
    m = accumulate(x, labels if nc else None, num_classes=n_cls if nc else None)
    phase(1)
    rows = _collapse_from(m, x, views, cfg).to_rows()
    phase(2)
    if not nc:
        return rows
    ncs, probe = _neural_from(m, x, labels, cfg, None,
                              probe_progress(progress, cfg.probe, f"{what}: NC3/NC4 probe"))
    phase(3)
    notes.append(f"NC3/NC4 use a {cfg.probe.mode} linear probe trained on the same data "
                 f"({probe.chosen_text})")
    return rows + ncs.to_rows()


def check_collapse_labels(src: ImageSource, config: CollapseConfig) -> str | None:
    """What the source's labels allow for neural collapse, known before any image is read.

    Returns:
        a note when NC1–NC4 will be skipped (unlabelled, partly unlabelled or single-class
        data, and ``config.neural_collapse`` left at ``None``), else ``None``.

    Raises:
        DinoevalError: ``config.neural_collapse`` is ``True`` and the data cannot give it.
    """
    if config.neural_collapse is False:
        return None
    y = np.asarray(src.labels)
    known = y[y >= 0]
    if len(known) == len(y) and len(np.unique(known)) >= 2:
        return None
    why = ("has no labels" if not len(known) else "is partly unlabelled" if len(known) < len(y)
           else "holds a single class")
    if config.neural_collapse:
        raise DinoevalError(f"needs labels: neural collapse (--neural-collapse) on {src.spec}, "
                            f"which {why}; use data labelled with 2 or more classes, or "
                            "--no-neural-collapse")
    return f"{src.spec} {why}: neural-collapse statistics skipped"


def _with_feature(ctx: Context, feature: str) -> Context:
    return replace(ctx, feature=feature)


def run_collapse_stats(ckpt: str, data: str | ImageSource, *,
                       backbone_opts: BackboneOptions = BackboneOptions(),
                       extract_opts: ExtractOptions = ExtractOptions(),
                       config: CollapseConfig = CollapseConfig(),
                       progress: ProgressFactory | None = None) -> Run:
    """SSL-collapse and neural-collapse statistics of one backbone on ``data`` (module docstring)."""
    t0 = time.perf_counter()
    src = as_source(data)
    skip_note = check_collapse_labels(src, config)  # before any work
    backbone = backbone_opts.load(ckpt)
    size = backbone.img_size
    if config.align_pairs > 0 and size is not None and size[0] != size[1]:
        raise DinoevalError(f"the alignment's augmented views are square (DINO's global crops) "
                            f"and --img-size {size[0]}x{size[1]} is not: pass one number, or "
                            "--align-pairs 0")
    fs = get_features(backbone, src, extract_opts, progress)
    labels = fs.labels if (fs.labels >= 0).all() and len(np.unique(fs.labels)) >= 2 else None
    notes = notes_of(backbone, (fs, src))
    if config.neural_collapse is False:
        pass
    elif skip_note is not None:
        notes.append(skip_note)
    elif labels is None:  # skipped unreadable images left a single class
        if config.neural_collapse:
            raise DinoevalError(f"needs labels: neural collapse on {src.spec}: the readable "
                                "images hold a single class")
        notes.append("the readable images hold a single class: neural-collapse statistics "
                     "skipped")
    elif len(np.unique(labels)) != int(labels.max()) + 1:
        labels = np.unique(labels, return_inverse=True)[1]
        notes.append("labels absent from the data were dropped (classes renumbered)")

    pair_idx = None
    if config.align_pairs > 0:
        rng = np.random.default_rng(config.seed)
        pair_idx = np.sort(rng.choice(fs.indices, min(len(fs), config.align_pairs),
                                      replace=False))  # readable images only

    def views(opts: ExtractOptions) -> tuple[np.ndarray, np.ndarray] | None:
        if pair_idx is None:
            return None
        return augmented_pair_features(backbone, src, pair_idx, opts.feature, seed=config.seed,
                                       batch_size=opts.batch_size, device=opts.device)

    ctx = context_for(backbone, src, extract_opts.feature)
    frames = [to_frame(_feature_stats(fs.features, labels, views(extract_opts), config, notes,
                                      progress, extract_opts.feature),
                       ctx)]
    results: dict[str, Any] = {"features": fs}

    if config.head and backbone.head is not None:
        notes.append("the checkpoint's DINO head is measured too (head-bottleneck, "
                     "head-prototypes); --no-head to skip it")
        frames += _head_views(backbone, src, fs, labels, ckpt, backbone_opts, extract_opts,
                              config, ctx, views, notes, progress, results)
    elif config.head and backbone.kind == "vit":
        notes.append("no DINO head in this checkpoint: head views skipped")
    frame = concat(frames)
    frame["seconds"] = time.perf_counter() - t0
    return Run(frame=frame, results=results, notes=list(dict.fromkeys(notes)))


def run_collapse_stats_kinds(ckpt: str, data: str | ImageSource, *,
                             backbone_opts: BackboneOptions = BackboneOptions(),
                             extract_opts: list[ExtractOptions] | tuple[ExtractOptions, ...] = (
                                 ExtractOptions(),),
                             config: CollapseConfig = CollapseConfig(),
                             progress: ProgressFactory | None = None) -> Run:
    """:func:`run_collapse_stats` for several backbone feature kinds in one table; the head
    views (which always start from the CLS token) are measured once, with the first kind."""
    runs = [run_collapse_stats(ckpt, data, backbone_opts=backbone_opts, extract_opts=opts,
                               config=config if i == 0 else replace(config, head=False),
                               progress=progress)
            for i, opts in enumerate(extract_opts)]
    return Run(frame=concat([r.frame for r in runs]),
                    results={opts.feature: r.results for opts, r in zip(extract_opts, runs,
                                                                          strict=True)},
                    notes=list(dict.fromkeys(n for r in runs for n in r.notes)))


def _head_views(backbone: Backbone, src: ImageSource, fs: FeatureSet, labels: np.ndarray | None,
                ckpt: str, backbone_opts: BackboneOptions, extract_opts: ExtractOptions,
                cfg: CollapseConfig, ctx: Context, views: Callable, notes: list[str],
                progress: ProgressFactory | None, results: dict[str, Any]) -> list[pd.DataFrame]:
    """The head's bottleneck view and the prototype (DINO monitor) view."""
    cls_opts = replace(extract_opts, feature="cls")
    cls = fs if extract_opts.feature == "cls" else get_features(backbone, src, cls_opts, progress)
    center = backbone.center if backbone.center is not None else None
    k = backbone.head.last_layer.weight_v.shape[0]
    if center is None:
        notes.append("the checkpoint has no DINO center: teacher probabilities are uncentred")
        center = np.zeros(k)
    tt = (cfg.teacher_temp if cfg.teacher_temp is not None
          else float(backbone.meta.get("teacher_temp", 0.04)))
    monitor = DinoHeadAccumulator(center, teacher_temp=tt, student_temp=cfg.student_temp)
    student = _student(ckpt, backbone, src, backbone_opts, cls_opts, notes, progress)
    bottleneck = _head_pass(backbone.head, cls.features, batch=cfg.head_batch,
                            device=extract_opts.device, monitor=monitor, student=student)
    pair_views = views(cls_opts)
    if pair_views is not None:
        pair_views = tuple(_head_pass(backbone.head, v, batch=cfg.head_batch,
                                      device=extract_opts.device) for v in pair_views)
    out = [to_frame(_feature_stats(bottleneck, labels, pair_views, cfg, notes, progress,
                                   "head-bottleneck"),
                    _with_feature(ctx, "head-bottleneck"))]
    head = monitor.result()
    rows = head.to_rows()
    if labels is not None:
        agree = cluster_agreement(labels, head.assignments)
        p = f"K={head.num_prototypes},argmax"
        rows += [Row("dino_prototypes", name, getattr(agree, name), p, head.n)
                 for name in ("nmi", "ari", "accuracy", "purity")]
    results["dino_head"] = head
    out.append(to_frame(rows, _with_feature(ctx, "head-prototypes")))
    return out


def _student(ckpt: str, teacher: Backbone, src: ImageSource, backbone_opts: BackboneOptions,
             cls_opts: ExtractOptions, notes: list[str], progress: ProgressFactory | None
             ) -> tuple[torch.nn.Module, np.ndarray] | None:
    """The student's head and its CLS features on ``src``, when the checkpoint holds both
    networks (a DINO training checkpoint) and the teacher is the one being evaluated."""
    if teacher.meta.get("format") not in ("dino-train", "dinoeval-pretrain"):
        return None
    if backbone_opts.checkpoint_key != "teacher":
        notes.append("no KL(teacher||student): evaluating the student (--checkpoint-key)")
        return None
    try:
        student = replace(backbone_opts, checkpoint_key="student").load(ckpt)
    except DinoevalError as err:
        notes.append(f"no KL(teacher||student): {err}")
        return None
    if student.head is None:
        notes.append("no KL(teacher||student): the student has no head")
        return None
    return student.head, get_features(student, src, cls_opts, progress).features
