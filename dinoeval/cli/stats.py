"""``dinoeval linear``, ``dinoeval clusters`` and ``dinoeval collapse-stats``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from dinoeval.cli._common import (
    BatchSizeOpt,
    CacheDirOpt,
    CheckpointKeyOpt,
    CkptOpt,
    DeviceOpt,
    FeatureOpt,
    ImgSizeOpt,
    NumHeadsOpt,
    OutOpt,
    PixelSizeOpt,
    PrecisionOpt,
    SkipBadOpt,
    WeightsOpt,
    WorkersOpt,
    backbone_options,
    check_out,
    console,
    print_results,
    progress_factory,
    user_errors,
    write_results,
)

SeedOpt = Annotated[int, typer.Option(help="Seed of every random choice (split, sampling).")]


def _run_all(ckpts: list[str], run: Callable, out, title: str, **configs: object) -> None:
    """Run ``run(spec, progress)`` for each backbone, saving each one's rows as they arrive."""
    from dinoeval.pipeline import save_config, specs
    from dinoeval.results import concat

    check_out(out)
    frames = []
    for spec in specs(ckpts):
        with progress_factory() as pf:
            result = run(spec, pf)
        for note in result.notes:
            console.print(f"[dim]{spec}: {note}[/]")
        frames.append(result.frame)
        write_results(result.frame, out)
    print_results(concat(frames), title=title)
    if out is not None:
        save_config(out, **configs)


