"""``dinoeval knn`` and ``dinoeval extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    CkptOpt,
    OutOpt,
    check_out,
    parse_ckpt,
    progress_factory,
    run_each,
    say,
    user_errors,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.pipeline import BackboneOptions, ExtractOptions, KnnConfig

OneCkptOpt = Annotated[str, typer.Option(
    "--ckpt", "-c", help="Backbone spec (see dinoeval --help); NAME=SPEC accepted as in the "
    "evaluation commands (the name is not part of the cache entry).")]
CacheDirOutOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Feature cache folder to write (required).", show_default=False)]
OldCacheOutOpt = Annotated[Path | None, typer.Option("--out", "-o", hidden=True)]


def cache_dir_given(cache_dir: Path | None, old_out: Path | None) -> Path:
    """``--cache-dir`` (or its old spelling ``--out``), which extract commands require."""
    from dinoeval.cli._common import renamed
    from dinoeval.errors import DinoevalError

    value = renamed(cache_dir, old_out, old="--out", new="--cache-dir")
    if value is None:
        raise DinoevalError("give --cache-dir DIR: the feature cache folder to write")
    return value


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
             data=(train, val), backbone=backbone, extract=extract, knn=config)


@with_options(extract=Group(ExtractOptions, skip=("cache_dir",)), backbone=BackboneOptions)
def extract(
    ckpt: OneCkptOpt,
    data: Annotated[str, typer.Option(help="Data spec, e.g. imagefolder:/data/train.")],
    cache_dir: CacheDirOutOpt = None,
    old_out: OldCacheOutOpt = None,
    *, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """Extract features to disk (features.npy, labels.npy, indices.npy, meta.json).

    The --cache-dir folder is a feature cache: pass it as --cache-dir to knn, linear or
    collapse-stats and they reuse the features when the checkpoint, data and settings match.
    Example:

      dinoeval extract --ckpt runs/fm/checkpoint.pth --data fashion-mnist:train
      --cache-dir feats/
    """
    from dinoeval.checks import check_output_dir
    from dinoeval.pipeline import run_extract

    with user_errors():
        out = cache_dir_given(cache_dir, old_out)
        check_output_dir(out, "--cache-dir")
        label, ckpt = parse_ckpt(ckpt)  # a label names the backbone, never the cache entry
        backbone.check_specs([ckpt])
        with progress_factory() as pf:
            fs, path = run_extract(ckpt, data, out, backbone_opts=backbone, extract_opts=extract,
                                   progress=pf)
        skipped = fs.meta.get("skipped", 0)
        say(f" -> {path}" + (f" (skipped {skipped} unreadable images)" if skipped else ""),
            lead=f"{label + ': ' if label else ''}{len(fs)} x {tuple(fs.features.shape[1:])} "
            "features", lead_style="green")


def register(app: typer.Typer) -> None:
    app.command("knn")(knn)
    app.command("extract")(extract)


_ = check_out
