"""``dinoeval retrieval`` and ``dinoeval copy-detection``."""

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
    labelled_specs,
    print_results,
    progress_factory,
    say,
    user_errors,
    with_label,
    write_results,
)

KOpt = Annotated[list[int] | None, typer.Option(
    "--k", help="Cut-offs of mP@k and recall@k; repeat (default 1 5 10).")]
ApOpt = Annotated[str, typer.Option(
    "--ap", help="trapezoid (revisited Oxford/Paris, Copydays) or step (scikit-learn's).")]
MaxMemoryOpt = Annotated[str, typer.Option(
    help="Working memory of the exact search, e.g. 1GB; queries are ranked in blocks.")]
ShowOpt = Annotated[int, typer.Option(help="Queries whose top-5 hits go to --html.")]
HtmlOpt = Annotated[Path | None, typer.Option(
    help="Write the top hits of every backbone side by side to this .html file.")]


def retrieval(
    ckpt: CkptOpt,
    query: Annotated[str, typer.Option(
        help="Query data: roxford5k:query@DIR, rparis6k:query-full@DIR, or labelled data "
        "(e.g. imagefolder:PATH).")],
    gallery: Annotated[str | None, typer.Option(
        help="Gallery data. Default: a revisited benchmark's database, else the query data "
        "itself (each query then skips itself).")] = None,
    protocol: Annotated[list[str] | None, typer.Option(
        help="Revisited protocols: easy, medium, hard; repeat (default medium hard).")] = None,
    k: KOpt = None,
    multiscale: Annotated[bool, typer.Option(
        help="Average CLS over input sides s, s/sqrt2, s/2, then L2-normalise (DINO's option).")]
        = False,
    img_size: Annotated[int | None, typer.Option(
        help="Input side of ViTs (DINO uses 224). Default: the checkpoint's.")] = None,
    resize: Annotated[str, typer.Option(
        help="How images meet --img-size: long (aspect kept, longer side = size; DINO's "
        "script and the revisited protocol), short (aspect kept, shorter side = size) or "
        "square (whole image squashed). Pixels are always square.")] = "long",
    ap: ApOpt = "trapezoid",
    max_memory: MaxMemoryOpt = "1GB",
    show: ShowOpt = 8,
    html: HtmlOpt = None,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
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
    """Image retrieval: mAP, mP@k and recall@k of CLS features (DINO).

    Every query ranks the whole gallery by cosine similarity.
    Relevance: a revisited Oxford/Paris ground truth (easy, medium,
    hard; junk ignored) or labels (same class). Example:

      dinoeval retrieval -c dino.pth -c pixels --img-size 224
        --query roxford5k:query@data/roxford5k --out results.csv
    """
    from dinoeval.pipeline import ExtractOptions, save_config, specs
    from dinoeval.pipeline.retrieval import RetrievalConfig, resolve_retrieval_sources, run_retrieval
    from dinoeval.pipeline.setup import check_pixel_sizes
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=ckpt)
        eopts = ExtractOptions(feature="cls", batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images, cache_dir=cache_dir)
        cfg = RetrievalConfig(ks=tuple(k) if k else RetrievalConfig().ks,
                              protocols=tuple(protocol) if protocol else
                              RetrievalConfig().protocols, resize=resize,
                              multiscale=multiscale, ap_kind=ap,
                              max_memory=max_memory, show=show)
        check_out(out)
        _check_html(html)
        if multiscale and "pixels" in ckpt:
            from dinoeval.errors import DinoevalError

            raise DinoevalError("--multiscale needs ViT backbones; pixels have no scales (drop "
                                "--multiscale or the pixels --ckpt)")
        q_src, g_src, _, _ = resolve_retrieval_sources(query, gallery)
        check_pixel_sizes(ckpt, bopts, (q_src, g_src))
        runs, frames = [], []
        for spec in specs(ckpt):
            with progress_factory() as pf:
                run = run_retrieval(spec, q_src, g_src, backbone_opts=bopts, extract_opts=eopts,
                                    config=cfg, progress=pf)
            for note in run.notes:
                say(f"{labels.get(spec, spec)}: {note}", "dim")
            runs.append(run)
            frames.append(with_label(run.frame, labels.get(spec, "")))
            write_results(frames[-1], out)
        print_results(concat(frames), title="Retrieval")
        _write_html(html, runs, "Image retrieval", labels)
        if out is not None:
            save_config(out, backbone=bopts, extract=eopts, retrieval=cfg)


