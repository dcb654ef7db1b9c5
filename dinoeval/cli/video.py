"""``dinoeval video-seg`` and ``dinoeval dense``: evaluations of the patch tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    OutOpt,
    check_out,
    labelled_specs,
    print_results,
    progress_factory,
    say,
    user_errors,
    with_label,
    write_results,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline.dense import DenseConfig
from dinoeval.pipeline.setup import BackboneOptions
from dinoeval.pipeline.video_seg import VideoSegConfig

# The patch-token commands read neither timm weights nor a pixel size (the pixels baseline's
# patch is --pixel-patch); dense's --img-size is its config's (images resized, not the model's).
_BACKBONE = Group(BackboneOptions, skip=("weights", "img_size", "pixel_size"))


@with_options(config=VideoSegConfig, backbone=_BACKBONE)
def video_seg(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(
        help="Videos: moving-shapes, optionally @videos=4,frames=24,height=64,width=96,"
        "objects=3,seed=0; or davis:ROOT, optionally @set=val,res=480p,year=2017.")]
        = "moving-shapes",
    masks_dir: Annotated[Path | None, typer.Option(
        help="Write predicted masks here as <video>/<frame>.png palette PNGs (DAVIS layout; "
        "one subfolder per backbone when several --ckpt).")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write a page with one overlay strip per video (frames, ground truth, "
        "each backbone's masks).")] = None,
    out: OutOpt = None,
    *,
    config: VideoSegConfig,
    backbone: BackboneOptions,
) -> None:
    """Video object segmentation by label propagation (DINO's DAVIS protocol).

    The first frame's masks are propagated through the last-block patch
    features: each patch takes the labels of its top-k most similar patches
    (within --radius) of the first and the --n-last-frames previous frames.
    Scored with DAVIS J (region), F (boundary) and J&F. Example:

      dinoeval video-seg --ckpt ckpt.pth --ckpt pixels --data moving-shapes
    """
    from dinoeval.checks import check_output_dir, check_output_path
    from dinoeval.data.video import get_video_source
    from dinoeval.pipeline import save_config, specs
    from dinoeval.pipeline.video_seg import check_inputs, run_video_seg
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        backbone.check_specs(ckpt)
        bopts, cfg = backbone, config
        check_out(out)
        if masks_dir is not None:
            check_output_dir(masks_dir, "--masks-dir")
        if html is not None:
            check_output_path(html, "--html")
        dataset = get_video_source(data)
        backbones = [bopts.load(s) for s in specs(ckpt)]
        for backbone in backbones:  # every size and annotation checked before any work
            check_inputs(backbone, dataset, cfg)
        frames, runs = [], []
        for spec, backbone in zip(specs(ckpt), backbones, strict=True):
            name = labels.get(spec, spec)
            run_cfg = cfg if masks_dir is None else _with_masks(cfg, masks_dir, name, len(ckpt))
            with progress_factory() as pf:
                run = run_video_seg(backbone, dataset, config=run_cfg, progress=pf)
            for note in run.notes:
                say(f"{name}: {note}", "dim")
            frames.append(with_label(run.frame, labels.get(spec, "")))
            runs.append((name, run))
            write_results(frames[-1], out)
        df = concat(frames)
        print_results(df[df["param"] == ""], title="Video object segmentation (DAVIS J&F)")
        if html is not None:
            from dinoeval.report.video import write_video_report

            say(write_video_report(html, runs), lead="overlay strips -> ", lead_style="green")
        if out is not None:
            save_config(out, backbone=bopts, video_seg=cfg)


def _with_masks(cfg, masks_dir: Path, spec: str, n_ckpt: int):  # -> VideoSegConfig
    from dataclasses import replace

    folder = masks_dir if n_ckpt == 1 else masks_dir / _safe(spec)
    return replace(cfg, masks_dir=str(folder))


def _safe(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)[-80:]


@with_options(config=DenseConfig, backbone=_BACKBONE)
def dense(
    ckpt: CkptOpt,
    train: Annotated[str, typer.Option(
        help="Images with masks to fit on: shapes:train (optionally @n=,size=,...) or "
        "vocfolder:ROOT (optionally @split=train,classes=21).")]
        = "shapes:train@n=500",
    test: Annotated[str, typer.Option(
        help="Images with masks to score: shapes:test (optionally @n=,size=,...) or "
        "vocfolder:ROOT@split=val.")]
        = "shapes:test@n=200",
    out: OutOpt = None,
    *,
    config: DenseConfig,
    backbone: BackboneOptions,
) -> None:
    """Dense evaluations of frozen patch tokens (mIoU).

    A linear segmentation probe (DINOv2's protocol) and dense k-NN retrieval:
    every test patch is labelled from the train split's masks; scores are
    upsampled bilinearly to each test mask. Example:

      dinoeval dense --ckpt ckpt.pth --ckpt pixels --train shapes:train@n=500
      --test shapes:test@n=200
    """
    from dinoeval.data.segmentation import get_segmentation_source
    from dinoeval.pipeline import save_config, specs
    from dinoeval.pipeline.dense import check_inputs, run_dense
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        backbone.check_specs(ckpt)
        bopts, cfg = backbone, config
        check_out(out)
        tr, te = get_segmentation_source(train), get_segmentation_source(test)
        backbones = [bopts.load(s) for s in specs(ckpt)]
        for backbone in backbones:  # sizes and class sets checked before any work
            check_inputs(backbone, tr, te, cfg)
        frames = []
        for spec, backbone in zip(specs(ckpt), backbones, strict=True):
            with progress_factory() as pf:
                run = run_dense(backbone, tr, te, config=cfg, progress=pf)
            for note in run.notes:
                say(f"{labels.get(spec, spec)}: {note}", "dim")
            frames.append(with_label(run.frame, labels.get(spec, "")))
            write_results(frames[-1], out)
        df = concat(frames)
        print_results(df[df["metric"].isin(["mIoU", "pixel-acc"])], title="Dense evaluation")
        if out is not None:
            save_config(out, backbone=bopts, dense=cfg)


def register(app: typer.Typer) -> None:
    app.command("video-seg")(video_seg)
    app.command("dense")(dense)
