"""``dinoeval attention``: CLS attention maps, masks, Jaccard, and the HTML comparison report."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    check_out,
    console,
    print_results,
    progress_factory,
    user_errors,
    write_results,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline import AttentionConfig, BackboneOptions


@with_options(config=AttentionConfig, backbone=Group(BackboneOptions, skip=("pixel_size",)))
def attention(
    ckpt: CkptOpt,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Report folder: index.html (self-contained) and figures/*.png.")],
    data: Annotated[str | None, typer.Option(
        help="Image source, e.g. fashion-mnist:test or shapes:test (scored when it has ground "
        "truth).")] = None,
    images: Annotated[list[Path] | None, typer.Option(
        "--images", help="Image files of any size (no ground truth: drawn, not scored). "
        "Repeat the option or list several files after it.")] = None,
    n: Annotated[int, typer.Option(
        "--n", help="How many images of --data to score (the first N).")] = 16,
    show: Annotated[int, typer.Option(
        help="How many of them to draw in the report (the first ones).")] = 16,
    results: Annotated[Path | None, typer.Option(
        help="Append the Jaccard rows to this .csv or .parquet results table.")] = None,
    png: Annotated[bool, typer.Option(help="Also write the figures as PNG files.")] = True,
    more_images: Annotated[list[Path] | None, typer.Argument(
        metavar="[FILE]...", help="More image files after --images FILE.",
        show_default=False)] = None,
    *, config: AttentionConfig, backbone: BackboneOptions,
) -> None:
    """Last-block CLS attention per head, DINO mass-threshold masks and their Jaccard, side by
    side for several checkpoints in one self-contained HTML page.

    Examples:

      dinoeval attention --ckpt runs/fm/checkpoint.pth --ckpt random:vit_tiny_p4_28
      --data fashion-mnist:test --n 32 --out reports/attn

      dinoeval attention --ckpt A --images cat.jpg --images street.png --out reports/attn
    """
    import time

    from dinoeval.checks import check_output_dir
    from dinoeval.data import BadImageError, get_source
    from dinoeval.data.files import FileListSource
    from dinoeval.errors import DinoevalError
    from dinoeval.pipeline import specs
    from dinoeval.pipeline.attention import attention_frame, image_captions, run_attentions
    from dinoeval.report.attention_page import write_attention_report
    from dinoeval.results import concat

    with user_errors():
        start = time.perf_counter()
        if more_images and not images:
            raise DinoevalError(f"unexpected argument {more_images[0]}; image files go after "
                                "--images")
        images = [*(images or []), *(more_images or [])]
        if (data is None) == (not images):
            raise DinoevalError("pass exactly one of --data SPEC or --images FILE ...")
        if n <= 0 or show < 0:
            raise DinoevalError(f"--n must be positive and --show >= 0, got {n} and {show}")
        backbone.check_specs(ckpt)
        check_out(results)
        check_output_dir(out)
        source = FileListSource(images or []) if images else get_source(data or "")
        indices = list(range(min(n, len(source)))) if not images else list(range(len(source)))
        loaders = [functools.partial(backbone.load, s) for s in specs(ckpt)]
        try:
            with progress_factory() as pf:
                runs = run_attentions(loaders, source, indices, config, progress=pf)
            drawn = indices[:show]
            html = write_attention_report(runs, [source.load(int(i)) for i in drawn], out,
                                          captions=image_captions(source, drawn),
                                          data=source.spec, png_figures=png)
        except BadImageError as err:  # attention has no --skip-bad-images: say what to do here
            raise BadImageError(err.path, err.reason, hint="fix or delete it, or leave it out "
                                "of the images drawn") from None
        frame = concat([attention_frame(run, source) for run in runs])
        for run in runs:
            console.print(f"[dim]{run.label}: {run.prep}[/]", highlight=False)
            for note in run.notes:
                console.print(f"[yellow]note:[/] {run.label}: {note}", highlight=False)
        if len(frame):
            shown = frame[frame["metric"] == "jaccard"]
            shown = shown[shown["param"].isin(["head=best", "head=mean"])]
            print_results(shown, title="Attention-mask Jaccard (mean over images)")
        else:
            console.print(f"[yellow]{source.spec} has no ground truth: maps drawn, not scored[/]")
        write_results(frame, results)
        if results is not None:
            from dinoeval.pipeline import save_config

            save_config(results, backbone=backbone, attention=config, data=source.spec,
                        n=len(indices), report=str(html))
        console.print(f"[green]report[/] {html} "
                      f"[dim]({time.perf_counter() - start:.1f} s)[/]")


def register(app: typer.Typer) -> None:
    app.command("attention")(attention)
