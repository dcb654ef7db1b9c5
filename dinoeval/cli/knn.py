"""``dinoeval knn`` and ``dinoeval extract``."""

from __future__ import annotations

from pathlib import Path
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


def knn(
    ckpt: CkptOpt,
    train: Annotated[str, typer.Option(help="Train (bank) data, e.g. fashion-mnist:train.")],
    val: Annotated[str, typer.Option(help="Evaluation data, e.g. fashion-mnist:test.")],
    k: Annotated[list[int] | None, typer.Option(
        "--k", help="Neighbour counts; repeat (default 10 20 100 200). One search serves all.")]
        = None,
    temperature: Annotated[float, typer.Option(help="Vote weight exp(sim/T).")] = 0.07,
    feature: FeatureOpt = "cls",
    per_class: Annotated[bool, typer.Option(help="Also report per-class recall.")] = False,
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
    """Weighted k-NN accuracy (DINO protocol) of one or more backbones.

    Features are L2-normalised CLS tokens; each of the k nearest train images votes for its
    class with weight exp(cosine/T). Example:

      dinoeval knn --ckpt runs/fm/checkpoint.pth --ckpt random:vit_tiny_p4_28 --ckpt pixels
      --train fashion-mnist:train --val fashion-mnist:test --out results.csv
    """
    from dinoeval.pipeline import ExtractOptions, KnnConfig, run_knn, save_config, specs
    from dinoeval.results import concat

    with user_errors():
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=ckpt)
        eopts = ExtractOptions(feature=feature, batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images, cache_dir=cache_dir)
        cfg = KnnConfig(ks=tuple(k) if k else KnnConfig().ks, temperature=temperature,
                        per_class=per_class)
        check_out(out)
        frames = []
        for spec in specs(ckpt):
            with progress_factory() as pf:
                run = run_knn(spec, train, val, backbone_opts=bopts, extract_opts=eopts,
                              config=cfg, progress=pf)
            for note in run.notes:
                console.print(f"[dim]{spec}: {note}[/]")
            frames.append(run.frame)
            write_results(run.frame, out)  # each backbone's rows are saved as soon as they exist
        df = concat(frames)
        print_results(df, title="k-NN accuracy")
        if out is not None:
            save_config(out, backbone=bopts, extract=eopts, knn=cfg)


def extract(
    ckpt: Annotated[str, typer.Option("--ckpt", "-c", help="Backbone spec (see dinoeval --help).")],
    data: Annotated[str, typer.Option(help="Data spec, e.g. imagefolder:/data/train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature cache directory.")],
    feature: FeatureOpt = "cls",
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
) -> None:
    """Extract features to disk (features.npy, labels.npy, indices.npy, meta.json).

    The directory is a feature cache: pass it as --cache-dir to knn/linear/collapse-stats and
    they reuse the features when the checkpoint, data and settings match.
    """
    from dinoeval.checks import check_output_dir
    from dinoeval.pipeline import ExtractOptions, run_extract

    with user_errors():
        check_output_dir(out)
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=[ckpt])
        eopts = ExtractOptions(feature=feature, batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images)
        with progress_factory() as pf:
            fs, path = run_extract(ckpt, data, out, backbone_opts=bopts, extract_opts=eopts,
                                   progress=pf)
        skipped = fs.meta.get("skipped", 0)
        console.print(f"[green]{len(fs)} x {tuple(fs.features.shape[1:])} features[/] -> {path}"
                      + (f" [yellow](skipped {skipped} unreadable images)[/]" if skipped else ""))


def register(app: typer.Typer) -> None:
    app.command("knn")(knn)
    app.command("extract")(extract)