def copy_detection(
    ckpt: CkptOpt,
    data: Annotated[str | None, typer.Option(
        help="Make a procedural copy benchmark from this data (any data spec).")] = None,
    copydays: Annotated[Path | None, typer.Option(
        help="Or a Copydays folder (original/ and strong/).")] = None,
    distractors: Annotated[str | None, typer.Option(
        help="With --copydays: distractor images added to the database (a data spec).")]
        = None,
    whitening_data: Annotated[str | None, typer.Option(
        help="With --copydays: images to learn the whitening on (a data spec).")] = None,
    originals: Annotated[int, typer.Option(help="Procedural: images that get copied.")] = 100,
    n_distractors: Annotated[int, typer.Option(
        help="Procedural: database images nobody copied.")] = 400,
    n_whitening: Annotated[int, typer.Option(
        help="Procedural: separate images for the whitening (0: none).")] = 200,
    copies: Annotated[int, typer.Option(help="Procedural: strong copies per original.")] = 1,
    seed: Annotated[int, typer.Option(help="Procedural: the draw and the transforms.")] = 0,
    img_size: Annotated[int, typer.Option(
        help="Square input side of ViTs (DINO uses 320).")] = 320,
    whiten: Annotated[bool, typer.Option(help="PCA-whiten (learned on separate images).")]
        = True,
    whitening_power: Annotated[float, typer.Option(help="0.5 whitens fully, 0 rotates.")]
        = 0.5,
    k: KOpt = None,
    ap: ApOpt = "trapezoid",
    max_memory: MaxMemoryOpt = "1GB",
    show: ShowOpt = 8,
    html: HtmlOpt = None,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
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
    """Copy detection: mAP of finding each strong copy's original.

    Features: CLS + GeM(p=4) of the last block's patch tokens at a
    square input, PCA-whitened on separate images (DINO, Copydays).
    --data makes seeded strong copies (crops, rotations, JPEG, jitter,
    blur, text) of any images; --copydays reads the real benchmark.

      dinoeval copy-detection -c dino.pth -c pixels
        --data imagefolder:photos --out results.csv
    """
    from dinoeval.data import get_source
    from dinoeval.data.copies import copydays as read_copydays
    from dinoeval.data.copies import procedural_copies
    from dinoeval.errors import DinoevalError
    from dinoeval.pipeline import ExtractOptions, save_config, specs
    from dinoeval.pipeline.retrieval import CopyDetectionConfig, run_copy_detection
    from dinoeval.pipeline.setup import check_pixel_sizes
    from dinoeval.results import concat

    with user_errors():
        ckpt, labels = labelled_specs(ckpt)
        bopts = backbone_options(checkpoint_key, weights, None, num_heads, pixel_size, ckpts=ckpt)
        eopts = ExtractOptions(feature="cls", batch_size=batch_size, device=device,
                               num_workers=workers, precision=precision,
                               skip_bad_images=skip_bad_images, cache_dir=cache_dir)
        cfg = CopyDetectionConfig(img_size=img_size, whiten=whiten,
                                  whitening_power=whitening_power,
                                  ks=tuple(k) if k else CopyDetectionConfig().ks, ap_kind=ap,
                                  max_memory=max_memory, show=show)
        check_out(out)
        _check_html(html)
        if (data is None) == (copydays is None):
            raise DinoevalError("give exactly one of --data (procedural copies) or --copydays DIR")
        if data is not None:
            if distractors or whitening_data:
                raise DinoevalError("--distractors and --whitening-data go with --copydays; "
                                    "procedural copies take --n-distractors and --n-whitening")
            bench = procedural_copies(get_source(data), n_originals=originals,
                                      n_distractors=n_distractors, n_whitening=n_whitening,
                                      copies_per_original=copies, seed=seed)
        else:
            bench = read_copydays(
                copydays, distractors=get_source(distractors) if distractors else None,
                whitening=get_source(whitening_data) if whitening_data else None)
            if whiten and bench.whitening is None:
                console.print("[yellow]no --whitening-data: features are not whitened[/]")
        check_pixel_sizes(ckpt, bopts, (bench.queries, bench.database,
                                        bench.whitening if whiten else None))
        runs, frames = [], []
        for spec in specs(ckpt):
            with progress_factory() as pf:
                run = run_copy_detection(spec, bench, backbone_opts=bopts, extract_opts=eopts,
                                         config=cfg, progress=pf)
            for note in run.notes:
                say(f"{labels.get(spec, spec)}: {note}", "dim")
            runs.append(run)
            frames.append(with_label(run.frame, labels.get(spec, "")))
            write_results(frames[-1], out)
        print_results(concat(frames), title="Copy detection")
        _write_html(html, runs, "Copy detection", labels)
        if out is not None:
            save_config(out, backbone=bopts, extract=eopts, copy_detection=cfg)


def _check_html(html: Path | None) -> None:
    if html is None:
        return
    from dinoeval.checks import check_output_path
    from dinoeval.errors import DinoevalError

    if html.suffix != ".html":
        raise DinoevalError(f"--html {html} must end in .html")
    check_output_path(html)


def _write_html(html: Path | None, runs: list, title: str, labels: dict[str, str]) -> None:
    if html is None:
        return
    from dinoeval.report.retrieval import write_retrieval_report

    path = write_retrieval_report(runs, html, title=title,
                                  labels=[labels.get(r.backbone, r.backbone) for r in runs])
    say(path, lead="wrote ", lead_style="green")


def register(app: typer.Typer) -> None:
    app.command("retrieval")(retrieval)
    app.command("copy-detection")(copy_detection)
