"""``dinoeval retrieval`` and ``dinoeval copy-detection``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    OutOpt,
    check_out,
    console,
    labelled_specs,
    run_each,
    say,
    user_errors,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline.retrieval import CopyDetectionConfig, RetrievalConfig
from dinoeval.pipeline.setup import BackboneOptions, ExtractOptions

HtmlOpt = Annotated[Path | None, typer.Option(
    help="Write the top hits of every backbone side by side to this .html file.")]
# Both commands rank CLS-based features (the feature kind is theirs) and size their inputs
# themselves: retrieval with its own --img-size, copy detection with its config's.
_BACKBONE = Group(BackboneOptions, skip=("img_size",))
_EXTRACT = Group(ExtractOptions, skip=("feature",))


@with_options(config=RetrievalConfig, backbone=_BACKBONE, extract=_EXTRACT)
def retrieval(
    ckpt: CkptOpt,
    query: Annotated[str, typer.Option(
        help="Query data: roxford5k:query@DIR, rparis6k:query-full@DIR, or labelled data "
        "(e.g. imagefolder:PATH).")],
    gallery: Annotated[str | None, typer.Option(
        help="Gallery data. Default: a revisited benchmark's database, else the query data "
        "itself (each query then skips itself).")] = None,
    img_size: Annotated[str | None, typer.Option(
        help="Input side N of ViTs (DINO uses 224); --resize says how images meet it. "
        "Default: the checkpoint's.", metavar="N")] = None,
    html: HtmlOpt = None,
    out: OutOpt = None,
    *,
    config: RetrievalConfig,
    backbone: BackboneOptions,
    extract: ExtractOptions,
) -> None:
    """Image retrieval: mAP, mP@k and recall@k of CLS features (DINO).

    Every query ranks the whole gallery by cosine similarity.
    Relevance: a revisited Oxford/Paris ground truth (easy, medium,
    hard; junk ignored) or labels (same class). Example:

      dinoeval retrieval -c dino.pth -c pixels --img-size 224
        --query roxford5k:query@data/roxford5k --out results.csv
    """
    from dinoeval.checks import parse_img_size
    from dinoeval.errors import DinoevalError
    from dinoeval.pipeline.retrieval import SQUARE_ONLY, resolve_retrieval_sources, run_retrieval

    with user_errors():
        side = parse_img_size(img_size, square_only=SQUARE_ONLY)
        bopts = dataclasses.replace(backbone, img_size=side)
        check_out(out)  # before the sources and the copy benchmark are built
        _check_html(html)
        if config.multiscale and "pixels" in ckpt:
            raise DinoevalError("--multiscale needs ViT backbones; pixels have no scales (drop "
                                "--multiscale or the pixels --ckpt)")
        q_src, g_src, _, _ = resolve_retrieval_sources(query, gallery)
    runs = run_each(ckpt, out, "Retrieval",
                    lambda spec, pf: run_retrieval(spec, q_src, g_src, backbone_opts=bopts,
                                                   extract_opts=extract, config=config,
                                                   progress=pf),
                    data=(q_src, g_src), backbone=bopts, extract=extract, retrieval=config)
    _write_html(html, runs, "Image retrieval", labelled_specs(ckpt)[1])


@with_options(config=CopyDetectionConfig, backbone=_BACKBONE, extract=_EXTRACT)
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
    html: HtmlOpt = None,
    out: OutOpt = None,
    *,
    config: CopyDetectionConfig,
    backbone: BackboneOptions,
    extract: ExtractOptions,
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
    from dinoeval.pipeline.retrieval import run_copy_detection

    with user_errors():
        check_out(out)  # before the sources and the copy benchmark are built
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
            if config.whiten and bench.whitening is None:
                console.print("[yellow]no --whitening-data: features are not whitened[/]")
    runs = run_each(ckpt, out, "Copy detection",
                    lambda spec, pf: run_copy_detection(spec, bench, backbone_opts=backbone,
                                                        extract_opts=extract, config=config,
                                                        progress=pf),
                    data=(bench.queries, bench.database,
                          bench.whitening if config.whiten else None),
                    backbone=backbone, extract=extract, copy_detection=config)
    _write_html(html, runs, "Copy detection", labelled_specs(ckpt)[1])


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

    with user_errors():
        path = write_retrieval_report(runs, html, title=title,
                                      labels=[labels.get(r.backbone, r.backbone) for r in runs])
    say(path, lead="wrote ", lead_style="green")


def register(app: typer.Typer) -> None:
    app.command("retrieval")(retrieval)
    app.command("copy-detection")(copy_detection)
