"""``dinoeval knn`` and ``dinoeval extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    OutOpt,
    check_out,
    console,
    progress_factory,
    run_each,
    user_errors,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline import BackboneOptions, ExtractOptions, KnnConfig

TrainOpt = Annotated[str, typer.Option(help="Train (bank) data, e.g. fashion-mnist:train.")]
ValOpt = Annotated[str, typer.Option(help="Evaluation data, e.g. fashion-mnist:test.")]


@with_options(config=KnnConfig, extract=ExtractOptions, backbone=BackboneOptions)
def knn(ckpt: CkptOpt, train: TrainOpt, val: ValOpt, out: OutOpt = None, *,
        config: KnnConfig, extract: ExtractOptions, backbone: BackboneOptions) -> None:
    """Weighted k-NN accuracy (DINO protocol) of one or more backbones.

    Features are L2-normalised CLS tokens; each of the k nearest train images votes for its
    class with weight exp(cosine/T). Example:

      dinoeval knn --ckpt runs/fm/checkpoint.pth --ckpt random:vit_tiny_p4_28 --ckpt pixels
      --train fashion-mnist:train --val fashion-mnist:test --out results.csv
    """
    from dinoeval.pipeline import run_knn

    run_each(ckpt, out, "k-NN accuracy",
             lambda spec, pf: run_knn(spec, train, val, backbone_opts=backbone,
                                      extract_opts=extract, config=config, progress=pf),
             backbone=backbone, extract=extract, knn=config)


@with_options(extract=Group(ExtractOptions, skip=("cache_dir",)), backbone=BackboneOptions)
def extract(
    ckpt: Annotated[str, typer.Option("--ckpt", "-c", help="Backbone spec (see dinoeval --help).")],
    data: Annotated[str, typer.Option(help="Data spec, e.g. imagefolder:/data/train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature cache directory.")],
    *, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """Extract features to disk (features.npy, labels.npy, indices.npy, meta.json).

    The directory is a feature cache: pass it as --cache-dir to knn/linear/collapse-stats and
    they reuse the features when the checkpoint, data and settings match.
    """
    from dinoeval.checks import check_output_dir
    from dinoeval.pipeline import run_extract

    with user_errors():
        check_output_dir(out)
        backbone.check_specs([ckpt])
        with progress_factory() as pf:
            fs, path = run_extract(ckpt, data, out, backbone_opts=backbone, extract_opts=extract,
                                   progress=pf)
        skipped = fs.meta.get("skipped", 0)
        console.print(f"[green]{len(fs)} x {tuple(fs.features.shape[1:])} features[/] -> {path}"
                      + (f" [yellow](skipped {skipped} unreadable images)[/]" if skipped else ""))


def register(app: typer.Typer) -> None:
    app.command("knn")(knn)
    app.command("extract")(extract)


_ = check_out