def linear(
    ckpt: CkptOpt,
    train: Annotated[str, typer.Option(help="Train data (fit and select), e.g. "
                                            "fashion-mnist:train.")],
    val: Annotated[str, typer.Option(help="Test data (reported only), e.g. fashion-mnist:test.")],
    feature: FeatureOpt = "cls",
    mode: Annotated[str, typer.Option(help="grid: SGD heads over learning rates x weight decays "
                                           "(DINOv2); logreg: L-BFGS over C.")] = "grid",
    lr: Annotated[list[float] | None, typer.Option(
        "--lr", help="Learning rates (per 256 samples); repeat. Default: 13 from 1e-4 to 1.")]
        = None,
    wd: Annotated[list[float] | None, typer.Option(
        "--wd", help="Weight decays; repeat. Default: 0, 1e-4, 1e-3.")] = None,
    c: Annotated[list[float] | None, typer.Option(
        "--c", help="logreg inverse regularisation C; repeat. Default: 7 from 1e-4 to 1.")] = None,
    epochs: Annotated[int, typer.Option(help="SGD epochs over the cached features.")] = 10,
    val_fraction: Annotated[float, typer.Option(
        help="Share of each train class held out to pick the setting.")] = 0.1,
    seed: SeedOpt = 0,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
    img_size: ImgSizeOpt = None,
    num_heads: NumHeadsOpt = None,
    pixel_size: PixelSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "fp32",
    skip_bad_images: SkipBadOpt = False,
    cache_dir: CacheDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Linear-probe accuracy on cached features (DINOv2 protocol), one or more backbones.

    The setting (learning rate and weight decay, or C) is chosen on a held-out split of the
    TRAIN data, refit on all of it, and only then scored on --val. Example:

      dinoeval linear --ckpt runs/fm/checkpoint.pth --ckpt pixels
      --train fashion-mnist:train --val fashion-mnist:test --feature cls-last4
    """
    from dinoeval.eval.linear import LinearProbeConfig
    from dinoeval.pipeline import ExtractOptions
    from dinoeval.pipeline.linear import run_linear

    with user_errors():
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=ckpt)
        eopts = ExtractOptions(feature=feature, batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images, cache_dir=cache_dir)
        d = LinearProbeConfig()
        cfg = LinearProbeConfig(mode=mode, learning_rates=tuple(lr or d.learning_rates),
                                weight_decays=tuple(wd if wd is not None else d.weight_decays),
                                cs=tuple(c or d.cs), epochs=epochs, val_fraction=val_fraction,
                                seed=seed)
        cfg.validate()
        _run_all(ckpt, lambda spec, pf: run_linear(spec, train, val, backbone_opts=bopts,
                                                   extract_opts=eopts, config=cfg, progress=pf),
                 out, f"linear probe ({mode})", backbone=bopts, extract=eopts, linear=cfg)


def clusters(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(help="Labelled data to cluster, e.g. fashion-mnist:test.")],
    feature: FeatureOpt = "cls",
    k: Annotated[int | None, typer.Option(help="Clusters (default: number of classes).")] = None,
    seeds: Annotated[int, typer.Option(help="k-means runs (seeds 0..n-1); mean and std.")] = 3,
    spherical: Annotated[bool, typer.Option(help="Cosine k-means on L2-normalised features.")]
        = False,
    silhouette_samples: Annotated[int, typer.Option(
        help="Seeded sample size for the silhouette (0 skips it).")] = 10000,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
    img_size: ImgSizeOpt = None,
    num_heads: NumHeadsOpt = None,
    pixel_size: PixelSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "fp32",
    skip_bad_images: SkipBadOpt = False,
    cache_dir: CacheDirOpt = None,
    out: OutOpt = None,
) -> None:
    """k-means clustering of the features on all samples: NMI, ARI, matched accuracy, purity,
    silhouette. Example:

      dinoeval clusters --ckpt runs/fm/checkpoint.pth --data fashion-mnist:test --spherical
    """
    from dinoeval.errors import DinoevalError
    from dinoeval.pipeline import ExtractOptions
    from dinoeval.pipeline.clusters import ClusterConfig, run_clusters

    with user_errors():
        if seeds < 1:
            raise DinoevalError(f"--seeds must be >= 1, got {seeds}")
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=ckpt)
        eopts = ExtractOptions(feature=feature, batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images, cache_dir=cache_dir)
        cfg = ClusterConfig(k=k, seeds=tuple(range(seeds)), spherical=spherical,
                            silhouette_samples=silhouette_samples)
        _run_all(ckpt, lambda spec, pf: run_clusters(spec, data, backbone_opts=bopts,
                                                     extract_opts=eopts, config=cfg,
                                                     progress=pf),
                 out, "clustering", backbone=bopts, extract=eopts, clusters=cfg)


def collapse_stats(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(help="Data to measure on, e.g. fashion-mnist:train.")],
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", help="Backbone feature kinds; repeat to measure several (default cls): "
                          "cls | cls-last4 | cls+avgpool | cls+avgpool-v2.")] = None,
    head: Annotated[bool, typer.Option(
        help="Also measure the DINO head's bottleneck and prototypes when the checkpoint has "
             "them.")] = True,
    neural_collapse: Annotated[bool, typer.Option(
        help="NC1-NC4 (labelled data; NC3/NC4 train a linear probe on the data).")] = True,
    align_pairs: Annotated[int, typer.Option(
        help="Images seen under two random augmentations for the alignment (0 skips it).")]
        = 1000,
    teacher_temp: Annotated[float | None, typer.Option(
        help="Teacher temperature (default: the checkpoint's, else 0.04).")] = None,
    seed: SeedOpt = 0,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
    img_size: ImgSizeOpt = None,
    num_heads: NumHeadsOpt = None,
    pixel_size: PixelSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "fp32",
    skip_bad_images: SkipBadOpt = False,
    cache_dir: CacheDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Has the representation collapsed? SSL collapse (RankMe, alpha-ReQ, normalised std,
    alignment, uniformity, DINO teacher entropy and KL) and neural collapse (NC1-NC4), in one
    table; side by side with repeated --ckpt. Example:

      dinoeval collapse-stats --ckpt runs/fm/checkpoint.pth --ckpt random:vit_tiny_p4_28
      --data fashion-mnist:train
    """
    from dinoeval.pipeline import ExtractOptions
    from dinoeval.pipeline.collapse import CollapseConfig, run_collapse_stats_kinds

    with user_errors():
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=ckpt)
        kinds = list(dict.fromkeys(feature or ["cls"]))
        eopts = [ExtractOptions(feature=kind, batch_size=batch_size, device=device,
                                num_workers=workers, precision=precision,
                                skip_bad_images=skip_bad_images, cache_dir=cache_dir)
                 for kind in kinds]
        cfg = CollapseConfig(head=head, neural_collapse=neural_collapse, align_pairs=align_pairs,
                             teacher_temp=teacher_temp, seed=seed)
        _run_all(ckpt, lambda spec, pf: run_collapse_stats_kinds(
                     spec, data, backbone_opts=bopts, extract_opts=eopts, config=cfg,
                     progress=pf),
                 out, "collapse statistics", backbone=bopts, extract=eopts, collapse=cfg)


def register(app: typer.Typer) -> None:
    app.command("linear")(linear)
    app.command("clusters")(clusters)
    app.command("collapse-stats")(collapse_stats)
