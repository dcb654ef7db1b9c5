"""``dinoeval video-seg`` and ``dinoeval dense``: evaluations of the patch tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CheckpointKeyOpt,
    CkptOpt,
    DeviceOpt,
    ImgSizeOpt,
    NumHeadsOpt,
    OutOpt,
    backbone_options,
    check_out,
    labelled_specs,
    print_results,
    progress_factory,
    say,
    user_errors,
    with_label,
    write_results,
)

PixelPatchOpt = Annotated[int, typer.Option(
    help="Patch side for the pixels backbone (its features are each patch's raw RGB values).")]


def video_seg(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(
        help="Videos: moving-shapes, optionally @videos=4,frames=24,height=64,width=96,"
        "objects=3,seed=0; or davis:ROOT, optionally @set=val,res=480p,year=2017.")]
        = "moving-shapes",
    n_last_frames: Annotated[int, typer.Option(
        help="Previous frames in the context besides the first.")] = 7,
    topk: Annotated[int, typer.Option(help="Sources kept per target patch.")] = 5,
    temperature: Annotated[float, typer.Option(help="Affinity exp(cosine/T).")] = 0.1,
    radius: Annotated[int, typer.Option(
        help="Neighbourhood half-width in patches (0: whole frame).")] = 12,
    short_side: Annotated[int | None, typer.Option(
        help="Resize frames to this short side (long side floored to --multiple). Default: 480 "
        "for DAVIS, native size for moving-shapes.")] = None,
    multiple: Annotated[int, typer.Option(help="Long-side rounding (DINO: 64).")] = 64,
    masks_dir: Annotated[Path | None, typer.Option(
        help="Write predicted masks here as <video>/<frame>.png palette PNGs (DAVIS layout; "
        "one subfolder per backbone when several --ckpt).")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write a page with one overlay strip per video (frames, ground truth, "
        "each backbone's masks).")] = None,
    pixel_patch: PixelPatchOpt = 8,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    num_heads: NumHeadsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Frames per forward pass.")] = 16,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
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
    from dinoeval.pipeline.video_seg import VideoSegConfig, check_inputs, run_video_seg
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        bopts = backbone_options(checkpoint_key, None, None, num_heads, None, ckpts=ckpt)
        cfg = VideoSegConfig(n_last_frames=n_last_frames, topk=topk, temperature=temperature,
                             radius=radius, short_side=short_side, multiple=multiple,
                             pixel_patch=pixel_patch, batch_size=batch_size, device=device)
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
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="linear and/or knn; repeat (default both).")] = None,
    targets: Annotated[str, typer.Option(
        help="Patch targets: majority (most covered class) or soft (area fractions).")]
        = "majority",
    k: Annotated[int, typer.Option(help="Dense k-NN: train patches per test patch.")] = 20,
    temperature: Annotated[float, typer.Option(help="Dense k-NN vote exp(cosine/T).")] = 0.07,
    max_bank: Annotated[int, typer.Option(
        help="Most train patches kept (seeded subsample beyond; memory 4*D bytes each).")]
        = 200_000,
    weight_decay: Annotated[float, typer.Option(help="Linear probe L2 penalty.")] = 1e-4,
    max_iter: Annotated[int, typer.Option(help="Linear probe L-BFGS iterations.")] = 200,
    img_size: ImgSizeOpt = None,
    pixel_patch: PixelPatchOpt = 8,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    num_heads: NumHeadsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
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
    from dinoeval.pipeline.dense import METHODS, DenseConfig, check_inputs, run_dense
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        bopts = backbone_options(checkpoint_key, None, None, num_heads, None, ckpts=ckpt)
        cfg = DenseConfig(methods=tuple(method) if method else METHODS, img_size=img_size,
                          targets=targets, k=k, temperature=temperature, max_bank=max_bank,
                          weight_decay=weight_decay, max_iter=max_iter, pixel_patch=pixel_patch,
                          batch_size=batch_size, device=device)
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
