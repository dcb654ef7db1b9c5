"""``dinoeval attention``: CLS attention maps, masks, Jaccard, and the HTML comparison report."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    OutOpt,
    check_out,
    is_table_path,
    labelled_specs,
    print_results,
    progress_factory,
    renamed,
    say,
    user_errors,
    with_label,
    write_results,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline import AttentionConfig, BackboneOptions


@with_options(config=AttentionConfig, backbone=Group(BackboneOptions, skip=("pixel_size",)))
def attention(
    ckpt: CkptOpt,
    report_dir: Annotated[Path | None, typer.Option(
        help="Report folder to write: index.html (self-contained) and figures/*.png "
        "(required).", show_default=False)] = None,
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
    out: OutOpt = None,
    old_results: Annotated[Path | None, typer.Option("--results", hidden=True)] = None,
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
      --data fashion-mnist:test --n 32 --report-dir reports/attn --out results.csv

      dinoeval attention --ckpt A --images cat.jpg --images street.png
      --report-dir reports/attn
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
        ckpt, labels = labelled_specs(ckpt)
        backbone.check_specs(ckpt)
        results, report_dir = _tables_and_folder(out, old_results, report_dir)
        check_out(results)
        check_output_dir(report_dir, "--report-dir")
        source = FileListSource(images or []) if images else get_source(data or "")
        indices = list(range(min(n, len(source)))) if not images else list(range(len(source)))
        loaders = [functools.partial(backbone.load, s) for s in specs(ckpt)]
        try:
            with progress_factory() as pf:
                runs = run_attentions(loaders, source, indices, config, progress=pf)
            runs = [dataclasses.replace(r, label=labels[r.spec]) if r.spec in labels else r
                    for r in runs]  # the report's names; the run itself never saw the label
            drawn = indices[:show]
            html = write_attention_report(runs, [source.load(int(i)) for i in drawn], report_dir,
                                          captions=image_captions(source, drawn),
                                          data=source.spec, png_figures=png)
        except BadImageError as err:  # attention has no --skip-bad-images: say what to do here
            raise BadImageError(err.path, err.reason, hint="fix or delete it, or leave it out "
                                "of the images drawn") from None
        frame = concat([with_label(attention_frame(run, source), labels.get(run.spec, ""))
                        for run in runs])
        for run in runs:
            say(f"{run.label}: {run.prep}", "dim")
            for note in run.notes:
                say(f"{run.label}: {note}", lead="note: ", lead_style="yellow")
        if len(frame):
            shown = frame[frame["metric"] == "jaccard"]
            shown = shown[shown["param"].isin(["head=best", "head=mean"])]
            print_results(shown, title="Attention-mask Jaccard (mean over images)")
        else:
            say(f"{source.spec} has no ground truth: maps drawn, not scored", "yellow")
        write_results(frame, results)
        if results is not None:
            from dinoeval.pipeline import save_config

            save_config(results, backbone=backbone, attention=config, data=source.spec,
                        n=len(indices), report=str(html))
        say(f"{html} ({time.perf_counter() - start:.1f} s)", lead="report ", lead_style="green")


def _tables_and_folder(out: Path | None, old_results: Path | None,
                       report_dir: Path | None) -> tuple[Path | None, Path]:
    """``(results table, report folder)`` from ``--out``, ``--report-dir`` and the old spellings
    (``--results TABLE``; ``--out FOLDER``, a value that is not a .csv/.parquet table)."""
    from dinoeval.errors import DinoevalError

    if out is not None and not is_table_path(out):
        report_dir = renamed(report_dir, out, old="--out FOLDER", new="--report-dir")
        out = None
    out = renamed(out, old_results, old="--results", new="--out")
    if report_dir is None:
        raise DinoevalError("give --report-dir DIR: the folder the attention report goes to")
    return out, report_dir


def register(app: typer.Typer) -> None:
    app.command("attention")(attention)
